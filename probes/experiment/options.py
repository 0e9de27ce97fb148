"""The one table of configuration options: for each config key that the command line can set, its flag, type, help
and the commands that take it.

`cli.py` declares its options from this table, and `probes.experiment.config` names the flags in its messages
from it (a value given on the command line is named by its flag, "--gamma0", one from a config file by its key,
"[param] gamma0 in run.toml"). `probes.grid.manifest` names them in a store's refusal too. `tests/test_options.py`
checks that every entry is an option of its commands and that each config command's options are all in the table
or in NOT_CONFIG, so the table and the CLI cannot drift apart.

A config file's keys are the dataclasses' fields (`probes.experiment.config.SECTION_KEYS`); some have no flag
(e.g. [model] ffn_mult, [optim] eps0, [probes] n_points) and are set in a file only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONFIG_COMMANDS", "GROUPS", "NOT_CONFIG", "OPTIONS", "Option", "flag_of", "option", "shared_options"]

# The commands that build a RunConfig (`probes.experiment.config.make_run_config`), and the option groups (config
# sections) each of them takes in full.
CONFIG_COMMANDS = ("run", "solve", "describe", "sweep", "coord")
GROUPS: dict[str, tuple[str, ...]] = {
    "run": ("model", "param", "optim", "run"),
    "solve": ("model", "param", "optim", "run"),
    "describe": ("model", "param", "optim"),
    "sweep": ("model", "param", "optim", "run"),
    "coord": ("model", "param", "optim", "run"),
}


@dataclass(frozen=True)
class Option:
    """One config key the command line sets. section, key: where it lands ([section] key of a config file);
    flag: the option as messages name it; type: its Python type on the command line; help: its help text;
    commands: the commands that declare it themselves (with their own default or help), or None for a shared option,
    which every command of GROUPS taking its section gets; () for a key only named in messages (set through
    another flag). decl: the typer declaration when it is not the flag ("--probes/--no-probes")."""

    section: str
    key: str
    flag: str
    type: type
    help: str
    commands: tuple[str, ...] | None = None
    decl: str | None = None

    @property
    def name(self) -> str:
        """The parameter name of a shared option in a command's signature (the flag without dashes)."""
        return self.flag.lstrip("-").replace("-", "_")


_ALL = ("run", "solve", "describe", "sweep", "coord")
OPTIONS: tuple[Option, ...] = (
    # model
    Option("model", "N", "--N", int, "key/query dimension per head (default 16)"),
    Option("model", "H", "--H", int, "heads of a full-width layer (default 4)"),
    Option("model", "L", "--L", int, "depth, number of blocks (default 2)"),
    Option(
        "model",
        "task",
        "--task",
        str,
        "lm (byte-level stdlib corpus or a token .bin), vision (synthetic, CIFAR-10 "
        "or CIFAR-5M via --data) or digits (scikit-learn's 8x8 digits, offline) (default lm)",
    ),
    Option("model", "lws", "--lws", str, "layer-wise profile: isotropic, openelm, vanilla, framed, reverse, crown"),
    Option("model", "seq_len", "--seq-len", int, "tokens per LM sample (default 64)"),
    Option(
        "model",
        "preset",
        "--model-preset",
        str,
        "a model preset: openelm-270m (OpenELM-270M's per-layer shapes), "
        "openelm-small (the same at CPU size); explicit options override it",
    ),
    Option(
        "model",
        "variant",
        "--variant",
        str,
        "block variant: paper, openelm, ngpt, laurel, tokenformer (default paper; docs/variants.md)",
    ),
    Option(
        "model",
        "laurel",
        "--laurel",
        str,
        "LAUREL form with --variant laurel: rw, lr, pa, rw+lr, rw+pa, lr+pa, rw+lr+pa (default rw+lr+pa)",
    ),
    Option(
        "model",
        "kv_group",
        "--kv-group",
        int,
        "GQA group size, query heads per KV head (default: the variant's; openelm 2)",
    ),
    Option("model", "axis", "--axis", str, "the scaling axis that --scale sets: N, H or L (default N)", _ALL),
    Option("model", "d_model", "--d-model", int, "residual width; must equal N*H (a check)", ("run",)),
    # param
    Option("param", "preset", "--param", str, "parametrization preset: mup, mup-sqrt, depth-sqrt, sp (default mup)"),
    Option("param", "alpha_A", "--alpha-A", float, "attention exponent, A = N^-alpha_A q.k (overrides the preset)"),
    Option(
        "param",
        "alpha_L",
        "--alpha-L",
        float,
        "residual exponent, branches beta0 (L/L0)^-alpha_L (overrides the preset)",
    ),
    Option("param", "beta0", "--beta0", float, "residual branch constant beta0 (default 1)"),
    Option("param", "gamma0", "--gamma0", float, "feature-learning strength gamma0 (default 1)"),
    Option("param", "L0", "--L0", float, "reference depth of the depth factors L/L0 (default 1)"),
    Option("param", "centre", "--centre", str, "how f(theta_0) is removed: copy, zero_readout, none (default copy)"),
    # optim
    Option("optim", "name", "--optimizer", str, "sgd, sgd-momentum, adam, adamw (default adam)"),
    Option("optim", "eta0", "--eta0", float, "base learning rate before the Table 1 rule (default 0.05)"),
    Option(
        "optim",
        "weight_decay",
        "--weight-decay",
        float,
        "decay per step is eta0 * weight_decay (sgd, adamw) (default 0)",
    ),
    # run
    Option("run", "batch_size", "--batch-size", int, "samples per step (default 32)"),
    Option("run", "device", "--device", str, "cpu, cuda, cuda:N or auto (default cpu)"),
    Option("run", "data_path", "--data", str, "local data: CIFAR-10 folder, CIFAR-5M .npz, or token .bin"),
    Option("run", "precision", "--precision", str, "fp32 (default, every theory check), tf32 (CUDA) or bf16 autocast"),
    Option(
        "run", "compile", "--compile", bool, "torch.compile the training step (probe pass stays eager) (default off)"
    ),
    Option(
        "run",
        "patch",
        "--patch",
        int,
        "image patch side in pixels (default: digits 2, vision 4; the whole image gives one token)",
    ),
    Option(
        "run",
        "train_size",
        "--train-size",
        int,
        "train on a fixed subset of P training images chosen by the data seed (image tasks)",
    ),
    Option(
        "run",
        "batch",
        "--batch",
        str,
        "random (minibatches of --batch-size, the default) or full (every step on "
        "the --train-size subset: full-batch gradient descent)",
    ),
    Option(
        "run",
        "loss",
        "--loss",
        str,
        "ce (cross-entropy, the default) or mse (0.5 * squared error to the one-hot label)",
    ),
    Option(
        "run",
        "heldout_batch",
        "--heldout-batch",
        int,
        "samples of the fixed held-out batch the held-out loss (and "
        "a full-batch run's test outputs) are taken on (default 64)",
    ),
    Option("run", "steps", "--steps", int, "optimizer steps (default 200)", ("run", "solve", "sweep")),
    Option("run", "seed", "--seed", int, "initialisation seed (default 0)", ("run",)),
    Option(
        "run",
        "io_seeds",
        "--io-seeds",
        int,
        "K >= 1: seed s draws its embedding, positions and readout from io "
        "seed s mod K, so each of K io groups has seeds/K block draws (the paired depth design); 0 (default): each "
        "seed its own",
        ("sweep",),
    ),
    # probes
    Option(
        "probes",
        "every",
        "--probe-every",
        int,
        "probe (and held-out loss) every k steps (default 10)",
        ("run", "sweep"),
    ),
    Option("probes", "n_log", "--probe-log", int, "instead, probe at this many log-spaced steps", ("run",)),
    Option("probes", "schedule", "--probe-log", str, "", ()),  # --probe-log also sets schedule = "log"
    Option("probes", "n_samples", "--probe-samples", int, "probe batch size (default 32)", ("run", "coord")),
    Option(
        "probes",
        "enabled",
        "--no-probes",
        bool,
        "record kernels, attention and weight movement",
        ("run",),
        decl="--probes/--no-probes",
    ),
    Option("probes", "at", "--steps", str, "probe steps, comma-separated; training runs to the largest", ("coord",)),
)

# The options of the config commands that set no config key (the command's own: outputs, grid, executors, solver).
NOT_CONFIG = (
    "--scale",
    "--config",
    "--out",
    "--overwrite",
    "--progress",
    "--values",
    "--seeds",
    "--init-only",
    "--rebuild-manifest",
    "--ensemble",
    "--executor",
    "--workers",
    "--ray-address",
    "--ray-cpus",
    "--gpus-per-task",
    "--csv",
    "--samples",
    "--damping",
    "--max-iter",
    "--tol",
    "--solver-seed",
)

_BY_KEY = {(o.section, o.key): o for o in OPTIONS}


def option(section: str, key: str) -> Option:
    """The table's entry of [section] key."""
    return _BY_KEY[(section, key)]


def flag_of(section: str, key: str) -> str | None:
    """The flag that sets [section] key ("--gamma0"), None when only a config file sets it."""
    o = _BY_KEY.get((section, key))
    return o.flag if o is not None else None


def shared_options(command: str) -> list[Option]:
    """The shared options (declared once for every command taking their section) of `command`, in table order."""
    return [o for o in OPTIONS if o.commands is None and o.section in GROUPS.get(command, ())]


def commands_of(o: Option) -> tuple[str, ...]:
    """The commands that take option `o`."""
    if o.commands is not None:
        return o.commands
    return tuple(c for c in CONFIG_COMMANDS if o.section in GROUPS[c])

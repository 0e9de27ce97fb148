"""Build a RunConfig from defaults, an optional config file (TOML or JSON) and command-line overrides, and
validate all of it before any work starts.

Config file layout (every section and key optional):

    [model]  N = 16  H = 4  L = 2  task = "lm"  seq_len = 64  lws = "isotropic"  axis = "N"  (task: lm|vision|digits)
    [param]  preset = "mup"  gamma0 = 1.0  beta0 = 1.0  centre = "copy"
    [optim]  name = "adam"  eta0 = 0.05  weight_decay = 0.0
    [run]    steps = 200  batch_size = 32  seed = 0  device = "cpu"  data_path = "..."  patch = 4 (digits: 2)
             io_seeds = 0 (K >= 1: seed s draws its embedding, positions and readout from io seed s mod K)
    [probes] enabled = true  schedule = "every"  every = 10  n_log = 20  n_samples = 32  seed = 0  n_points = 4

Precedence: command line > file > defaults. `scale` sets the size named by `axis` (N, H or L).

Validation, in order, each failure a ValueError whose one-line message names the command-line option (--gamma0)
or the config-file key ([param] gamma0 in run.toml) the value came from:
1. the file: a regular, readable UTF-8 TOML/JSON file of at most 1 MB whose top level is a table of known
   sections, each a table of known keys;
2. forms a file may hold for a field's type are converted (`convert`: 4.0 for an int, 4 for a float, a list for
   a tuple); a JSON null is refused where the field takes none;
3. types and values: the dataclasses' own checks (`parametrizations.checks`: types, finiteness, ranges, choices;
   the one place they are checked), also of a file's value that the command line overrides;
4. across values: --d-model = N*H, the LWS profile resolves, the device is one torch can use, tf32 needs CUDA,
   --data is an existing regular file or folder (and absent for digits), the patch divides the bundled images
   (16 synthetic, 8 digits), the bundled data sets hold the probe and held-out batches;
5. `check_numbers`: every number the parametrization derives for these sizes (learning rate, init stds,
   multipliers, Adam eps, weight-decay factor) is finite and usable in float32;
6. with `fits`, `check_fits`: the estimated memory of the run (or of the model alone, `fits="model"`) is
   available on its device. Sweeps call `check_fits` themselves on their largest grid point.
The contents of --data are read by `check_data_contents`, which the commands call next, before any header or
output (make_run_config itself never reads data files).
"""

from __future__ import annotations

import json
import math
import os
import stat
import tomllib
import types
import typing
from dataclasses import dataclass, fields, replace
from pathlib import Path

from parametrizations.checks import DERIVED_MAX, DERIVED_MIN, ConfigError, check_int, is_int, one_of_error, safe, short
from parametrizations.counts import parameter_count
from parametrizations.optim import OptimConfig, eps_multiplier, global_lr
from parametrizations.optim import eps0 as eps0_of
from parametrizations.spec import Parametrization, abc, attention_scale, branch_multiplier, get_preset, is_adam
from parametrizations.transformer import ModelConfig, check_centre, is_vision
from parametrizations.variants import MODEL_PRESETS
from probes.experiment import data as _data
from probes.experiment.memory import FLOAT, free_bytes, member_bytes
from probes.experiment.options import flag_of
from probes.experiment.run import RunConfig, resolve_device
from probes.hooks.recorder import LAYER_BATCH_BYTES, MAX_PROBE_SAMPLES, REF_CACHE_BYTES, ProbeConfig

MODEL_KEYS = {f.name for f in fields(ModelConfig)} | {"preset"}
OPTIM_KEYS = {f.name for f in fields(OptimConfig)}
RUN_KEYS = {f.name for f in fields(RunConfig)} - {"model", "param", "optim", "probes"}
PROBE_KEYS = {f.name for f in fields(ProbeConfig)}
PARAM_KEYS = {"preset", "alpha_A", "alpha_L", "beta0", "gamma0", "L0", "centre"}
SECTION_KEYS = {"model": MODEL_KEYS, "param": PARAM_KEYS, "optim": OPTIM_KEYS, "run": RUN_KEYS, "probes": PROBE_KEYS}
SECTION_CLASSES = {
    "model": ModelConfig,
    "param": Parametrization,
    "optim": OptimConfig,
    "run": RunConfig,
    "probes": ProbeConfig,
}
MAX_CONFIG_BYTES = 1 << 20

# The default data sets (probes.experiment.data): the synthetic vision task's images and held-out split, and the longest
# window the embedded stdlib corpus's held-out split (about 200 KB) certainly holds.
SYNTHETIC_IMAGE, SYNTHETIC_CHANNELS, SYNTHETIC_CLASSES, SYNTHETIC_HELDOUT = 16, 3, 10, 1024
# scikit-learn's digits (probes.experiment.data.digits): 8x8 grey images, 10 classes, 297 held out
DIGITS_IMAGE, DIGITS_CHANNELS, DIGITS_CLASSES, DIGITS_HELDOUT = (
    _data.DIGITS_IMAGE,
    1,
    _data.DIGITS_CLASSES,
    _data.DIGITS_HELDOUT,
)
# the bundled image sets, by task: (what they are called in messages, image side, channels, classes, held-out images)
BUNDLED_IMAGES = {
    "vision": ("the synthetic vision task", SYNTHETIC_IMAGE, SYNTHETIC_CHANNELS, SYNTHETIC_CLASSES, SYNTHETIC_HELDOUT),
    "digits": ("the digits task", DIGITS_IMAGE, DIGITS_CHANNELS, DIGITS_CLASSES, DIGITS_HELDOUT),
}
STDLIB_MAX_SEQ_LEN, STDLIB_VOCAB = 65536, 256
# training images of the bundled sets (the largest --train-size they allow)
BUNDLED_TRAIN = {"vision": 4096, "digits": 1797 - DIGITS_HELDOUT}


# ----------------------------------------------------------------------------------------------- names


@dataclass
class Names:
    """Where each value came from, to name it in a message: the command-line option when it was given there,
    the config-file key when the file set it, else the option (or key) of its default."""

    cli: dict  # {section: {key: value}} given on the command line
    file: dict  # {section: {key: value}} from the config file
    path: str | None = None  # the config file
    special: dict | None = None  # {(section, key): option} e.g. the axis size set by --scale

    def name(self, section: str, key: str, full: bool = True) -> str:
        """The option (with its config key when they differ and `full`: "--alpha-A ([param] alpha_A)") or the
        config-file key ("[param] alpha_A in run.toml")."""
        if key in self.file.get(section, {}) and key not in self.cli.get(section, {}):
            return f"[{section}] {key} in {self.path}"
        flag = (self.special or {}).get((section, key)) if key in self.cli.get(section, {}) else None
        flag = flag or _flag(section, key)
        if full and flag.startswith("--") and flag != f"--{key}":
            return f"{flag} ([{section}] {key})"
        return flag

    def given(self, section: str, key: str) -> bool:
        return key in self.cli.get(section, {}) or key in self.file.get(section, {})


class _Defaults(Names):
    """Names for a RunConfig built elsewhere (a sweep's grid point): a value counts as given when it differs
    from the dataclass default."""

    def __init__(self, cfg: RunConfig):
        super().__init__({}, {})
        self.cfg = cfg

    def given(self, section: str, key: str) -> bool:
        obj = getattr(self.cfg, section) if section != "run" else self.cfg
        default = {
            "model": ModelConfig(),
            "param": Parametrization(),
            "optim": OptimConfig(),
            "probes": ProbeConfig(),
        }.get(section, RunConfig())
        if section == "param" and key == "preset":
            return self.cfg.param.name != "mup"
        return getattr(obj, key, None) != getattr(default, key, None)


def _flag(section: str, key: str) -> str:
    """The flag of [section] key (`probes.experiment.options`, the table cli.py declares its options from), else the
    config-file key."""
    return flag_of(section, key) or f"[{section}] {key}"


def _relabel(names: Names, section: str, e: ConfigError) -> ValueError:
    """The dataclass's ConfigError with the option or key the value came from."""
    return ValueError(f"{names.name(section, e.key)} {e.reason}")


# ----------------------------------------------------------------------------------------------- the file


def read_config_file(path: str | Path) -> dict:
    """Parse a .toml or .json config file into {section: {key: value}}; ValueError naming --config otherwise."""
    if not str(path):
        raise ValueError("--config: empty path; give a .toml or .json file")
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ValueError(f"--config: no such file {path}") from None
    except OSError as e:
        raise ValueError(f"--config: cannot access {path} ({e.strerror or type(e).__name__})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ValueError(f"--config: {path} is a folder, not a config file")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"--config: {path} is not a regular file (a FIFO, socket or device?)")
    if st.st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"--config: {path} has {st.st_size} bytes; a config file is at most {MAX_CONFIG_BYTES}")
    kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"--config: {path} is not valid {kind} (not UTF-8 text)") from None
    except OSError as e:
        raise ValueError(f"--config: cannot read {path} ({e.strerror or type(e).__name__})") from None
    try:
        data = json.loads(text) if kind == "JSON" else tomllib.loads(text)
    except (ValueError, RecursionError) as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"--config: {path} is not valid {kind} ({msg})") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"--config: {path} must hold a table of sections ({', '.join(SECTION_KEYS)}), got {type(data).__name__}"
        )
    for section, values in data.items():
        if section not in SECTION_KEYS:
            raise ValueError(
                f"--config: unknown section [{short(section)}] in {path}; sections are {', '.join(SECTION_KEYS)}"
            )
        if not isinstance(values, dict):
            raise ValueError(f"--config: [{section}] in {path} must be a table of keys, got {short(values)}")
        unknown = set(values) - SECTION_KEYS[section]
        if unknown:
            raise ValueError(
                f"--config: unknown key(s) {short(', '.join(sorted(unknown)), 100)} in [{section}] "
                f"of {path}; keys are {', '.join(sorted(SECTION_KEYS[section]))}"
            )
    return data


# ----------------------------------------------------------------------------------------------- types


def _field_types() -> dict[str, dict[str, object]]:
    """{section: {key: type}} from the dataclass annotations (PEP 604 unions, tuples)."""
    out = {s: typing.get_type_hints(cls) for s, cls in SECTION_CLASSES.items()}
    out["param"] = {k: (str if k == "preset" else out["param"][k]) for k in PARAM_KEYS}
    out["model"]["d_model"] = int  # --d-model: a check, not a field
    out["model"]["preset"] = str  # --model-preset: a set of model fields (parametrizations.variants)
    return out


FIELD_TYPES = _field_types()


def convert(value, tp):
    """`value` in the form of the field type `tp` where a config file may legitimately hold another: an integral
    float for an int (JSON writers emit 4.0), an int for a float, a list for a tuple. Anything else is returned as
    it is: the dataclasses judge every value (`parametrizations.checks`, the one place types are checked)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return value if value is None else convert(value, inner[0])
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is float and is_int(value):
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range: the dataclass refuses it
            return value
    if origin is tuple and isinstance(value, list):
        return tuple(convert(v, args[0]) for v in value)
    return value


def _nullable(tp) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


# ----------------------------------------------------------------------------------------------- make_run_config


def make_run_config(
    config_file: str | None = None,
    *,
    scale: int | None = None,
    model: dict | None = None,
    param: dict | None = None,
    optim: dict | None = None,
    run: dict | None = None,
    probes: dict | None = None,
    fits: str | None = None,
) -> RunConfig:
    """Merge defaults < file < overrides (None values are ignored) and validate everything (module docstring);
    returns the RunConfig. fits: "run" also checks that the run fits in memory (`check_fits`), "model" that the
    model alone does (describe); None checks neither (sweeps check their grid points themselves)."""
    data = read_config_file(config_file) if config_file is not None else {}
    cli = {
        s: {k: v for k, v in (over or {}).items() if v is not None}
        for s, over in (("model", model), ("param", param), ("optim", optim), ("run", run), ("probes", probes))
    }
    names = Names(cli, data, str(config_file) if config_file is not None else None, {})
    if scale is not None:
        axis = cli["model"].get("axis", data.get("model", {}).get("axis", "N"))
        if axis not in ("N", "H", "L"):
            raise ValueError(f"{names.name('model', 'axis')} must be N, H or L, got {short(axis)}")
        if not is_int(scale) or scale < 1:
            raise ValueError(f"--scale must be a positive integer, got {short(scale)}")
        cli["model"][axis] = scale
        names.special[("model", axis)] = "--scale"

    sections: dict[str, dict] = {}
    for s in SECTION_KEYS:
        file_values = {k: convert(v, FIELD_TYPES[s][k]) for k, v in data.get(s, {}).items()}
        for k, v in file_values.items():
            # TOML has no null; JSON's null is refused where the field takes none (the command line's None means
            # "not given", which a file says by leaving the key out)
            if v is None and not _nullable(FIELD_TYPES[s][k]):
                raise ValueError(f"[{s}] {k} in {config_file} must not be null")
        for k in cli[s]:
            if k not in FIELD_TYPES[s]:
                raise ValueError(f"{names.name(s, k)} is not a {s} setting")
        sections[s] = {**file_values, **{k: convert(v, FIELD_TYPES[s][k]) for k, v in cli[s].items()}}
        overridden = set(file_values) & set(cli[s])
        if overridden:  # a file's value the command line overrides is still checked: the file is wrong
            _check_file_values(s, file_values, overridden, config_file)

    def build(section: str, fn, **kw):
        try:
            return fn(**kw)
        except ConfigError as e:
            raise _relabel(names, section, e) from None

    m, p, o, r = sections["model"], sections["param"], sections["optim"], sections["run"]
    probe_cfg = build("probes", ProbeConfig, **sections["probes"])
    d_model = m.pop("d_model", None)
    preset = m.pop("preset", None)
    if preset is not None:
        if not isinstance(preset, str) or preset not in MODEL_PRESETS:
            raise one_of_error(names.name("model", "preset"), preset, MODEL_PRESETS)
        m = {**MODEL_PRESETS[preset], **m}  # the preset's fields, under anything given explicitly
    model_cfg = build("model", ModelConfig, **m)
    try:
        model_cfg.shapes()
    except ValueError as e:
        raise ValueError(f"{names.name('model', 'lws')}: {str(e).splitlines()[0]}") from None
    if d_model is not None:
        build("model", check_int, key="d_model", v=d_model)
    if d_model is not None and d_model != model_cfg.d_model:
        raise ValueError(f"--d-model {d_model} does not match N*H = {model_cfg.N}*{model_cfg.H} = {model_cfg.d_model}")
    param_cfg = build("param", get_preset, name=p.pop("preset", "mup"), **p)
    build("param", check_centre, cfg=model_cfg, p=param_cfg)  # before any output: the model would refuse it
    optim_cfg = build("optim", OptimConfig, **o)
    cfg = build("run", RunConfig, model=model_cfg, param=param_cfg, optim=optim_cfg, probes=probe_cfg, **r)
    check_run(cfg, names)
    check_numbers(cfg, names)
    if fits:
        check_fits(cfg, names, what=fits)
    return cfg


def _check_file_values(section: str, values: dict, keys: set, path) -> None:
    """The config file's `section` alone (over the defaults) through its dataclass: ValueError naming the file's
    key when one of `keys` (the values the command line overrides) is refused. Other refusals are left to the
    merged config, where the command line may have mended them."""
    values = dict(values)
    try:
        if section == "model":
            values.pop("d_model", None)
            preset = values.pop("preset", None)
            ModelConfig(**{**(MODEL_PRESETS.get(preset, {}) if isinstance(preset, str) else {}), **values})
        elif section == "param":
            values.pop("preset", None)
            replace(get_preset("mup"), **values)
        else:
            SECTION_CLASSES[section](**values)
    except ConfigError as e:
        if e.key in keys:
            raise ValueError(f"[{section}] {e.key} in {path} {e.reason}") from None
    except (TypeError, ValueError):
        pass


def check_run(cfg: RunConfig, names: Names | None = None) -> None:
    """Checks across settings that need the machine or the data: the device, precision, --data, and the
    default data sets' sizes. ValueError naming the option."""
    names = names or _Defaults(cfg)
    try:
        device = resolve_device(cfg.device)
    except ConfigError as e:
        raise _relabel(names, "run", e) from None
    if cfg.precision == "tf32" and device.type != "cuda":
        raise ValueError(
            f"{names.name('run', 'precision')} tf32 needs a CUDA device (--device cuda), the run is on {device.type}"
        )
    m = cfg.model
    if cfg.train_size is not None and not is_vision(m.task):
        raise ValueError(
            f"{names.name('run', 'train_size')} needs an image task (vision or digits): a training "
            f"subset of the {m.task} task is not supported"
        )
    if cfg.full_batch and cfg.probes.enabled and cfg.train_size > MAX_PROBE_SAMPLES:
        raise ValueError(
            f"{names.name('run', 'train_size')} must be <= {MAX_PROBE_SAMPLES} with --batch full and "
            f"probes (they are taken on the training set), got {cfg.train_size}; or use --no-probes"
        )
    if cfg.data_path is not None and m.task == "digits":
        check_data_layout(cfg, names)  # refuses it: the digits take no path
    if cfg.data_path is not None:
        check_data_path(str(cfg.data_path), names.name("run", "data_path"))
        check_data_layout(cfg, names)
        return
    if m.task in BUNDLED_IMAGES:
        what, side, _, _, held = BUNDLED_IMAGES[m.task]
        if side % cfg.patch:
            raise ValueError(
                f"{names.name('run', 'patch')} must divide the image size {side} of {what}, got {cfg.patch}"
            )
        if cfg.train_size is not None and cfg.train_size > BUNDLED_TRAIN[m.task]:
            raise ValueError(
                f"{names.name('run', 'train_size')} must be <= {BUNDLED_TRAIN[m.task]}, the training "
                f"images of {what}; got {cfg.train_size}"
            )
        # the probe batch and the held-out batch are distinct held-out images (Split.fixed)
        for section, key, n in (
            ("probes", "n_samples", cfg.probes.n_samples if cfg.probes.enabled else 0),
            ("run", "heldout_batch", cfg.heldout_batch),
        ):
            if n > held:
                raise ValueError(
                    f"{names.name(section, key)} must be <= {held}, the held-out images of {what}; got {n}"
                )
    elif m.seq_len > STDLIB_MAX_SEQ_LEN:
        raise ValueError(
            f"{names.name('model', 'seq_len')} must be <= {STDLIB_MAX_SEQ_LEN} on the embedded stdlib "
            f"corpus (give longer token files with --data), got {m.seq_len}"
        )


def check_data_layout(cfg: RunConfig, names: Names | None = None) -> None:
    """--data has the layout `probes.experiment.data.load_task` reads (its contents are checked when it is read): for the LM
    nanoGPT uint16 token files, a folder with train.bin and val.bin or one .bin split 90/10, each split holding a
    window of seq_len + 1 tokens; for vision a CIFAR-10 python folder or CIFAR-5M .npz file(s); digits takes none
    (scikit-learn ships them), so any path is refused."""
    names = names or _Defaults(cfg)
    name = names.name("run", "data_path")
    if cfg.model.task == "digits":
        raise ValueError(
            f"{name}: the digits task is bundled with scikit-learn and takes no data path (drop it, or "
            f"use --task vision for CIFAR)"
        )
    p = Path(cfg.data_path)
    if cfg.model.task == "vision":
        if p.is_dir() and (any(p.glob("data_batch_*")) or (p / "test_batch").exists()):
            return
        if (p.is_file() and p.suffix == ".npz") or (p.is_dir() and any(p.glob("*.npz"))):
            return
        raise ValueError(
            f"{name}: {p} is not a CIFAR-10 python folder (data_batch_*, test_batch) or CIFAR-5M .npz "
            f"file(s) for the vision task"
        )
    need = cfg.model.seq_len + 1
    files = [p / "train.bin", p / "val.bin"] if p.is_dir() else [p]
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            raise ValueError(
                f"{name}: folder {p} has no {f.name} (nanoGPT token files train.bin and val.bin)"
            ) from None
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{name}: {f} is not a regular file")
        n = st.st_size // 2  # uint16 tokens
        splits = [n] if p.is_dir() else [int(n * 0.9), n - int(n * 0.9)]
        if st.st_size % 2 or min(splits) < need:
            raise ValueError(
                f"{name}: {f} has {st.st_size} bytes; each split needs at least seq_len + 1 = {need} "
                f"uint16 tokens (nanoGPT .bin)"
            )


def check_data_path(path: str, name: str = "--data") -> None:
    """An existing, readable regular file or folder (never a FIFO, which would block the loader)."""
    if not path:
        raise ValueError(f"{name}: empty path")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ValueError(f"{name}: no such file or folder {path}") from None
    except OSError as e:
        raise ValueError(f"{name}: cannot access {path} ({e.strerror or type(e).__name__})") from None
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        raise ValueError(f"{name}: {path} is not a regular file or folder (a FIFO, socket or device?)")
    if not os.access(path, os.R_OK):
        raise ValueError(f"{name}: {path} is not readable")


def data_option(config_file: str | os.PathLike | None, cli_data: object) -> str:
    """How to name the data path in a message: --data when the command line gave it, else the config-file key
    ("[run] data_path in cfg.toml")."""
    if cli_data is not None or config_file is None:
        return "--data"
    return f"[run] data_path in {config_file}"


def check_data_contents(cfg: RunConfig, name: str = "--data", keep: bool = True) -> None:
    """Read cfg's data path exactly as the run will (`probes.experiment.run.setup`'s `load_task` call: the same loader, the
    same restricted unpickler) in this process, before any header, store or output, and check that its held-out
    split holds the batches the run draws from it. ValueError "<name>: <what is wrong>" (one line) otherwise.
    With `keep` the loaded task is remembered (`probes.experiment.data.load_task(remember=True)`), so a run in this process
    reuses it instead of reading the files twice; without it (the runs happen in other processes) it is dropped
    when the check ends."""
    if cfg.data_path is None:
        return
    try:
        task = _data.load_task(
            cfg.model.task, cfg.data_path, seq_len=cfg.model.seq_len, patch=cfg.patch, seed=cfg.data_seed, remember=keep
        )
    except (ValueError, OSError) as e:  # DataError is a ValueError
        why = (e.strerror and f"{e.filename}: {e.strerror}") if isinstance(e, OSError) else str(e)
        raise ValueError(f"{name}: {(why or type(e).__name__).splitlines()[0]}") from None
    except MemoryError:
        raise ValueError(f"{name}: {cfg.data_path} does not fit in the memory available") from None
    if isinstance(task.heldout, _data.ImageSplit):
        n = len(task.heldout)
        draws = [(cfg.heldout_batch, _flag("run", "heldout_batch"))]
        if cfg.probes.enabled:
            draws.append((cfg.probes.n_samples, _flag("probes", "n_samples")))
        for k, what in draws:
            if k > n:
                raise ValueError(
                    f"{name}: {cfg.data_path} has {n} held-out images, fewer than the {k} distinct "
                    f"ones the run draws ({what})"
                )
    if cfg.train_size is not None and cfg.train_size > len(task.train):
        raise ValueError(
            f"{name}: {cfg.data_path} has {len(task.train)} training images, fewer than --train-size {cfg.train_size}"
        )


def check_out_file(path: str | os.PathLike, name: str) -> None:
    """An output file (check's --csv, --nc): new or an existing regular file (never a folder or a FIFO, which
    would block), in an existing, writable folder. Nothing is created."""
    path = Path(path)
    if not str(path) or not path.name:
        raise ValueError(f"{name}: {str(path)!r} is not a file name")
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ValueError(f"{name}: {path} is a folder")
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{name}: {path} exists and is not a regular file (a FIFO, socket or device?)")
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as e:
        raise ValueError(f"{name}: cannot access {path} ({e.strerror or type(e).__name__})") from None
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"{name}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise ValueError(f"{name}: folder {parent} is not writable")


def check_out_folder(path: str | os.PathLike, name: str) -> None:
    """An output folder (plot's --out): an existing writable folder, or one that can be made under the nearest
    existing ancestor (a writable folder, not a file). Nothing is created."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name}: {path} exists and is not a folder")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{name}: cannot make folder {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK):
        raise ValueError(f"{name}: folder {ancestor} is not writable")


# ----------------------------------------------------------------------------------------------- derived numbers


def _sizes(cfg: RunConfig) -> str:
    m = cfg.model
    return f"N={m.N} H={m.H} L={m.L}"


def _blame(names: Names, keys: list[tuple[str, str]], cfg: RunConfig) -> str:
    """The options/keys among `keys` the user set (all of them when none was set), with their values."""
    given = [k for k in keys if names.given(*k)] or keys

    def value(section, key):
        obj = cfg if section == "run" else getattr(cfg, section)
        if section == "param" and key == "preset":
            return cfg.param.name
        if section == "optim" and key == "name":
            return cfg.optim.name
        v = getattr(obj, key, None)
        return f"{v:g}" if isinstance(v, float) else short(v, 30)

    return ", ".join(f"{names.name(*k, full=False)} {value(*k)}" for k in given)


SIZE_KEYS = [("model", "N"), ("model", "H"), ("model", "L")]
DEPTH_KEYS = [("param", "alpha_L"), ("param", "L0")]


def check_numbers(cfg: RunConfig, names: Names | None = None) -> None:
    """Every number the parametrization derives for cfg's sizes (global learning rate, each role's init std and
    forward multiplier, the residual branch multiplier, the attention scale, Adam's eps, the weight-decay factor)
    is finite and inside [DERIVED_MIN, DERIVED_MAX] (`parametrizations.checks`), usable in float32. ValueError naming
    the options that make it so (e.g. --gamma0 1e200: the SGD learning rate overflows)."""
    names = names or _Defaults(cfg)
    m, p, o = cfg.model, cfg.param, cfg.optim
    shapes = m.shapes()
    d, N, L = m.d_model, m.N, m.L
    adam = is_adam(o.name)
    checks = []  # (what, value, contributing keys, zero_ok, upper bound only)
    lr = safe(global_lr, p, o, d, L)
    lr_keys = [("optim", "eta0"), ("param", "preset")] + (
        [] if p.standard else [("param", "gamma0"), *DEPTH_KEYS, *SIZE_KEYS]
    )
    checks.append(("global learning rate", lr, lr_keys, False, False))
    fan_in = {
        "embed": m.d_in if is_vision(m.task) else 1,
        "pos": 1,
        "q": d,
        "k": d,
        "v": d,
        "o": max(shapes.heads) * N,
        "mlp_in": d,
        "mlp_out": max(shapes.d_ff),
        "readout": d,
    }
    role_keys = {
        "embed": DEPTH_KEYS + SIZE_KEYS,
        "pos": DEPTH_KEYS + SIZE_KEYS,
        "q": [("param", "alpha_A"), ("model", "N")],
        "k": [("param", "alpha_A"), ("model", "N")],
        "readout": [("param", "gamma0"), *DEPTH_KEYS, *SIZE_KEYS],
    }
    for role, fi in fan_in.items():
        try:
            std, mult = abc(p, role, fi, d=d, N=N, L=L, optimizer=o.name)
        except (OverflowError, ZeroDivisionError):
            std, mult = math.inf, math.inf
        keys = role_keys.get(role, SIZE_KEYS)
        checks.append((f"{role} init std", float(std), keys, False, False))
        checks.append((f"{role} forward multiplier", float(mult), keys, False, False))
    checks.append(
        (
            "residual branch multiplier beta0 (L/L0)^-alpha_L",
            safe(branch_multiplier, p, L),
            [("param", "beta0"), *DEPTH_KEYS, ("model", "L")],
            False,
            False,
        )
    )
    checks.append(
        (
            "attention scale N^-alpha_A",
            safe(attention_scale, p, N),
            [("param", "alpha_A"), ("model", "N")],
            False,
            False,
        )
    )
    if adam:
        e0 = eps0_of(p, o)
        for role in ("embed", "q", "v", "readout"):
            checks.append(
                (
                    f"Adam eps of {role}",
                    safe(lambda role=role: e0 * eps_multiplier(p, role, d, L, N)),
                    [("optim", "eps0"), ("param", "gamma0"), *DEPTH_KEYS, *SIZE_KEYS],
                    True,
                    True,
                )
            )
    if o.weight_decay:
        checks.append(
            (
                "weight-decay factor eta0*weight_decay/lr",
                safe(lambda: o.weight_decay * o.eta0 / lr),
                [("optim", "weight_decay"), *lr_keys],
                False,
                True,
            )
        )
    for what, value, keys, zero_ok, upper_only in checks:
        low = 0.0 if upper_only else DERIVED_MIN
        ok = math.isfinite(value) and low <= value <= DERIVED_MAX and (value > 0 or zero_ok or upper_only)
        if not ok:
            raise ValueError(
                f"{_blame(names, keys, cfg)} ({_sizes(cfg)}) makes the {what} {value:.3g}, outside the "
                f"usable range [{DERIVED_MIN:g}, {DERIVED_MAX:g}] of float32 training"
            )


# ----------------------------------------------------------------------------------------------- memory


def _gib(n: float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


def effective_config(cfg: RunConfig) -> RunConfig:
    """cfg with the data-dependent sizes (seq_len, d_in, n_classes; vocab_size) of the bundled data sets filled in,
    as `probes.experiment.run.setup` will use them; cfg's own where a --data path decides them."""
    return _effective(cfg)


def _effective(cfg: RunConfig) -> RunConfig:
    """cfg with the data-dependent sizes of the default data sets (what `probes.experiment.run.setup` will use)."""
    m = cfg.model
    bundled = BUNDLED_IMAGES.get(m.task) if cfg.data_path is None else None
    if bundled is not None and bundled[1] % cfg.patch == 0:
        _, side, channels, classes, _ = bundled
        m = replace(m, seq_len=(side // cfg.patch) ** 2, d_in=channels * cfg.patch**2, n_classes=classes)
    elif cfg.data_path is None and m.task == "lm":
        m = replace(m, vocab_size=STDLIB_VOCAB)
    return replace(cfg, model=m)


def memory_parts(cfg: RunConfig, what: str = "run", members: int = 1) -> dict[str, tuple[int, list, bool]]:
    """Estimated bytes of a run by part: {part: (bytes, the keys that size it, on the device)}. A generous
    estimate: `probes.experiment.memory.member_bytes` (weights with gradient, optimizer state and initial copy;
    training activations; the probe pass) plus the probe kernels, the recorded probe steps, a full-batch run's
    gradient kernels (every train step), the held-out forward, the per-step loss buffers and the batch chunk.
    what="model": the weights alone (describe; `parametrizations.counts.parameter_count` floats)."""
    cfg = _effective(cfg)
    m = cfg.model
    sh = m.shapes()
    d, S, L = m.d_model, m.seq_len, m.L
    B = cfg.train_size if cfg.full_batch else cfg.batch_size  # full batch: every step on the training subset
    n_out = m.vocab_size if m.task == "lm" else m.n_classes
    model_keys = SIZE_KEYS + [
        ("model", "seq_len"),
        ("model", "lws"),
        ("model", "ffn_mult"),
        ("model", "vocab_size"),
        ("model", "lws_heads"),
        ("model", "lws_d_ff"),
    ]
    if what == "model":
        return {"weights": (FLOAT * parameter_count(m), model_keys, True)}
    if cfg.full_batch and cfg.probes.enabled:  # the probes are taken on the training subset
        cfg = replace(cfg, probes=replace(cfg.probes, n_samples=min(cfg.train_size, MAX_PROBE_SAMPLES)))
    parts = {
        "weights, optimizer state, activations": (
            members * member_bytes(replace(cfg, batch_size=B)),
            model_keys + [("run", "train_size" if cfg.full_batch else "batch_size")],
            True,
        )
    }
    pr = cfg.probes
    if pr.enabled:
        P = pr.n_samples
        record = (
            (L + 1) * (2 * P * P + S * S + 1) + L * (6 + 2 * 9 + 6 + pr.n_points * max(sh.heads)) + 8 + P * n_out
        )  # probe_outputs: (sample, output)
        probe_keys = [("probes", "n_samples"), ("probes", "n_points"), ("model", "seq_len")] + SIZE_KEYS
        parts["probe pass"] = (members * FLOAT * 3 * (record + P * S * d), probe_keys, True)
        # kept from step 0 (A(0), softmax(A(0)) of every layer, capped at REF_CACHE_BYTES) and the stacked head
        # statistics of a group of same-shape layers (about four (E, P, H_l, S, S) tensors, each capped at
        # LAYER_BATCH_BYTES): `probes.hooks.recorder`
        pairs = members * FLOAT * P * S * S  # bytes of one head's (S, S) map over the probe batch
        parts["probe pass caches"] = (
            min(REF_CACHE_BYTES, 2 * pairs * sum(sh.heads)) + 4 * min(LAYER_BATCH_BYTES, pairs * max(sh.heads) * L),
            probe_keys,
            True,
        )
        n_rec = pr.n_steps(cfg.steps)
        parts["recorded probe steps"] = (
            members * n_rec * (2 * FLOAT * record + 200),
            probe_keys + [("run", "steps"), ("probes", "every"), ("probes", "n_log"), ("probes", "at")],
            False,
        )
        if cfg.full_batch:  # kernel_grad (probes.hooks.grad_kernel): (L+1, P, P) per train step
            per_step = members * FLOAT * (L + 1) * P * P
            held = min(cfg.steps, pr.every) if pr.schedule == "every" else cfg.steps  # on the device till a log
            grad_keys = [("run", "train_size"), ("run", "steps"), ("model", "L")]
            parts["gradient kernels"] = (2 * cfg.steps * per_step, grad_keys, False)
            parts["gradient kernels before a log step"] = (held * per_step, grad_keys, True)
    parts["held-out forward"] = (
        members * FLOAT * cfg.heldout_batch * S * (4 * d + 2 * max(sh.d_ff) + 3 * n_out),
        model_keys + [("run", "heldout_batch")],
        True,
    )
    chunk = max(1, min(256, cfg.steps))
    per_sample = 2 * 8 * S if m.task == "lm" else FLOAT * S * m.d_in + 8
    parts["batches and per-step losses"] = (
        chunk * B * per_sample + members * cfg.steps * FLOAT,
        [("run", "steps"), ("run", "batch_size")],
        True,
    )
    parts["per-step logs"] = (members * cfg.steps * 64, [("run", "steps")], False)
    return parts


def check_fits(cfg: RunConfig, names: Names | None = None, what: str = "run", members: int = 1) -> None:
    """ValueError naming the sizes when the run (what="run", `members` seeds trained together) or the model alone
    (what="model") cannot fit in the memory available now on its device (`memory_parts`, `free_bytes`),
    and when a number derived for these sizes is unusable (`check_numbers`). Nothing is allocated: a sweep calls
    it on its largest grid point (and may call it on every point; it is cheap) before any work."""
    names = names or _Defaults(cfg)
    check_numbers(cfg, names)
    device = resolve_device(cfg.device)
    parts = memory_parts(cfg, what, members)
    pools = [("device", device, True), ("host", "cpu", False)] if device.type == "cuda" else [("", device, None)]
    for _, dev, on_device in pools:
        mine = {k: v for k, v in parts.items() if on_device is None or v[2] == on_device}
        need = sum(v[0] for v in mine.values())
        have = free_bytes(dev)
        if need > have:
            biggest = max(mine, key=lambda k: mine[k][0])
            keys = mine[biggest][1]
            detail = ", ".join(f"{k} {_gib(v[0])}" for k, v in mine.items() if v[0] >= need / 100)
            label = "the model" if what == "model" else "the run"
            raise ValueError(
                f"{_blame(names, keys, cfg)}: {label} needs about {_gib(need)} of memory "
                f"({detail}; {_sizes(cfg)}), more than the {_gib(have)} available on {dev}"
            )

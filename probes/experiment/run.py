"""The probed training run: device-agnostic, seeded, centred output, held-out loss, divergence check (losses and
probe statistics; per member in a seed ensemble).

Training objective (paper Sec. 2; official `shift_fn`): cross-entropy of f(theta_t) - f(theta_0), where the
readout multiplier already carries 1/gamma0. f(theta_0) comes from a frozen copy of the initial model
(centre="copy"), from a zero-initialised readout (centre="zero_readout"), or is not removed (centre="none", SP).
Under "copy" the copy's outputs on the held-out batch, on a full batch and on a finite training split (image tasks,
when the run draws at least as many samples as the split holds: `caches_training_split`) are computed once and
looked up (`InitialOutputs`), bit-identical to the copy's forward every step; on the LM token stream the copy's
no-grad forward runs every step.

Losses accumulate on the device and leave it once per log step (no host sync per step); training batches are
drawn ahead in chunks and indexed on the device (`probes.experiment.batches`). A seed ensemble (`train_ensemble`) trains E
seeds as one batched model, each member exactly as its separate run would (same init, data order, probes).
Full-batch training (`batch="full"`, with `train_size` P): every step uses the same fixed P training samples, so
the run is deterministic given (seed, data_seed); the probes are then taken on those P samples, the centred
outputs on the held-out batch are kept at every log step, and (with probes) the residual-stream gradient kernels
of every training step's own backward (`probes.hooks.grad_kernel`; the finite side of `dmft.dynamics`,
docs/dmft-dynamics.md).
Opt-in speed settings, never silent: `precision` tf32 or bf16 (fp32 by default) and `compile` (torch.compile of
the training loss; the probe pass stays eager), checked against the eager loss on the first batch.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from parametrizations.checks import ConfigError, check_bool, check_choice, check_int, check_str
from parametrizations.optim import OptimConfig, build_optimizer, global_lr
from parametrizations.spec import Parametrization, attention_scale, get_preset
from parametrizations.transformer import LWSTransformer, ModelConfig, attention_logits, build_model, is_vision
from probes.experiment.allocator import hand_back_freed_memory, reuse_freed_memory
from probes.experiment.batches import BatchStream
from probes.experiment.data import ImageSplit, Task, default_patch, load_task
from probes.experiment.faults import ENV as FAULT_ENV
from probes.experiment.faults import Fault, fault_for
from probes.experiment.faults import from_env as faults_from_env
from probes.experiment.progress import Progress
from probes.hooks.grad_kernel import StreamGradients
from probes.hooks.recorder import IO_WEIGHTS, MAX_SEED, MAX_STEP, ProbeConfig, ProbeRecorder

PRECISIONS = ("fp32", "tf32", "bf16")  # fp32 is the default of every theory check; the others are opt-in
BATCHES = ("random", "full")  # random minibatches of batch_size, or every step on the whole training set
LOSSES = ("ce", "mse")  # cross-entropy (the project's default) or 0.5 * squared error to one-hot
# RunConfig fields added with full-batch training: left out of `to_dict` while they hold their defaults, so the
# configs (and store hashes) of every run made without them are unchanged
FULL_BATCH_DEFAULTS = {"train_size": None, "batch": "random", "loss": "ce"}
DEVICE_RE = re.compile(r"cpu|cuda|cuda:\d{1,4}|auto")
DEVICE_CHOICES = "cpu, cuda, cuda:N, auto"
MAX_STEPS = MAX_STEP  # 10^8 optimizer steps (the losses buffer is steps x members floats)
MAX_BATCH = 1 << 20
# True: centre="copy" runs the frozen copy's forward every step and at every log step, with no cached f(theta_0)
# (`initial_outputs`); the tests and the bench compare the two paths with it. Not a user option: both give the same
# numbers bit for bit.
FORCE_COPY = False


@dataclass
class RunConfig:
    """Everything that defines one run. Units: steps are optimizer steps; batch_size in samples. patch: side of an
    image patch in pixels; None (the default) takes the task's default (`probes.experiment.data.default_patch`: 2 for digits,
    4 otherwise), so the resolved config always holds a number. seed keys the blocks' initial weights; io_seeds
    says what keys the embedding, positions and readout (`io_seed_of`): 0 (the default) the seed itself, K >= 1
    the io seed `seed mod K`, so the seeds of a sweep form K io groups that share their embedding, positions and
    readout and differ only in their blocks (the paired depth design, `dmft.depth`).
    train_size: train on a fixed subset of this many samples of the training split, chosen by data_seed (image
    tasks; None: the whole split). batch: "random" (minibatches of batch_size drawn with replacement) or "full"
    (every step uses the whole training subset, in a fixed order: the run is deterministic given seed and
    data_seed; needs train_size). loss: "ce" (cross-entropy) or "mse" (0.5 * sum over outputs of the squared
    difference to the one-hot label, mean over samples)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    param: Parametrization = field(default_factory=lambda: get_preset("mup"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 200
    batch_size: int = 32
    seed: int = 0
    io_seeds: int = 0
    data_seed: int = 0
    device: str = "cpu"
    data_path: str | None = None
    patch: int | None = None
    heldout_batch: int = 64
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    precision: str = "fp32"
    compile: bool = False
    train_size: int | None = None
    batch: str = "random"
    loss: str = "ce"

    def __post_init__(self) -> None:
        for name, cls in (
            ("model", ModelConfig),
            ("param", Parametrization),
            ("optim", OptimConfig),
            ("probes", ProbeConfig),
        ):
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, f"must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        check_int("steps", self.steps, 0, MAX_STEPS)  # 0: probes at initialisation only
        check_int("batch_size", self.batch_size, 1, MAX_BATCH)
        check_int("heldout_batch", self.heldout_batch, 1, MAX_BATCH)
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("io_seeds", self.io_seeds, 0, MAX_SEED)
        check_int("data_seed", self.data_seed, 0, MAX_SEED)
        if self.patch is None:
            self.patch = default_patch(self.model.task)
        check_int("patch", self.patch, 1, 1024)
        check_str("device", self.device)
        if not DEVICE_RE.fullmatch(self.device):
            raise ConfigError("device", f"must be one of {DEVICE_CHOICES}, got {self.device!r}")
        if self.data_path is not None:
            if not isinstance(self.data_path, (str, os.PathLike)) or not str(self.data_path):
                raise ConfigError("data_path", f"must be a non-empty path, got {self.data_path!r}")
        check_choice("precision", self.precision, PRECISIONS)
        check_bool("compile", self.compile)
        if self.train_size is not None:
            check_int("train_size", self.train_size, 1, MAX_BATCH)
        check_choice("batch", self.batch, BATCHES)
        check_choice("loss", self.loss, LOSSES)
        if self.batch == "full" and self.train_size is None:
            raise ConfigError("batch", "full needs a training subset: give train_size (--train-size P)")

    @property
    def full_batch(self) -> bool:
        """True when every step trains on the whole fixed training subset (batch "full")."""
        return self.batch == "full"

    def io_seed_of(self, seed: int) -> int:
        """The io seed (the key of the embedding, positions and readout draws) of the run with `seed`: the seed
        itself when io_seeds is 0, else seed mod io_seeds."""
        return int(seed) % self.io_seeds if self.io_seeds else int(seed)

    @property
    def io_seed(self) -> int:
        """This run's io seed, `io_seed_of(seed)`."""
        return self.io_seed_of(self.seed)

    def to_dict(self) -> dict:
        """The config as plain data; the full-batch fields only when they differ from their defaults."""
        rest = {
            k: v
            for k, v in asdict(self).items()
            if k not in ("model", "param", "optim", "probes")
            and not (k in FULL_BATCH_DEFAULTS and v == FULL_BATCH_DEFAULTS[k])
        }
        return {
            "model": self.model.to_dict(),
            "param": self.param.to_dict(),
            "optim": self.optim.to_dict(),
            "probes": self.probes.to_dict(),
            **rest,
        }


@dataclass
class RunResult:
    """Outcome of a run. history: per-step arrays (train_loss per step; heldout_loss, grad_norm at log steps)."""

    config: RunConfig
    status: str  # "ok" or "diverged"
    steps_done: int
    train_loss: list[float]
    log_steps: list[int]
    heldout_loss: list[float]
    grad_norm: list[float]
    lr: float
    wall_s: float
    model: LWSTransformer
    diverged_at: int | None = None
    extra: dict = field(default_factory=dict)


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when present else cpu; 'cpu', 'cuda' or 'cuda:N' -> that device, if torch can use it.
    ConfigError (a ValueError naming `device`) for anything else: another name, an unavailable CUDA, N out of range."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str) or not DEVICE_RE.fullmatch(device):
        raise ConfigError("device", f"must be one of {DEVICE_CHOICES}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                "device",
                f"{device!r} requested but CUDA is not available to this torch ({torch.__version__}); use cpu or auto",
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(
                "device",
                f"{device!r} requested but this machine has {torch.cuda.device_count()} "
                f"CUDA device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})",
            )
    return torch.device(device)


def model_config_for_task(cfg: ModelConfig, task: Task) -> ModelConfig:
    """Copy of cfg with the data-dependent sizes (seq_len, d_in, vocab, classes) taken from the task."""
    if is_vision(task.kind):
        return replace(cfg, task=task.kind, seq_len=task.seq_len, d_in=task.d_in, n_classes=task.n_classes)
    return replace(cfg, task="lm", seq_len=task.seq_len, vocab_size=task.vocab_size)


def centred_outputs(
    model: LWSTransformer, model0: LWSTransformer | None, x: torch.Tensor, f0: torch.Tensor | None = None
) -> torch.Tensor:
    """f(theta) - f(theta_0) on x: (B, C), or (E, B, C) for a seed ensemble (the LM: (..., T, V)). f(theta_0) is
    `f0` when given (looked up, `InitialOutputs`), else model0(x) without gradient, and omitted when both are None."""
    f = model(x)
    if f0 is None and model0 is not None:
        with torch.no_grad():
            f0 = model0(x)
    return f if f0 is None else f - f0


def loss_of(f: torch.Tensor, y: torch.Tensor, loss: str, ensemble: int | None) -> torch.Tensor:
    """The mean loss of outputs f (B, ..., C) or (E, B, ..., C) against labels y (B, ...): cross-entropy (loss
    "ce", nats) or 0.5 * sum over outputs of (f - onehot(y))^2 (loss "mse"); a scalar, or one per member (E,)."""
    C = f.shape[-1]
    target = y if ensemble is None else y.expand(ensemble, *y.shape)
    if loss == "mse":
        per = 0.5 * (f - F.one_hot(target, C).to(f.dtype)).pow(2).sum(-1).reshape(-1)  # (B*...) or (E*B*...)
    else:
        per = F.cross_entropy(f.reshape(-1, C), target.reshape(-1), reduction="none")
    return per.mean() if ensemble is None else per.view(ensemble, -1).mean(1)  # () or (E,)


def centred_loss(
    model: LWSTransformer,
    model0: LWSTransformer | None,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: str = "ce",
    f0: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of f(theta) - f(theta_0) (f(theta_0): `f0` when given, else model0(x), omitted when both are None):
    cross-entropy (loss "ce", nats) or 0.5 * sum over outputs of (f - onehot(y))^2 (loss "mse"), mean over samples;
    a scalar, or one per member (E,) for a seed ensemble (each member's mean loss, so the gradient of their sum is
    each member's own gradient)."""
    return loss_of(centred_outputs(model, model0, x, f0), y, loss, model.ensemble)


@dataclass
class InitialOutputs:
    """f(theta_0) of a run's fixed examples under centre "copy", computed once by the frozen initial model
    (`initial_outputs`) instead of by its forward at every step. `train`: on the full batch (full=True: (P, C)), or
    on every position of the training split ((n_split, C)), with a leading E in a seed ensemble; None when the
    training f(theta_0) is not cached. `heldout`: on the held-out batch ((B_h, C), the LM (B_h, T, V); leading E in
    an ensemble); None when not cached. Same dtype as the model's outputs; on the run's device."""

    train: torch.Tensor | None = None
    heldout: torch.Tensor | None = None
    full: bool = False

    def of_batch(self, index: torch.Tensor | None) -> torch.Tensor | None:
        """f(theta_0) of a training batch: the whole cache for a full batch, else the cached rows at `index`
        (positions in the split, int64 (B,) on the device: `BatchStream.index`; gathered on the device, no host
        sync); None when the training outputs are not cached (the frozen copy's forward then runs)."""
        if self.train is None:
            return None
        if self.full:
            return self.train
        assert index is not None, "a cached training split needs the batch's positions (BatchStream.index)"
        return self.train.index_select(-2, index)  # (B, C) or (E, B, C)


def caches_training_split(cfg: RunConfig, split: object) -> bool:
    """Whether a random-batch run with centre "copy" caches f(theta_0) of its whole training split: the split is
    finite (an image split: digits, vision, CIFAR, or any with train_size) and holds no more samples than the run
    draws (len(split) <= steps * batch_size).

    The rule: the cache costs one no-grad forward per sample of the split, once, at init; the frozen copy costs one
    per sample drawn, steps * batch_size in all. So the cache saves forwards exactly when the split is no larger than
    what the run draws (and then saves steps * batch_size - len(split)); otherwise it would cost more than it saves
    (CIFAR-5M's 5M images against a 200-step run of 32: 6400 forwards). Its memory is (E, len(split), C) floats,
    at most steps * batch_size rows (`probes.experiment.memory.centre_cache_bytes`)."""
    return isinstance(split, ImageSplit) and len(split) <= cfg.steps * cfg.batch_size


def split_outputs(
    model0: LWSTransformer, split: ImageSplit, batch_size: int, precision: str, device: torch.device
) -> torch.Tensor:
    """f(theta_0) of every sample of `split`, in position order: (n, C), or (E, n, C) for a seed ensemble.

    Computed in chunks of batch_size samples (bounded memory), under the run's autocast, the last chunk padded by
    wrapping around to a full batch_size: each forward has a training batch's shape, so each row is bit for bit the
    frozen copy's output on any training batch holding that sample (measured on CPU: a row of the same-shape GEMMs
    does not depend on the other rows of its batch, while a forward of another batch size differs at round-off)."""
    n = len(split)
    parts = []
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            pos = np.arange(lo, lo + batch_size) % n  # (B,): wraps past the end, so every chunk has B rows
            x = split.at(pos)[0].to(device)
            with autocast(precision, device):
                parts.append(model0(x)[..., : min(batch_size, n - lo), :])  # (..., rows, C)
    return torch.cat(parts, dim=-2)  # (n, C) or (E, n, C)


def initial_outputs(
    cfg: RunConfig,
    model0: LWSTransformer | None,
    split: object,
    full: tuple[torch.Tensor, torch.Tensor] | None,
    xh: torch.Tensor | None,
    device: torch.device,
) -> InitialOutputs:
    """The cached f(theta_0) of a run (`InitialOutputs`): nothing unless centre is "copy" (model0 given) and
    FORCE_COPY is off; then on the held-out batch `xh` (when given; it is evaluated at step 0 and every log step,
    so one forward never costs more), on the full batch `full` (one forward of the batch every step would run), and
    on the training `split` where `caches_training_split` says so. Call it inside the run's `matmul_precision`:
    each forward is the one the copy would run (the training ones under the run's autocast, the held-out one not)."""
    if model0 is None or FORCE_COPY:
        return InitialOutputs()
    with torch.no_grad():
        heldout = model0(xh) if xh is not None else None
        train, is_full = None, full is not None
        if full is not None:
            with autocast(cfg.precision, device):
                train = model0(full[0])  # (P, C) or (E, P, C)
        elif caches_training_split(cfg, split):
            assert isinstance(split, ImageSplit)
            train = split_outputs(model0, split, cfg.batch_size, cfg.precision, device)
    return InitialOutputs(train, heldout, is_full)


def loss_units(loss: str) -> str:
    """Units of a loss value: nats for cross-entropy, 1 for the squared error."""
    return "nats" if loss == "ce" else "1"


def training_data(cfg: RunConfig, task: Task, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fixed training subset of a full-batch run, (x (P, S, D_in), y (P,)) on `device`: `train_size` distinct
    samples of the training split chosen by data_seed (`Split.fixed`); None for a run with random batches."""
    if not cfg.full_batch:
        return None
    x, y = task.train.fixed(cfg.train_size, seed=cfg.data_seed)
    return x.to(device), y.to(device)


def full_batch_arrays(cfg: RunConfig) -> dict:
    """What a full-batch run trains and tests on, as numpy arrays (for `dmft.dynamics`, which builds no model):
    {"x_train" (P, S, D_in), "y_train" (P,), "x_test" (heldout_batch, S, D_in), "y_test", "n_classes", "seq_len",
    "model": the ModelConfig with the task's sizes}: the same samples `train` uses (the training subset chosen by
    data_seed, the held-out batch)."""
    task = load_task(cfg.model.task, cfg.data_path, seq_len=cfg.model.seq_len, patch=cfg.patch, seed=cfg.data_seed)
    if not isinstance(task.train, ImageSplit) or cfg.train_size is None:
        raise ConfigError("train_size", "needs an image task (vision or digits) and a training subset size")
    x, y = task.train.fixed(cfg.train_size, seed=cfg.data_seed)
    xh, yh = task.heldout.fixed(cfg.heldout_batch, seed=cfg.data_seed)
    return {
        "x_train": x.numpy(),
        "y_train": y.numpy(),
        "x_test": xh.numpy(),
        "y_test": yh.numpy(),
        "n_classes": int(task.n_classes),
        "seq_len": int(task.seq_len),
        "model": model_config_for_task(cfg.model, task),
    }


def training_split(cfg: RunConfig, task: Task):
    """The split random batches are drawn from: the task's training split, or with train_size the fixed subset of
    that many samples (the same samples a full-batch run trains on)."""
    if cfg.train_size is None:
        return task.train
    if not isinstance(task.train, ImageSplit):
        raise ConfigError("train_size", f"needs an image task (vision or digits), not {task.kind}")
    return task.train.subset(cfg.train_size, cfg.data_seed)


@contextlib.contextmanager
def matmul_precision(precision: str, device: torch.device):
    """Set the matmul precision for the run and restore it after: fp32 (TF32 explicitly off, the default for the
    theory checks), tf32 (CUDA only). bf16 is an autocast of the training forward (see `autocast`)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "tf32" and device.type != "cuda":
        raise ValueError("precision tf32 needs a CUDA device (--device cuda)")
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def autocast(precision: str, device: torch.device):
    """The context of the training forward: bf16 autocast when asked for, else nothing."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_attention_scale(model: LWSTransformer, device: torch.device) -> None:
    """Assert that fused attention (SDPA, as training calls it) uses the configured scale N^-alpha_A of every
    block: its output on random q, k, v must equal softmax(N^-alpha_A q k^T) v from the explicit path.
    RuntimeError otherwise (a silently replaced scale, e.g. SDPA's default N^-1/2, changes the limit)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    for i, blk in enumerate(model.blocks):
        assert blk.attn_scale == attention_scale(model.p, model.cfg.N), f"block {i}: attn_scale is not N^-alpha_A"
        q, k, v = (torch.randn(1, 2, 8, blk.N, generator=g).to(device) for _ in range(3))  # (1, 2, S=8, N)
        fused = F.scaled_dot_product_attention(q, k, v, is_causal=blk.causal, scale=blk.attn_scale)
        explicit = torch.softmax(attention_logits(q, k, blk.attn_scale, blk.causal), dim=-1) @ v
        err = ((fused - explicit).norm() / explicit.norm()).item()
        if not err < 1e-4:
            raise RuntimeError(
                f"block {i}: fused attention does not use the scale N^-alpha_A = {blk.attn_scale:.6g} "
                f"(relative difference {err:.2e})"
            )


def setup(
    cfg: RunConfig, seeds: list[int] | None = None
) -> tuple[RunConfig, Task, LWSTransformer, LWSTransformer | None, torch.device]:
    """Load the task, build the model (a seed ensemble when `seeds` is given) and its frozen initial copy;
    returns (cfg with task sizes, task, model, model0, device)."""
    task = load_task(cfg.model.task, cfg.data_path, seq_len=cfg.model.seq_len, patch=cfg.patch, seed=cfg.data_seed)
    cfg = replace(cfg, model=model_config_for_task(cfg.model, task))
    device = resolve_device(cfg.device)
    if seeds is None:
        model = build_model(cfg.model, cfg.param, cfg.optim.name, cfg.seed, device, io_seed=cfg.io_seed)
    else:
        model = build_model(
            cfg.model,
            cfg.param,
            cfg.optim.name,
            seeds,
            device,
            ensemble=len(seeds),
            io_seed=[cfg.io_seed_of(s) for s in seeds],
        )
    model0 = None
    if cfg.param.centre == "copy":
        model0 = copy.deepcopy(model).requires_grad_(False).eval()
    return cfg, task, model, model0, device


def train(cfg: RunConfig, progress: bool = False, on_log: Callable[[int, TrainState], None] | None = None) -> RunResult:
    """Train one model. At step 0 and every probe step (cfg.probes schedule) the held-out loss is logged, the
    probe recorder (if cfg.probes.enabled) records, and `on_log(step, state)` is called.

    Returns a RunResult (the recorder in result.extra["recorder"]); a NaN/inf training or held-out loss, or a
    probe statistic that must be finite turning NaN/inf (`nonfinite_probes`), stops the run with status
    "diverged" (never an exception): `diverged_at` is the optimizer step t whose weights gave the first
    non-finite value, extra["diverged_on"] says which (training loss, held-out loss, probes (names)), and the
    result keeps what was recorded before log step t (nothing of it). The test hook DMFT_PROBE_INJECT_NONFINITE
    (`probes.experiment.faults`) can make chosen runs diverge at a chosen step by construction.
    """
    return _train(cfg, None, progress, on_log)[0]


def train_ensemble(cfg: RunConfig, seeds: list[int], progress: bool = False) -> list[RunResult]:
    """Train len(seeds) seeds of one configuration as one batched model (a seed ensemble); returns one RunResult
    per seed, equal (to float tolerance) to `train(replace(cfg, seed=s))`: the same initialisation, data order,
    losses and probes. A member whose loss or probes turn NaN/inf stops there (status "diverged") as a separate
    run would; the others go on."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"an ensemble needs distinct seeds, got {list(seeds)}")
    return _train(cfg, [int(s) for s in seeds], progress, None)


def _train(
    cfg: RunConfig, seeds: list[int] | None, progress: bool, on_log: Callable[[int, TrainState], None] | None
) -> list[RunResult]:
    """The training loop of one model (seeds None) or of a seed ensemble; one RunResult per member."""
    faults = faults_from_env()  # the test hook (probes.experiment.faults); [] unless the variable is set
    reuse_freed_memory()  # large activations reused step to step, not page-faulted in afresh (allocator.py)
    torch.manual_seed(cfg.seed if seeds is None else seeds[0])
    cfg, task, model, model0, device = setup(cfg, seeds)
    members = [cfg.seed] if seeds is None else seeds
    E = len(members)
    injected = injected_faults(faults, cfg.model, members)
    nan_at: dict[int, list[int]] = {}  # step -> members whose losses of that step turn NaN (the hook)
    for e, fault in enumerate(injected):
        if fault is not None:
            nan_at.setdefault(fault.step, []).append(e)
    check_attention_scale(model, device)
    opt = build_optimizer(model, cfg.param, cfg.optim)
    lr = global_lr(cfg.param, cfg.optim, cfg.model.d_model, cfg.model.L)
    full = training_data(cfg, task, device)  # (x, y) of a full-batch run, else None
    split = training_split(cfg, task) if full is None else None
    if full is None:
        gen = torch.Generator().manual_seed(cfg.data_seed + 1)
        batches = BatchStream(split, cfg.batch_size, gen, device, chunk=max(1, min(256, cfg.steps)))
    xh, yh = (t.to(device) for t in task.heldout.fixed(cfg.heldout_batch, seed=cfg.data_seed))
    state = TrainState(model, model0, task, device)
    recorder = None
    if cfg.probes.enabled:
        # full batch: the probes (kernels, outputs) are taken on the training set itself
        x_probe = (
            full[0]
            if full is not None
            else task.heldout.fixed(cfg.probes.n_samples, seed=cfg.probes.seed)[0].to(device)
        )
        recorder = ProbeRecorder(model, x_probe, cfg.probes, model0)
    # full batch with probes: the gradient kernels of every training step, from its own backward (kernel_grad)
    grads = StreamGradients(model, cfg.param.gamma0) if full is not None and recorder is not None else None
    log_at = set(cfg.probes.steps(cfg.steps))

    def loss_fn(
        m: LWSTransformer, m0: LWSTransformer | None, x: torch.Tensor, y: torch.Tensor, f0: torch.Tensor | None
    ) -> torch.Tensor:
        return centred_loss(m, m0, x, y, cfg.loss, f0)

    if cfg.compile:
        loss_fn = torch.compile(loss_fn)  # the probe pass stays outside the compiled region
    test_out: list[list[np.ndarray]] = [[] for _ in members]  # full batch: f - f0 on the held-out batch
    kernel_grad: list[list[np.ndarray]] = [[] for _ in members]  # full batch: (L+1, P, P) per train step
    pending: list[torch.Tensor] = []  # gradient kernels (E, L+1, P, P) not yet logged

    losses = torch.empty(cfg.steps, E, device=device)
    train_loss: list[list[float]] = [[] for _ in members]
    log_steps: list[list[int]] = [[] for _ in members]
    heldout: list[list[float]] = [[] for _ in members]
    gnorms: list[list[float]] = [[] for _ in members]
    status, diverged_at, diverged_on = ["ok"] * E, [None] * E, [""] * E
    fired: list[str | None] = [None] * E  # the injected rule that stopped a member
    steps_done, n_probes = [0] * E, [0] * E
    alive = list(range(E))
    logged = 0  # train steps already moved to the host
    t0 = time.perf_counter()

    def diverge(e: int, at: int, step: int, why: str) -> None:
        """Member e stops: diverged at optimizer step `at` (found at log step `step`) because `why` is not finite."""
        fault = injected[e]
        if fault is not None and at == fault.step:  # the NaN the test hook put there: say so
            why, fired[e] = f"{why} (injected by {FAULT_ENV}={fault.text})", fault.text
        status[e], diverged_at[e], diverged_on[e], steps_done[e] = "diverged", at, why, step
        alive.remove(e)

    def log(step: int, gnorm: torch.Tensor | None) -> bool:
        """Record held-out losses and call the probes; returns False when every member has diverged.

        A member diverges at step t when the training loss of train_step t (the loss of the weights after t
        updates), the held-out loss at log step t or a probe statistic at log step t (`nonfinite_probes`) is
        NaN/inf; it keeps what it recorded before and nothing of log step t."""
        nonlocal logged
        with torch.no_grad():
            fh = centred_outputs(model, model0, xh, cached.heldout)  # (B, C) or (E, B, C)
            hl = loss_of(fh, yh, cfg.loss, model.ensemble).reshape(-1)  # (E,)
        vals = torch.stack([hl, gnorm if gnorm is not None else torch.zeros(E, device=device)])  # (2, E)
        chunk = losses[logged:step].cpu().numpy()  # (k, E): one transfer per log step
        kchunk = torch.stack(pending).cpu().numpy() if pending else None  # (k, E, L+1, P, P)
        pending.clear()
        hl_f, gn_f = vals.cpu().numpy()
        fh_host = fh.float().reshape(E, *fh.shape[-2:]).cpu().numpy() if full is not None else None
        if nan_at and step in nan_at:  # the test hook: these weights' held-out loss
            hl_f = hl_f.copy()
            hl_f[nan_at[step]] = float("nan")
        first = logged
        logged = step
        fresh = []  # alive members with finite losses here
        for e in list(alive):
            ce = chunk[:, e].tolist()
            train_loss[e].extend(ce)
            if kchunk is not None:
                kernel_grad[e].extend(kchunk[:, e])
            bad = [i for i, v in enumerate(ce) if not math.isfinite(v)]
            if bad:
                diverge(e, first + bad[0], step, "training loss")
            elif not math.isfinite(hl_f[e]):
                diverge(e, step, step, "held-out loss")
            else:
                fresh.append(e)
        if recorder is not None and fresh:
            recorder.record(step, model)
            bad_probes = nonfinite_probes(recorder.records[-1], recorder.heads, cfg.param.centre)
            for e in fresh:
                if bad_probes[e]:
                    diverge(e, step, step, "probes (" + ", ".join(bad_probes[e]) + ")")
            if seeds is None and not alive:  # a single run keeps no record of this step
                recorder.steps.pop()
                recorder.records.pop()
        for e in fresh:
            if e not in alive:
                continue
            log_steps[e].append(step)
            heldout[e].append(float(hl_f[e]))
            if fh_host is not None:
                test_out[e].append(fh_host[e])
            gnorms[e].append(float(gn_f[e]))
            steps_done[e] = step
            if recorder is not None:
                n_probes[e] = len(recorder.steps)
        if not alive:
            return False
        if on_log is not None:
            on_log(step, state)
        return True

    bar = _progress(progress, cfg.steps)
    hooks = grads.attached() if grads is not None else contextlib.nullcontext()
    with matmul_precision(cfg.precision, device):
        cached = initial_outputs(cfg, model0, split, full, xh, device)  # f(theta_0) looked up where data are finite
    with matmul_precision(cfg.precision, device), hooks:
        log(0, None)
        for step in range(cfg.steps):
            x, y = full if full is not None else batches.next()
            f0 = cached.of_batch(None if full is not None else batches.index)  # None: model0's forward runs
            with autocast(cfg.precision, device):
                loss = loss_fn(model, model0, x, y, f0)
            if step == 0 and cfg.compile:
                check_compiled(loss, model, model0, x, y, cfg.precision, device, cfg.loss, f0)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            if grads is not None:
                pending.append(grads.kernels())  # (E, L+1, P, P), stays on the device
            gnorm = None
            if step + 1 in log_at:  # gradient norms at log steps only; no work on the other steps
                gnorm = torch.sqrt(
                    sum(
                        member_sq_norm(p.grad.detach(), model.ensemble)
                        for p in model.parameters()
                        if p.grad is not None
                    )
                )  # (E,)
            opt.step()
            model.after_step()  # nGPT renormalises its matrices; a no-op for the other variants
            losses[step] = loss.detach().float().reshape(-1)
            if nan_at and step in nan_at:  # the test hook: this step's training loss
                losses[step, nan_at[step]] = float("nan")
            if bar is not None:
                bar.advance(1)
            if step + 1 in log_at:
                if not log(step + 1, gnorm):
                    break
                if bar is not None:
                    first = alive[0]
                    bar.set_info(f"loss={train_loss[first][-1]:.4f} heldout={heldout[first][-1]:.4f}")
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - t0
    results = []
    for e, seed in enumerate(members):
        single = model if seeds is None else model.member(e)
        rec = recorder if recorder is None or seeds is None else recorder.member(e, n_probes[e])
        extra = {"recorder": rec, "ensemble": E if seeds is not None else 0, "diverged_on": diverged_on[e]}
        if full is not None:
            C = int(cfg.model.n_classes)
            extra["full_batch"] = {
                "test_outputs": np.asarray(test_out[e]).reshape(-1, len(yh), C),
                "test_labels": yh.cpu().numpy(),
                "train_labels": full[1].cpu().numpy(),
            }
            if grads is not None:
                P = len(full[1])
                extra["full_batch"]["kernel_grad"] = np.asarray(kernel_grad[e], dtype=np.float32).reshape(
                    -1, cfg.model.L + 1, P, P
                )  # (train_step, depth, P, P)
        if fired[e] is not None:
            extra["injected_fault"] = fired[e]
        results.append(
            RunResult(
                replace(cfg, seed=seed),
                status[e],
                steps_done[e],
                train_loss[e],
                log_steps[e],
                heldout[e],
                gnorms[e],
                lr,
                wall,
                single,
                diverged_at[e],
                extra=extra,
            )
        )
    hand_back_freed_memory()  # the free heap back to the system: free_bytes reads the same after a run
    return results


def injected_faults(faults: list[Fault], model: ModelConfig, members: list[int]) -> list[Fault | None]:
    """Per member (its seed in `members`), the rule of the test hook `DMFT_PROBE_INJECT_NONFINITE` that fires for
    it (`probes.experiment.faults.fault_for` on its N, H, L and seed), or None; all None when there are no rules."""
    if not faults:
        return [None] * len(members)
    return [fault_for(faults, {"N": model.N, "H": model.H, "L": model.L, "seed": int(s)}) for s in members]


def nonfinite_probes(record: dict[str, np.ndarray], heads: list[int], centre: str) -> list[list[str]]:
    """Per member, the names of the probe statistics of one record ({name: (E, ...)}, `ProbeRecorder.record`)
    that hold a NaN/inf where they must be finite. Allowed to be NaN: the variances over heads of a layer with
    one head (`*_var_heads`), `attn_raw` past a layer's heads (padding), and the readout's `io_movement` under
    centre "zero_readout" (its W(0) is zero). Everything else (kernels, h_rms, coord_rms, io_rms, weight
    movement, the means over heads, ...) must be finite."""
    heads = np.asarray(heads)
    E = next(iter(record.values())).shape[0] if record else 0
    bad: list[list[str]] = [[] for _ in range(E)]
    for name, a in record.items():
        if name.endswith("_var_heads"):  # (E, L): NaN for a one-head layer
            a = a[:, heads > 1]
        elif name == "attn_raw":  # (E, L, point, H_max): NaN past the heads
            valid = np.arange(a.shape[-1])[None, :] < heads[:, None]  # (L, H_max)
            a = np.moveaxis(a, 2, 3)[:, valid]  # (E, valid (layer, head), point)
        elif name == "io_movement" and centre == "zero_readout":  # (E, io): ||W(0)|| = 0 for the readout
            a = a[:, [i for i, w in enumerate(IO_WEIGHTS) if w != "readout"]]
        finite = np.isfinite(a.reshape(E, -1)).all(axis=1)
        for e in np.flatnonzero(~finite):
            bad[e].append(name)
    return bad


def member_sq_norm(t: torch.Tensor, ensemble: int | None) -> torch.Tensor:
    """Squared Frobenius norm of t per member: (E,) in an ensemble (leading dim), else (1,)."""
    return t.pow(2).sum().reshape(1) if ensemble is None else t.pow(2).flatten(1).sum(1)


def check_compiled(
    loss: torch.Tensor,
    model: LWSTransformer,
    model0: LWSTransformer | None,
    x: torch.Tensor,
    y: torch.Tensor,
    precision: str,
    device: torch.device,
    kind: str = "ce",
    f0: torch.Tensor | None = None,
) -> None:
    """RuntimeError unless the compiled step's loss equals the eager one on the first batch (relative 1e-4 in
    float32, 1e-2 under bf16): torch.compile must not change the function (e.g. the attention scale)."""
    with torch.no_grad(), autocast(precision, device):
        eager = centred_loss(model, model0, x, y, kind, f0)
    err = ((loss.detach() - eager).abs().max() / eager.abs().max()).item()
    tol = 1e-2 if precision == "bf16" else 1e-4
    if not err <= tol:
        raise RuntimeError(f"torch.compile changed the training loss on the first batch (relative {err:.2e} > {tol})")


@dataclass
class TrainState:
    """What a probe sees at a log step: the live model, the frozen initial model, the task and the device."""

    model: LWSTransformer
    model0: LWSTransformer | None
    task: Task
    device: torch.device


def _progress(enabled: bool, total: int) -> Progress | None:
    """The training bar over `total` steps on stderr (`probes.experiment.progress`: elapsed time and ETA; shown on
    a terminal or when DMFT_PROBE_PROGRESS=1), or None when `enabled` is False or it would not show."""
    bar = Progress("training", total, unit="steps", enabled=None if enabled else False)
    return bar if bar.shown else None

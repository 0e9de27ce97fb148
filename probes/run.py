"""The probed training run: device-agnostic, seeded, centred output, held-out loss, divergence check.

Training objective (paper Sec. 2; official `shift_fn`): cross-entropy of f(theta_t) - f(theta_0), where the
readout multiplier already carries 1/gamma0. f(theta_0) comes from a frozen copy of the initial model
(centre="copy"), from a zero-initialised readout (centre="zero_readout"), or is not removed (centre="none", SP).

Losses accumulate on the device and leave it once per log step (no host sync per step).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import torch
import torch.nn.functional as F

from parametrizations.optim import OptimConfig, build_optimizer, global_lr
from parametrizations.spec import Parametrization, get_preset
from parametrizations.transformer import LWSTransformer, ModelConfig, build_model

from .data import Task, load_task
from .recorder import ProbeConfig, ProbeRecorder


@dataclass
class RunConfig:
    """Everything that defines one run. Units: steps are optimizer steps; batch_size in samples."""

    model: ModelConfig = field(default_factory=ModelConfig)
    param: Parametrization = field(default_factory=lambda: get_preset("mup"))
    optim: OptimConfig = field(default_factory=OptimConfig)
    steps: int = 200
    batch_size: int = 32
    seed: int = 0
    data_seed: int = 0
    device: str = "cpu"
    data_path: str | None = None
    patch: int = 4
    heldout_batch: int = 64
    probes: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        for name in ("batch_size", "heldout_batch"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if int(self.steps) < 0:
            raise ValueError(f"steps must be >= 0 (0: probes at initialisation only), got {self.steps}")

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "param": self.param.to_dict(), "optim": self.optim.to_dict(),
                "probes": self.probes.to_dict(),
                **{k: v for k, v in asdict(self).items() if k not in ("model", "param", "optim", "probes")}}


@dataclass
class RunResult:
    """Outcome of a run. history: per-step arrays (train_loss per step; heldout_loss, grad_norm at log steps)."""

    config: RunConfig
    status: str                         # "ok" or "diverged"
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
    """'auto' -> cuda when present else cpu; otherwise the named device (ValueError if unavailable)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return dev


def model_config_for_task(cfg: ModelConfig, task: Task) -> ModelConfig:
    """Copy of cfg with the data-dependent sizes (seq_len, d_in, vocab, classes) taken from the task."""
    if task.kind == "vision":
        return replace(cfg, task="vision", seq_len=task.seq_len, d_in=task.d_in, n_classes=task.n_classes)
    return replace(cfg, task="lm", seq_len=task.seq_len, vocab_size=task.vocab_size)


def centred_loss(model: LWSTransformer, model0: LWSTransformer | None, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of f(theta) - f(theta_0) (f(theta_0) omitted when model0 is None)."""
    f = model(x)
    if model0 is not None:
        with torch.no_grad():
            f0 = model0(x)
        f = f - f0
    return F.cross_entropy(f.reshape(-1, f.shape[-1]), y.reshape(-1))


def setup(cfg: RunConfig) -> tuple[RunConfig, Task, LWSTransformer, LWSTransformer | None, torch.device]:
    """Load the task, build the model and its frozen initial copy; returns (cfg with task sizes, task, model, model0, device)."""
    task = load_task(cfg.model.task, cfg.data_path, seq_len=cfg.model.seq_len, patch=cfg.patch, seed=cfg.data_seed)
    cfg = replace(cfg, model=model_config_for_task(cfg.model, task))
    device = resolve_device(cfg.device)
    model = build_model(cfg.model, cfg.param, cfg.optim.name, cfg.seed, device)
    model0 = None
    if cfg.param.centre == "copy":
        model0 = copy.deepcopy(model).requires_grad_(False).eval()
    return cfg, task, model, model0, device


def train(cfg: RunConfig, progress: bool = False,
          on_log: Callable[[int, "TrainState"], None] | None = None) -> RunResult:
    """Train one model. At step 0 and every probe step (cfg.probes schedule) the held-out loss is logged, the
    probe recorder (if cfg.probes.enabled) records, and `on_log(step, state)` is called.

    Returns a RunResult (the recorder in result.extra["recorder"]); a NaN/inf loss stops the run with status
    "diverged" (never an exception).
    """
    torch.manual_seed(cfg.seed)
    cfg, task, model, model0, device = setup(cfg)
    opt = build_optimizer(model, cfg.param, cfg.optim)
    lr = global_lr(cfg.param, cfg.optim, cfg.model.d_model, cfg.model.L)
    gen = torch.Generator().manual_seed(cfg.data_seed + 1)
    xh, yh = (t.to(device) for t in task.heldout.fixed(cfg.heldout_batch, seed=cfg.data_seed))
    state = TrainState(model, model0, task, device)
    recorder = None
    if cfg.probes.enabled:
        x_probe = task.heldout.fixed(cfg.probes.n_samples, seed=cfg.probes.seed)[0].to(device)
        recorder = ProbeRecorder(model, x_probe, cfg.probes, model0)
    log_at = set(cfg.probes.steps(cfg.steps))

    losses = torch.empty(cfg.steps, device=device)
    log_steps, heldout, gnorms = [], [], []
    train_loss: list[float] = []
    status, diverged_at, done = "ok", None, 0
    t0 = time.perf_counter()

    def log(step: int, gnorm: torch.Tensor | None) -> bool:
        """Record held-out loss and call the probes; returns False when the run has diverged."""
        nonlocal status, diverged_at
        with torch.no_grad():
            hl = centred_loss(model, model0, xh, yh)
        vals = torch.stack([hl, gnorm if gnorm is not None else torch.zeros((), device=device)])
        chunk = losses[len(train_loss):step].cpu().tolist()          # one transfer per log step
        hl_f, gn_f = vals.cpu().tolist()
        train_loss.extend(chunk)
        bad = [i for i, v in enumerate(chunk) if not math.isfinite(v)]
        if bad or not math.isfinite(hl_f):
            status = "diverged"
            diverged_at = len(train_loss) - len(chunk) + (bad[0] if bad else len(chunk) - 1)
            return False
        log_steps.append(step)
        heldout.append(hl_f)
        gnorms.append(gn_f)
        if recorder is not None:
            recorder.record(step, model)
        if on_log is not None:
            on_log(step, state)
        return True

    bar = _progress(progress, cfg.steps)
    log(0, None)
    for step in range(cfg.steps):
        x, y = (t.to(device) for t in task.train.batch(cfg.batch_size, gen))
        loss = centred_loss(model, model0, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = None
        if step + 1 in log_at:   # the gradient norm is recorded at log steps only; no work on the other steps
            gnorm = torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in model.parameters() if p.grad is not None))
        opt.step()
        losses[step] = loss.detach()
        done = step + 1
        if bar is not None:
            bar.update(1)
        if done in log_at:
            if not log(done, gnorm):
                break
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss[-1]:.4f}", heldout=f"{heldout[-1]:.4f}")
    if bar is not None:
        bar.close()
    return RunResult(cfg, status, done, train_loss, log_steps, heldout, gnorms, lr,
                     time.perf_counter() - t0, model, diverged_at, extra={"recorder": recorder})


@dataclass
class TrainState:
    """What a probe sees at a log step: the live model, the frozen initial model, the task and the device."""

    model: LWSTransformer
    model0: LWSTransformer | None
    task: Task
    device: torch.device


def _progress(enabled: bool, total: int):
    """A tqdm-like progress bar on stderr (rich), or None."""
    if not enabled:
        return None
    return _RichBar(total)


class _RichBar:
    def __init__(self, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                           TextColumn("{task.fields[info]}"), transient=False)
        self._p.start()
        self._t = self._p.add_task("train", total=total, info="")

    def update(self, n: int) -> None:
        self._p.advance(self._t, n)

    def set_postfix(self, **kw: str) -> None:
        self._p.update(self._t, info=" ".join(f"{k}={v}" for k, v in kw.items()))

    def close(self) -> None:
        self._p.stop()
        if not self._p.console.is_terminal:
            self._p.console.print()

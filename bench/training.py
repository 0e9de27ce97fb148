"""The benchmark behind `dmft-probe bench`: where the training time goes, as ratios measured side by side.

Every figure is a ratio A / B of two variants measured in ONE process, interleaved (A, B, A, B, ...), each the
median of `repeats` measurements, at three model sizes (on top of `probes.experiment.config.make_run_config()`:
H = 4, L = 2, byte-level LM, seq_len 64, batch 32, muP under Adam):

    size        N    d_model   task
    default     16   64        byte-level LM (the default run)
    d256        64   256       byte-level LM
    vision-d32  8    32        synthetic vision, 16 patches (the coordinate-check and init-sweep workload)

Rows (A vs B; units; goal on the ratio A / B):
  1. ensemble vs sequential: E seeds trained as one batched model (`probes.experiment.ensemble.train_ensemble`) against
     E sequential `probes.experiment.run.train` runs, probes off; seed-steps per second (whole calls, setup included);
     goal >= 3.
  2. ours vs plain PyTorch: time per training step of our parametrized model and optimizer (the same work as one
     step of `probes.experiment.run.train`) against a plain PyTorch transformer of the same shapes under a single-group
     `torch.optim.Adam` on the same batches; ms per step, after 3 warm-up steps; once with the default centring
     (centre="copy": f(theta_0) as `train` gets it, looked up from a cache on a finite training split (vision),
     one extra no-grad forward of the frozen initial model per step on the LM stream) and once with centre="none";
     goal <= 1.10.
  3. probes on vs off: a whole `train` call with probes every 10 steps on a 32-sample probe batch against the
     same call with probes off; seconds per run; goal <= 1.05.
  4. achieved FLOP/s vs matmul peak: FLOPs of one training step of ours (forward, centring forward, backward;
     counted by `torch.utils.flop_counter.FlopCounterMode`) over the measured step time of row 2, against the
     FLOP/s of a large float32 matmul on the same device; informational (no goal).
  5. head-statistics kernel vs materialising (CUDA only): time and peak memory of
     `probes.hooks.head_stats.head_stats(..., backend="triton")` against `backend="torch"` at the paper's sizes
     (B = 8, H = 128, S = 256, N = 64); informational (no goal).
  6. RMSNorm torch vs fused (CUDA only): forward + backward (dx and the gain's gradient) of
     `parametrizations.rmsnorm.rms_norm(..., backend="torch")` (the naive OpenELM-style chain of kernels) against
     `backend="triton"` (the fused kernels) on float32 x of 8192 rows (B S) x D = 1280 (OpenELM-270M's width) with a
     (D,) gain; ms per call; the ratio torch / fused is the speed-up; informational (no goal).
  7. time to verdict, seeds ensembled vs sequential: one size of one `dmft-probe reproduce` job, all its seeds,
     trained and written as the sweep's worker does it (`probes.grid.sweep.run_unit` on the units the sweep plans,
     `sweep_point_units`), with ensemble mode "auto" (seed ensembles) against "off" (one seed after another); the
     cpu preset's N-mup job at N = 16 (12 seeds x 200 steps, probes every 25; --quick: the smoke preset's at N = 4);
     seconds per size, and seconds per seed-step in the note; at most 2 repeats; informational (no goal).
  8. bf16 MFU at d_model 1024 (CUDA only): achieved FLOP/s of our training step (`training_step_flops` over the
     seconds per step) at N = 64, H = 16, L = 4 (d_model 1024), byte-level LM, seq_len 256, batch 64, precision
     bf16, against the FLOP/s of an 8192 x 8192 bf16 matmul measured in the same process (interleaved); the note
     gives the fraction of the device's nominal dense bf16 peak where known (H100 SXM and H200: 989 TFLOP/s);
     informational (no goal).

Benchmarks are not tests: the pass/miss flags are informational, and shared machines are noisy.
"""

from __future__ import annotations

import math
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from parametrizations.optim import build_optimizer, global_lr
from parametrizations.transformer import LN_EPS, ModelConfig, is_vision
from probes.experiment.batches import BatchStream
from probes.experiment.config import check_fits, make_run_config
from probes.experiment.data import Task, load_task
from probes.experiment.run import (
    RunConfig,
    autocast,
    centred_loss,
    initial_outputs,
    matmul_precision,
    model_config_for_task,
    resolve_device,
    setup,
    train,
)

__all__ = [
    "MAX_ENSEMBLE",
    "MAX_REPEATS",
    "MAX_STEPS",
    "ROW_NAMES",
    "SIZES",
    "BenchRow",
    "Goal",
    "PlainTransformer",
    "available_cpus",
    "bench_config",
    "bf16_matmul_peak_flops",
    "check_bench_options",
    "format_table",
    "matmul_peak_flops",
    "mfu_config",
    "nominal_bf16_peak",
    "ours_stepper",
    "plain_stepper",
    "preset_flops",
    "run_bench",
    "step_flops_estimate",
    "sweep_point_units",
    "time_head_stats",
    "time_rmsnorm",
    "training_step_flops",
]

# Model overrides of each named size on top of make_run_config()'s defaults (N=16, H=4, L=2, LM, seq_len 64).
# "vision-d32" is the workload of coordinate checks and init sweeps: many short runs of a small vision model.
SIZES: dict[str, dict[str, int | str]] = {
    "default": {},
    "d256": {"N": 64, "H": 4},
    "vision-d32": {"N": 8, "H": 4, "task": "vision"},
}
# --quick: one tiny model for every size (tests and smoke runs; the figures mean little at this size).
QUICK_MODEL: dict[str, int] = {"N": 4, "H": 2, "L": 1, "seq_len": 16}
QUICK_RUN: dict[str, int] = {"batch_size": 4, "heldout_batch": 8}

ROW_ENSEMBLE = "ensemble vs sequential"
ROW_PLAIN_COPY = "ours vs plain PyTorch (centre=copy)"
ROW_PLAIN_NONE = "ours vs plain PyTorch (centre=none)"
ROW_PROBES = "probes on vs off"
ROW_FLOPS = "achieved FLOP/s vs matmul peak"
ROW_HEAD_TIME = "head-stats triton vs torch: time"
ROW_HEAD_MEM = "head-stats triton vs torch: peak memory"
ROW_RMSNORM = "rmsnorm torch vs fused triton: fwd+bwd time"
ROW_SWEEP_POINT = "time to verdict: one sweep size, ensembled vs sequential seeds"
ROW_MFU = "bf16 MFU at d_model 1024 (CUDA only)"
ROW_NAMES = (
    ROW_ENSEMBLE,
    ROW_PLAIN_COPY,
    ROW_PLAIN_NONE,
    ROW_PROBES,
    ROW_FLOPS,
    ROW_HEAD_TIME,
    ROW_HEAD_MEM,
    ROW_RMSNORM,
    ROW_SWEEP_POINT,
    ROW_MFU,
)

WARMUP_STEPS = 3  # untimed training steps before every timed chunk (row 2)
PROBE_EVERY = 10  # row 3: probe every 10 steps ...
PROBE_SAMPLES = 32  # ... on a 32-sample probe batch
PROBE_RUN_STEPS = 100  # row 3: steps per run (at least), so 11 probe passes per 100 steps as in a real run
HEAD_STATS_SHAPE = {"B": 8, "H": 128, "S": 256, "N": 64}  # row 5: the paper's sizes
HEAD_STATS_CALLS = 5  # row 5: calls per timed chunk
RMSNORM_SHAPE = {"rows": 8192, "D": 1280}  # row 6: B S rows of OpenELM-270M's width
RMSNORM_CALLS = 20  # row 6: forward + backward calls per timed chunk
# row 7: one size of one job of a `reproduce` preset, all its seeds, as the sweep trains and writes them; --quick
# takes the smoke preset's (toy sizes, 12 steps, 5 seeds)
SWEEP_POINT = {"preset": "cpu", "job": "N-mup", "value": 16}
QUICK_SWEEP_POINT = {"preset": "smoke", "job": "N-mup", "value": 4}
SWEEP_POINT_MAX_REPEATS = 2  # row 7: at most 2 repeats (one repeat of both modes took 105 s on a shared CPU core)
# row 8 (CUDA only): bf16 training step at d_model = N H = 1024 (LM task), against a bf16 matmul of MFU_PEAK_N
MFU_MODEL = {"N": 64, "H": 16, "L": 4, "seq_len": 256}
MFU_BATCH = 64  # sequences per step: 16384 tokens
MFU_STEPS = 10  # timed steps per repeat, after WARMUP_STEPS
MFU_PEAK_N = 8192
# nominal dense bf16 peaks (FLOP/s, no sparsity) of the devices we know, matched on the CUDA device name
NOMINAL_BF16_PEAK = {"H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12, "H200": 989e12}
# Bounds of the options (`dmft-probe bench --help`): the defaults take minutes; these keep a typo from running for
# days or allocating without bound. Threads are bounded by the CPUs this process may use (`available_cpus`).
MAX_STEPS = 10_000  # training steps per timed measurement
MAX_REPEATS = 100  # measurements per variant
MAX_ENSEMBLE = 64  # seeds of the ensemble row (and the memory they need must be free: `check_fits`)


@dataclass(frozen=True)
class Goal:
    """A goal on a ratio: `ratio <op> value` with op "<=" or ">="."""

    op: str
    value: float

    def met(self, ratio: float) -> bool:
        return ratio <= self.value if self.op == "<=" else ratio >= self.value

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass(frozen=True)
class BenchRow:
    """One line of the table. `a` and `b` are the two variants' medians in `units`; ratio = a / b (dimensionless).

    status: "pass" / "miss" (ratio against `goal`), "info" (no goal), "skipped" or "n/a" (no figures; `note`
    says why). a_label / b_label name the variants (e.g. "ensemble", "sequential")."""

    name: str
    size: str
    a_label: str
    b_label: str
    a: float | None
    b: float | None
    units: str
    ratio: float | None
    goal: str
    status: str
    note: str = ""
    a_runs: tuple[float, ...] = ()
    b_runs: tuple[float, ...] = ()

    @property
    def spread(self) -> str:
        """Noise of the measurement: max / min over the repeats of A and of B ("" with fewer than 2 repeats)."""
        if len(self.a_runs) < 2 or len(self.b_runs) < 2 or min(*self.a_runs, *self.b_runs) <= 0:
            return ""
        return f"A x{max(self.a_runs) / min(self.a_runs):.2f}, B x{max(self.b_runs) / min(self.b_runs):.2f}"


def _row(
    name: str,
    size: str,
    labels: tuple[str, str],
    a: list[float] | float,
    b: list[float] | float,
    units: str,
    goal: Goal | None,
    note: str = "",
) -> BenchRow:
    """A measured row from the repeats of A and B (or single values): medians, ratio of medians judged against goal."""
    a_runs = tuple(a) if isinstance(a, list) else (a,)
    b_runs = tuple(b) if isinstance(b, list) else (b,)
    a_med, b_med = statistics.median(a_runs), statistics.median(b_runs)
    ratio = a_med / b_med if b_med > 0 else math.nan
    if goal is None:
        status = "info"
    else:
        status = "pass" if math.isfinite(ratio) and goal.met(ratio) else "miss"
    return BenchRow(
        name,
        size,
        labels[0],
        labels[1],
        a_med,
        b_med,
        units,
        ratio,
        str(goal) if goal else "",
        status,
        note,
        a_runs if len(a_runs) > 1 else (),
        b_runs if len(b_runs) > 1 else (),
    )


def _missing(
    name: str, size: str, labels: tuple[str, str], units: str, goal: Goal | None, status: str, note: str
) -> BenchRow:
    """A row without figures (status "skipped" or "n/a"; note gives the reason)."""
    return BenchRow(name, size, labels[0], labels[1], None, None, units, None, str(goal) if goal else "", status, note)


# ----------------------------------------------------------------------------------------------------------------
# The plain PyTorch baseline
# ----------------------------------------------------------------------------------------------------------------


class PlainBlock(nn.Module):
    """A pre-LN block of the same shapes as `parametrizations.transformer.Block`, in plain PyTorch: bias-free
    nn.Linear, LN without affine (eps 1e-6), fused attention with its default 1/sqrt(N) scale, GELU (tanh), no
    multipliers and no branch scaling."""

    def __init__(self, d: int, H_l: int, N: int, d_ff: int, causal: bool):
        super().__init__()
        self.H, self.N, self.causal = H_l, N, causal
        self.q, self.k, self.v = (nn.Linear(d, H_l * N, bias=False) for _ in range(3))
        self.o = nn.Linear(H_l * N, d, bias=False)
        self.mlp_in, self.mlp_out = nn.Linear(d, d_ff, bias=False), nn.Linear(d_ff, d, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, S, _ = h.shape
        u = F.layer_norm(h, (h.shape[-1],), eps=LN_EPS)
        q, k, v = (lin(u).view(B, S, self.H, self.N).transpose(1, 2) for lin in (self.q, self.k, self.v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, H, S, N)
        h = h + self.o(o.transpose(1, 2).reshape(B, S, self.H * self.N))
        u = F.layer_norm(h, (h.shape[-1],), eps=LN_EPS)
        return h + self.mlp_out(F.gelu(self.mlp_in(u), approximate="tanh"))


class PlainTransformer(nn.Module):
    """The baseline of row 2: the same shapes as `LWSTransformer(cfg, ...)` (same parameter names and shapes,
    per-layer heads and MLP widths from `cfg.shapes()`), PyTorch default initialisation, no multipliers.

    forward(x) returns logits (B, T, vocab_size) for the LM, (B, n_classes) for vision."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        shapes = cfg.shapes()
        if is_vision(cfg.task):
            self.embed: nn.Module = nn.Linear(cfg.d_in, d, bias=False)
        else:
            self.embed = nn.Embedding(cfg.vocab_size, d)
        self.pos = nn.Embedding(cfg.seq_len, d)
        self.blocks = nn.ModuleList(
            PlainBlock(d, H_l, cfg.N, d_ff, causal=cfg.task == "lm") for H_l, d_ff in zip(shapes.heads, shapes.d_ff)
        )
        self.readout = nn.Linear(d, cfg.n_classes if is_vision(cfg.task) else cfg.vocab_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos(torch.arange(x.shape[1], device=x.device))
        for block in self.blocks:
            h = block(h)
        u = F.layer_norm(h, (h.shape[-1],), eps=LN_EPS)
        if is_vision(self.cfg.task):
            u = u.mean(dim=1)
        return self.readout(u)


# ----------------------------------------------------------------------------------------------------------------
# Steppers: one training step each, built once, timed in interleaved chunks
# ----------------------------------------------------------------------------------------------------------------


class _Stepper:
    """A model, its optimizer and train()'s batch stream; `step()` does one training step as `probes.experiment.run.train`
    does it (next batch from a BatchStream, forward under the run's autocast, backward of loss.sum(), optimizer
    step, loss kept on the device; no host sync). Call it inside `matmul_precision(cfg.precision, device)`."""

    def __init__(
        self,
        cfg: RunConfig,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        opt: torch.optim.Optimizer,
        task: Task,
        device: torch.device,
        keep: int = 256,
    ):
        self.cfg, self.model, self.loss_fn, self.opt, self.device = cfg, model, loss_fn, opt, device
        gen = torch.Generator().manual_seed(cfg.data_seed + 1)  # as train(): the same batches for every variant
        self.batches = BatchStream(task.train, cfg.batch_size, gen, device, chunk=max(1, min(256, cfg.steps)))
        self.losses = torch.empty(keep, device=device)  # the last `keep` losses (nats)
        self.i = 0

    def step(self) -> None:
        x, y = self.batches.next()
        with autocast(self.cfg.precision, self.device):
            loss = self.loss_fn(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        if hasattr(self.model, "after_step"):
            self.model.after_step()  # nGPT renormalises, as probes.experiment.run.train does
        self.losses[self.i % len(self.losses)] = loss.detach().float().reshape(())
        self.i += 1


def ours_stepper(cfg: RunConfig) -> _Stepper:
    """Our training step: one step of `probes.experiment.run.train` without its log steps (held-out loss, gradient norm and
    probes every cfg.probes schedule step), built from `setup`, `build_optimizer` and `centred_loss`. Under
    centre="copy" f(theta_0) comes as train() gets it in a run of cfg's sizes and at least the default length
    (RunConfig.steps; cfg.steps here is only the timed chunk): looked up in the cache of the training split where
    train() caches it (`probes.experiment.run.caches_training_split`; the vision sizes: 4096 images, fewer than the
    200 x 32 a default run draws; its one-off filling is not timed), else the frozen copy's forward every step (the
    LM token stream, or every size with `probes.experiment.run.FORCE_COPY` set)."""
    torch.manual_seed(cfg.seed)
    cfg, task, model, model0, device = setup(cfg)
    opt = build_optimizer(model, cfg.param, cfg.optim)
    run_cfg = replace(cfg, steps=max(cfg.steps, RunConfig.steps))  # the run length train()'s cache rule sees
    with matmul_precision(cfg.precision, device):
        cached = initial_outputs(run_cfg, model0, task.train, None, None, device)
    stepper = _Stepper(cfg, model, lambda x, y: centred_loss(model, model0, x, y), opt, task, device)
    stepper.loss_fn = lambda x, y: centred_loss(model, model0, x, y, f0=cached.of_batch(stepper.batches.index))
    return stepper


def plain_stepper(cfg: RunConfig) -> _Stepper:
    """The same step for a `PlainTransformer` of cfg's shapes: plain cross-entropy, single-group torch Adam at the
    same global learning rate and betas, the same batches drawn the same way (train()'s BatchStream over
    task.train.batch's sequence)."""
    torch.manual_seed(cfg.seed)
    task = load_task(cfg.model.task, cfg.data_path, seq_len=cfg.model.seq_len, patch=cfg.patch, seed=cfg.data_seed)
    cfg = replace(cfg, model=model_config_for_task(cfg.model, task))
    device = resolve_device(cfg.device)
    model = PlainTransformer(cfg.model).to(device)
    opt = torch.optim.Adam(
        model.parameters(), lr=global_lr(cfg.param, cfg.optim, cfg.model.d_model, cfg.model.L), betas=cfg.optim.betas
    )

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        f = model(x)
        return F.cross_entropy(f.reshape(-1, f.shape[-1]), y.reshape(-1))

    return _Stepper(cfg, model, loss_fn, opt, task, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(stepper: _Stepper, steps: int, device: torch.device) -> float:
    """Seconds per step of `steps` steps after WARMUP_STEPS untimed ones."""
    for _ in range(WARMUP_STEPS):
        stepper.step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        stepper.step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call (synchronised on CUDA)."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _interleaved(
    fns: dict[str, Callable[[], float]], repeats: int, echo: Callable[[str], None], what: str
) -> dict[str, list[float]]:
    """Call each measurement in turn (A, B, A, B, ...) `repeats` times; returns every value of each."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        for k, fn in fns.items():
            out[k].append(fn())
        echo(f"  {what} repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]:.4g}" for k, v in out.items()))
    return out


# ----------------------------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------------------------


def _cpu_sdpa_flops() -> dict:
    """FlopCounterMode formulas for the CPU flash-attention ops, which torch's registry does not count (the CUDA
    ones it does). Same convention as torch: the full S x S product, causal masking not discounted."""
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    mapping: dict = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):

        def fwd(q, k, v, *args, out_shape=None, **kwargs) -> int:
            return sdpa_flop_count(q, k, v)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):

        def bwd(grad_out, q, k, v, *args, out_shape=None, **kwargs) -> int:
            return sdpa_backward_flop_count(grad_out, q, k, v)

        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return mapping


def training_step_flops(stepper: _Stepper) -> int:
    """FLOPs of one training step (forward, centring forward if any, backward; matmuls and attention as counted by
    FlopCounterMode, the optimizer's elementwise work not counted). Runs one (untimed) step."""
    from torch.utils.flop_counter import FlopCounterMode

    with (
        matmul_precision(stepper.cfg.precision, stepper.device),
        FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_flops()) as counter,
    ):
        stepper.step()
    return int(counter.get_total_flops())


def matmul_peak_flops(device: torch.device, n: int | None = None, repeats: int = 5) -> tuple[list[float], int]:
    """Measured FLOP/s (2 n^3 per product) of an n x n float32 matmul (TF32 off), `repeats` times after 2 warm-ups;
    n defaults to 2048 on CPU and 8192 on CUDA. Returns ([FLOP/s of each repeat], n)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    with matmul_precision("fp32", device):  # true float32 (TF32 off), as the fp32 training runs
        for _ in range(2):
            a @ b
        times = [_time_call(lambda: a @ b, device) for _ in range(repeats)]
    return [2.0 * n**3 / t for t in times], n


def step_flops_estimate(cfg: RunConfig) -> float:
    """FLOPs of one training step of one seed of `cfg`, from its shapes (nothing is built), counted as
    `training_step_flops` counts them (matmuls and attention, FlopCounterMode's convention): per token of the
    batch (B x S), 2 per matmul weight in each forward (two with centre "copy") and 4 in the backward, 2 only for
    the vision embedding (its input needs no gradient); the attention forward 4 B H_l S^2 N per block, its
    backward 2.5 times that; the vision readout acts on the mean over patches (B rows, not B S). Standard
    attention and GeLU MLPs only (ValueError for the variants' blocks)."""
    from probes.experiment.config import effective_config

    m = effective_config(cfg).model
    if m.block_options() != ModelConfig(task=m.task).block_options():
        raise ValueError("step_flops_estimate counts the standard block only")
    fwd = 2 if cfg.param.centre == "copy" else 1  # forwards per step
    B, S, d, N = cfg.batch_size, m.seq_len, m.d_model, m.N
    shapes = m.shapes()
    blocks = sum(4 * d * H_l * N + 2 * d * f for H_l, f in zip(shapes.heads, shapes.d_ff))
    attn = sum(4 * B * H_l * S * S * N for H_l in shapes.heads)
    if is_vision(m.task):
        tokens = (2 * fwd + 4) * B * S * blocks + (2 * fwd + 2) * B * S * m.d_in * d
        readout = (2 * fwd + 4) * B * d * m.n_classes
    else:
        tokens = (2 * fwd + 4) * B * S * (blocks + d * m.vocab_size)
        readout = 0
    return float(tokens + readout + (fwd + 2.5) * attn)


def preset_flops(preset: Any) -> dict[str, float]:
    """FLOPs of every job of a `probes.grid.reproduce.Preset`: per job name, the sum over its sizes of seeds x
    steps (x eta0 values for a learning-rate grid) x `step_flops_estimate`; probes and held-out logs not counted."""
    from probes.grid.reproduce import job_config, job_seeds
    from probes.grid.sweep import value_config

    out = {}
    for job in preset.jobs:
        cfg = job_config(preset, job)
        runs = job_seeds(preset, job) * max(1, len(job.etas)) * cfg.steps
        out[job.name] = runs * sum(step_flops_estimate(value_config(cfg, job.axis, v)) for v in job.values)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Rows
# ----------------------------------------------------------------------------------------------------------------


def bench_config(size: str, device: str, steps: int, quick: bool = False, **probes: Any) -> RunConfig:
    """The run config of a named size (SIZES; QUICK_MODEL for every size when quick) on `device`."""
    if size not in SIZES:
        raise ValueError(f"unknown bench size {size!r}; choose from {', '.join(SIZES)}")
    model = dict(QUICK_MODEL) if quick else dict(SIZES[size])
    run = {"steps": steps, "device": device, **(QUICK_RUN if quick else {})}
    return make_run_config(model=model, run=run, probes={"enabled": False, **probes})


def _describe(cfg: RunConfig) -> str:
    m = cfg.model
    shapes = m.shapes()
    return (
        f"N={m.N} H={m.H} L={m.L} d_model={m.d_model} d_ff={max(shapes.d_ff)} task={m.task} "
        f"seq_len={m.seq_len} batch={cfg.batch_size} param={cfg.param.name} optim={cfg.optim.name}"
    )


def _bench_ensemble(
    cfg: RunConfig, size: str, ensemble: int, repeats: int, device: torch.device, echo: Callable[[str], None]
) -> BenchRow:
    """Row 1: seed-steps per second of train_ensemble(cfg, seeds) against sequential train() calls."""
    labels, units, goal = ("ensemble", "sequential"), "seed-steps/s", Goal(">=", 3.0)
    try:
        from probes.experiment.ensemble import train_ensemble
    except ModuleNotFoundError as e:
        if e.name in ("probes.experiment.ensemble", f"{__package__}.ensemble"):
            return _missing(ROW_ENSEMBLE, size, labels, units, goal, "n/a", "n/a (probes.experiment.ensemble missing)")
        return _missing(
            ROW_ENSEMBLE, size, labels, units, goal, "n/a", f"n/a (probes.experiment.ensemble import failed: {e})"
        )
    except ImportError as e:
        return _missing(
            ROW_ENSEMBLE, size, labels, units, goal, "n/a", f"n/a (probes.experiment.ensemble import failed: {e})"
        )
    seeds = list(range(ensemble))
    seed_steps = ensemble * cfg.steps

    def sequential() -> None:
        for s in seeds:
            train(replace(cfg, seed=s))

    try:
        warm = replace(cfg, steps=min(cfg.steps, WARMUP_STEPS))
        train_ensemble(warm, seeds)  # warm-up: first-call costs (allocator, lazy imports) of both paths
        train(warm)
        runs = _interleaved(
            {
                "ensemble": lambda: seed_steps / _time_call(lambda: train_ensemble(cfg, seeds), device),
                "sequential": lambda: seed_steps / _time_call(sequential, device),
            },
            repeats,
            echo,
            "seed-steps/s",
        )
    except Exception as e:  # a half-finished ensemble must not stop the other rows
        return _missing(
            ROW_ENSEMBLE, size, labels, units, goal, "n/a", f"n/a (train_ensemble failed: {type(e).__name__}: {e})"
        )
    return _row(
        ROW_ENSEMBLE,
        size,
        labels,
        runs["ensemble"],
        runs["sequential"],
        units,
        goal,
        f"E={ensemble} seeds x {cfg.steps} steps, whole calls incl. setup and held-out logs",
    )


def _bench_plain(
    cfg: RunConfig, size: str, steps: int, repeats: int, device: torch.device, echo: Callable[[str], None]
) -> tuple[list[BenchRow], _Stepper, list[float]]:
    """Row 2: ms per step of ours (centre=copy and centre=none) against the plain model, interleaved.
    Returns the two rows, our centre=copy stepper and its seconds per step in each repeat (for row 4)."""
    ours = ours_stepper(cfg)
    ours_none = ours_stepper(replace(cfg, param=cfg.param.with_(centre="none")))
    plain = plain_stepper(cfg)
    with matmul_precision(cfg.precision, device):
        runs = _interleaved(
            {
                "ours(copy)": lambda: 1e3 * _time_steps(ours, steps, device),
                "ours(none)": lambda: 1e3 * _time_steps(ours_none, steps, device),
                "plain": lambda: 1e3 * _time_steps(plain, steps, device),
            },
            repeats,
            echo,
            "ms/step",
        )
    note = f"{steps} steps after {WARMUP_STEPS} warm-up"
    goal = Goal("<=", 1.10)
    rows = [
        _row(
            ROW_PLAIN_COPY,
            size,
            ("ours", "plain"),
            runs["ours(copy)"],
            runs["plain"],
            "ms/step",
            goal,
            note + "; f(theta_0) as train() gets it: cached on a finite split, else the frozen copy's forward",
        ),
        _row(
            ROW_PLAIN_NONE,
            size,
            ("ours", "plain"),
            runs["ours(none)"],
            runs["plain"],
            "ms/step",
            goal,
            note + f"; param {cfg.param.name} with centre='none'",
        ),
    ]
    return rows, ours, [t / 1e3 for t in runs["ours(copy)"]]


def _bench_probes(
    cfg: RunConfig, size: str, repeats: int, device: torch.device, echo: Callable[[str], None], quick: bool
) -> BenchRow:
    """Row 3: seconds per whole train() call with probes every PROBE_EVERY steps against probes off."""
    n = QUICK_RUN["heldout_batch"] if quick else PROBE_SAMPLES
    if not quick:  # enough steps that the probe schedule is the real one (every 10 steps), not 0 and the end
        cfg = replace(cfg, steps=max(cfg.steps, PROBE_RUN_STEPS))
    on = replace(cfg, probes=replace(cfg.probes, enabled=True, schedule="every", every=PROBE_EVERY, n_samples=n))
    off = replace(cfg, probes=replace(cfg.probes, enabled=False))
    warm = min(cfg.steps, WARMUP_STEPS)
    train(replace(on, steps=warm))  # warm-up: the recorder's first-call costs
    train(replace(off, steps=warm))
    runs = _interleaved(
        {"on": lambda: _time_call(lambda: train(on), device), "off": lambda: _time_call(lambda: train(off), device)},
        repeats,
        echo,
        "s/run",
    )
    n_probes = len(on.probes.steps(cfg.steps))
    return _row(
        ROW_PROBES,
        size,
        ("on", "off"),
        runs["on"],
        runs["off"],
        "s/run",
        Goal("<=", 1.05),
        f"{cfg.steps} steps, {n_probes} probe passes on {n} samples, whole train() calls",
    )


def _bench_flops(stepper: _Stepper, step_s: list[float], peak: list[float], peak_n: int, size: str) -> BenchRow:
    """Row 4: achieved FLOP/s of our training step (FLOPs / seconds per step of each row-2 repeat) against the
    measured matmul peak (FLOP/s)."""
    flops = training_step_flops(stepper)
    return _row(
        ROW_FLOPS,
        size,
        ("achieved", "peak"),
        [flops / t for t in step_s],
        peak,
        "FLOP/s",
        None,
        f"{flops / 1e6:.4g} MFLOP/step (fwd+centring fwd+bwd) / median step time; peak = {peak_n}x{peak_n} fp32 matmul",
    )


def time_head_stats(
    head_stats: Callable[..., Any],
    device: torch.device,
    repeats: int,
    shape: dict[str, int] = HEAD_STATS_SHAPE,
    calls: int = HEAD_STATS_CALLS,
    echo: Callable[[str], None] = print,
) -> dict[str, dict[str, Any]]:
    """Time and peak memory of head_stats(q, k, scale, causal, q0, k0, backend=b) for b in ("triton", "torch"), on
    random q, k, q0, k0 of shape (B, H, S, N), scale N^-1, causal. Returns {backend: {"ms": [ms per call of each
    of `repeats` interleaved chunks of `calls` calls], "peak_mib": MiB allocated above the inputs during one call
    (CUDA only, else None)}}."""
    B, H, S, N = (shape[k] for k in ("B", "H", "S", "N"))
    g = torch.Generator(device="cpu").manual_seed(0)
    q, k, q0, k0 = (torch.randn(B, H, S, N, generator=g).to(device) for _ in range(4))
    scale = 1.0 / N

    def call(backend: str) -> Any:
        return head_stats(q, k, scale, True, q0, k0, backend=backend)

    result: dict[str, dict[str, Any]] = {}
    for backend in ("triton", "torch"):
        call(backend)  # warm-up (Triton compiles on the first call)
        _sync(device)
        peak = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            out = call(backend)
            _sync(device)
            peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
            del out
        result[backend] = {"peak_mib": peak}

    def chunk(backend: str) -> float:
        return 1e3 * _time_call(lambda: [call(backend) for _ in range(calls)], device) / calls

    runs = _interleaved({"triton": lambda: chunk("triton"), "torch": lambda: chunk("torch")}, repeats, echo, "ms/call")
    for backend in ("triton", "torch"):
        result[backend]["ms"] = runs[backend]
    return result


def _bench_head_stats(device: torch.device, repeats: int, echo: Callable[[str], None]) -> list[BenchRow]:
    """Row 5 (CUDA only): the head-statistics kernel against the materialising torch path."""
    size = "B{B} H{H} S{S} N{N}".format(**HEAD_STATS_SHAPE)
    labels = ("triton", "torch")
    rows = [(ROW_HEAD_TIME, "ms/call"), (ROW_HEAD_MEM, "MiB")]

    def missing(status: str, note: str) -> list[BenchRow]:
        return [_missing(name, size, labels, units, None, status, note) for name, units in rows]

    if device.type != "cuda":
        return missing("skipped", "skipped: no CUDA device")
    try:
        from probes.hooks.head_stats import head_stats
    except ImportError as e:
        return missing(
            "n/a",
            "n/a (probes.hooks.head_stats missing)"
            if getattr(e, "name", None) == "probes.hooks.head_stats"
            else f"n/a (probes.hooks.head_stats import failed: {e})",
        )
    try:
        res = time_head_stats(head_stats, device, repeats, echo=echo)
    except Exception as e:
        return missing("n/a", f"n/a (head_stats failed: {type(e).__name__}: {e})")
    note = f"median of {repeats} x {HEAD_STATS_CALLS} calls; memory = peak above the inputs"
    return [
        _row(ROW_HEAD_TIME, size, labels, res["triton"]["ms"], res["torch"]["ms"], "ms/call", None, note),
        _row(ROW_HEAD_MEM, size, labels, res["triton"]["peak_mib"], res["torch"]["peak_mib"], "MiB", None, note),
    ]


def time_rmsnorm(
    rms_norm: Callable[..., Any],
    device: torch.device,
    repeats: int,
    shape: dict[str, int] = RMSNORM_SHAPE,
    calls: int = RMSNORM_CALLS,
    echo: Callable[[str], None] = print,
) -> dict[str, list[float]]:
    """Time forward + backward of rms_norm(x, weight, backend=b) for b in ("triton", "torch"): float32 x of shape
    (rows, D) and a (D,) gain, both requiring grad, and a fixed output gradient; the backward returns dx and
    dweight through torch.autograd.grad (no .grad accumulation). Returns {backend: [ms per call of each of
    `repeats` interleaved chunks of `calls` calls]}."""
    rows, D = shape["rows"], shape["D"]
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(rows, D, generator=g).to(device).requires_grad_()
    weight = (1 + 0.1 * torch.randn(D, generator=g)).to(device).requires_grad_()
    grad_out = torch.randn(rows, D, generator=g).to(device)

    def call(backend: str) -> Any:
        y = rms_norm(x, weight, backend=backend)
        return torch.autograd.grad(y, (x, weight), grad_out)

    for backend in ("triton", "torch"):
        call(backend)  # warm-up (Triton compiles on the first call)
    _sync(device)

    def chunk(backend: str) -> float:
        return 1e3 * _time_call(lambda: [call(backend) for _ in range(calls)], device) / calls

    return _interleaved({"triton": lambda: chunk("triton"), "torch": lambda: chunk("torch")}, repeats, echo, "ms/call")


def _bench_rmsnorm(device: torch.device, repeats: int, echo: Callable[[str], None]) -> BenchRow:
    """Row 6 (CUDA only): forward + backward of RMSNorm, the torch reference against the fused Triton kernels;
    ratio = torch / fused (the speed-up)."""
    size = "rows {rows} x D {D}, (D,) gain".format(**RMSNORM_SHAPE)
    labels = ("torch", "triton")
    units = "ms/call"

    def missing(status: str, note: str) -> BenchRow:
        return _missing(ROW_RMSNORM, size, labels, units, None, status, note)

    if device.type != "cuda":
        return missing(
            "skipped",
            "skipped: no CUDA device (the fused RMSNorm kernels need CUDA; on CPU rms_norm runs the torch reference)",
        )
    try:
        from parametrizations.rmsnorm import rms_norm
    except ImportError as e:
        return missing(
            "n/a",
            "n/a (parametrizations.rmsnorm missing)"
            if getattr(e, "name", None) == "parametrizations.rmsnorm"
            else f"n/a (parametrizations.rmsnorm import failed: {e})",
        )
    try:
        res = time_rmsnorm(rms_norm, device, repeats, echo=echo)
    except Exception as e:
        return missing("n/a", f"n/a (rms_norm failed: {type(e).__name__}: {e})")
    note = f"float32 forward + backward (dx, dweight); median of {repeats} x {RMSNORM_CALLS} calls"
    return _row(ROW_RMSNORM, size, labels, res["torch"], res["triton"], units, None, note)


def sweep_point_units(preset: str, job: str, value: int, device: str, mode: str, parts: Path) -> list[Any]:
    """The units (`probes.grid.sweep.Unit`) of one size of one sweep job of a `reproduce` preset, all its seeds,
    planned as `probes.grid.sweep.open_sweep` plans them: the job's config (`probes.grid.reproduce.job_config`) on
    `device`, its seeds per size (`job_seeds`), grouped by ensemble `mode` ("auto": seed ensembles, "off": one
    seed each); each seed's dataset goes to a part file under the folder `parts`."""
    from probes.grid.manifest import point_name
    from probes.grid.reproduce import check_preset, job_config, job_seeds
    from probes.grid.sweep import plan_units, sweep_config

    chosen = check_preset(preset)
    the_job = next(j for j in chosen.jobs if j.name == job)
    cfg = sweep_config(replace(job_config(chosen, the_job), device=device), the_job.axis)
    seeds = [cfg.seed + s for s in range(job_seeds(chosen, the_job))]
    return plan_units(
        cfg, the_job.axis, {value: seeds}, mode, lambda v, s: Path(parts) / f"{point_name(the_job.axis, v, s)}.nc"
    )


def _bench_sweep_point(repeats: int, device: torch.device, echo: Callable[[str], None], quick: bool) -> BenchRow:
    """Row 7: time to verdict of one sweep size: seconds for every seed of one size of a `reproduce` preset's job
    (SWEEP_POINT; QUICK_SWEEP_POINT when quick), trained and written as the sweep's worker does it
    (`probes.grid.sweep.run_unit` on each unit), seeds as ensembles (mode "auto") against one by one ("off")."""
    import tempfile

    from probes.grid.sweep import run_unit

    point = QUICK_SWEEP_POINT if quick else SWEEP_POINT
    repeats = min(repeats, SWEEP_POINT_MAX_REPEATS)
    size = "{preset}/{job} at {value}".format(**point)
    labels, units_name = ("auto", "off"), "s/size"
    try:
        with tempfile.TemporaryDirectory(prefix="bench-sweep-point-") as tmp:
            plans = {
                mode: sweep_point_units(point["preset"], point["job"], point["value"], str(device), mode, Path(tmp))
                for mode in labels
            }
            cfg = plans["auto"][0].cfg
            for mode in labels:  # warm-up: first-call costs (data, allocator, lazy imports) of both paths
                run_unit(replace(plans[mode][0], cfg=replace(cfg, steps=min(cfg.steps, WARMUP_STEPS))))

            def timed(mode: str) -> float:
                return _time_call(lambda: [run_unit(u) for u in plans[mode]], device)

            runs = _interleaved({m: (lambda m=m: timed(m)) for m in labels}, repeats, echo, "s/size")
    except Exception as e:  # a failed unit must not stop the other rows
        return _missing(ROW_SWEEP_POINT, size, labels, units_name, None, "n/a", f"n/a ({type(e).__name__}: {e})")
    n_seeds = sum(len(u.seeds) for u in plans["off"])
    seed_steps = n_seeds * cfg.steps
    per = ", ".join(f"{m} {statistics.median(runs[m]) / seed_steps:.3g}" for m in labels)
    return _row(
        ROW_SWEEP_POINT,
        size,
        labels,
        runs["auto"],
        runs["off"],
        units_name,
        None,
        f"{n_seeds} seeds x {cfg.steps} steps ({len(plans['auto'])} ensemble group(s) under auto), probes every "
        f"{cfg.probes.every}, datasets written; s per seed-step: {per}; N={cfg.model.N} H={cfg.model.H} L={cfg.model.L} "
        f"task={cfg.model.task} batch={cfg.batch_size} param={cfg.param.name} optim={cfg.optim.name}",
    )


def mfu_config(device: str) -> RunConfig:
    """Row 8's run: our default model (`make_run_config`) at MFU_MODEL (d_model = N H = 1024, LM task), batch
    MFU_BATCH, precision bf16 (autocast of the forward), probes off."""
    run = {"steps": MFU_STEPS, "device": device, "batch_size": MFU_BATCH, "precision": "bf16"}
    return make_run_config(model=dict(MFU_MODEL), run=run, probes={"enabled": False})


def bf16_matmul_peak_flops(device: torch.device, n: int = MFU_PEAK_N, repeats: int = 5, calls: int = 10) -> list[float]:
    """Measured FLOP/s (2 n^3 per product) of an n x n bfloat16 matmul, `repeats` chunks of `calls` products
    after 2 warm-ups. Returns [FLOP/s of each chunk]."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    return [2.0 * n**3 * calls / _time_call(lambda: [a @ b for _ in range(calls)], device) for _ in range(repeats)]


def nominal_bf16_peak(device_name: str) -> tuple[str, float] | None:
    """(model, dense bf16 FLOP/s) of the first NOMINAL_BF16_PEAK model named in `device_name`; None if none is."""
    for model, flops in NOMINAL_BF16_PEAK.items():
        if model.lower() in device_name.lower():
            return model, flops
    return None


def _bench_mfu(repeats: int, device: torch.device, echo: Callable[[str], None]) -> BenchRow:
    """Row 8 (CUDA only): achieved FLOP/s of our bf16 training step at d_model 1024 (`mfu_config`; FLOPs counted
    by `training_step_flops`, over the seconds per step of MFU_STEPS steps) against the measured bf16 matmul peak,
    interleaved; the note adds the fraction of the device's nominal dense bf16 peak where it is known."""
    m = MFU_MODEL
    size = f"N{m['N']} H{m['H']} L{m['L']} d{m['N'] * m['H']} S{m['seq_len']} B{MFU_BATCH}"
    labels, units = ("achieved", "bf16 peak"), "FLOP/s"
    if device.type != "cuda":
        return _missing(ROW_MFU, size, labels, units, None, "n/a", "n/a (CUDA only): no CUDA device")
    try:
        cfg = mfu_config(str(device))
        check_fits(cfg)
        stepper = ours_stepper(cfg)
        flops = training_step_flops(stepper)
        with matmul_precision(cfg.precision, device):
            runs = _interleaved(
                {
                    "achieved": lambda: flops / _time_steps(stepper, MFU_STEPS, device),
                    "bf16 peak": lambda: statistics.median(bf16_matmul_peak_flops(device, repeats=1)),
                },
                repeats,
                echo,
                "FLOP/s",
            )
    except Exception as e:
        return _missing(ROW_MFU, size, labels, units, None, "n/a", f"n/a (bf16 step failed: {type(e).__name__}: {e})")
    name = torch.cuda.get_device_name(device)
    nominal = nominal_bf16_peak(name)
    achieved = statistics.median(runs["achieved"])
    vs_nominal = (
        f"{achieved / nominal[1]:.1%} of the nominal {nominal[0]} dense bf16 peak {nominal[1] / 1e12:.0f} TFLOP/s"
        if nominal
        else f"no nominal bf16 peak known for {name!r}"
    )
    note = (
        f"{flops / 1e12:.4g} TFLOP/step (fwd + centring fwd + bwd, FlopCounterMode) / median step time of "
        f"{MFU_STEPS} steps; peak = {MFU_PEAK_N}^2 bf16 matmul; {vs_nominal}"
    )
    return _row(ROW_MFU, size, labels, runs["achieved"], runs["bf16 peak"], units, None, note)


# ----------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.3e}" if abs(x) >= 1e5 or (x != 0 and abs(x) < 1e-2) else f"{x:.4g}"


def format_table(rows: list[BenchRow]) -> list[str]:
    """The table as lines: one per row (A and B in units, ratio = A / B, goal, flag, note)."""
    header = ("row", "size", "A", "B", "units", "A/B", "goal", "flag", "spread", "note")
    body = [
        (
            r.name,
            r.size,
            f"{r.a_label} {_fmt(r.a)}",
            f"{r.b_label} {_fmt(r.b)}",
            r.units,
            _fmt(r.ratio),
            r.goal or "-",
            r.status,
            r.spread or "-",
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [header, *body]) for i in range(len(header) - 1)]
    lines = []
    for cells in [header, *body]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + "  " + cells[-1])
    lines.insert(1, "-" * len(lines[0]))
    return lines


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
        try:
            with open("/proc/cpuinfo") as fh:
                name = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), name)
        except OSError:
            pass
    return (
        f"machine: {device.type} ({name}), torch {torch.__version__}, intra-op threads {torch.get_num_threads()}, "
        f"python {platform.python_version()}"
    )


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else os.cpu_count())."""
    import os

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _bounded(value: object, flag: str, hi: int, what: str = "") -> None:
    """ValueError naming `flag` unless `value` is an integer in [1, hi]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
        raise ValueError(f"{flag} must be an integer from 1 to {hi}{what}, got {value!r}"[:200])


def check_bench_options(
    sizes: tuple[str, ...], steps: int, repeats: int, ensemble: int, threads: int | None
) -> tuple[str, ...]:
    """Validate bench's options before any work (ValueError, one line naming the flag): sizes a non-empty list of
    SIZES names, steps <= MAX_STEPS, repeats <= MAX_REPEATS, ensemble <= MAX_ENSEMBLE, threads (None: torch's)
    <= the CPUs this process may use, each >= 1. Returns the sizes without duplicates, in the order given."""
    sizes = tuple(dict.fromkeys(s.strip() for s in sizes if s.strip()))
    if not sizes:
        raise ValueError(f"--sizes is empty; choose from {', '.join(SIZES)}")
    bad = [s for s in sizes if s not in SIZES]
    if bad:
        raise ValueError(f"--sizes: unknown {', '.join(repr(b) for b in bad)}; choose from {', '.join(SIZES)}"[:200])
    _bounded(steps, "--steps", MAX_STEPS)
    _bounded(repeats, "--repeats", MAX_REPEATS)
    _bounded(ensemble, "--ensemble", MAX_ENSEMBLE)
    if threads is not None:
        _bounded(threads, "--threads", available_cpus(), " (the CPUs this process may use)")
    return sizes


def run_bench(
    device: str = "auto",
    sizes: tuple[str, ...] = ("default", "d256", "vision-d32"),
    steps: int = 10,
    repeats: int = 3,
    ensemble: int = 8,
    echo: Callable[[str], None] = print,
    quick: bool = False,
    threads: int | None = 1,
) -> list[BenchRow]:
    """Run every row at every size, print the table through `echo` and return its rows.

    device: "auto" (CUDA if present), "cpu" or "cuda[:i]". sizes: names in SIZES. steps: training steps per timed
    measurement (row 1 and 3: per run; row 2: per chunk after 3 warm-up steps). repeats: measurements per variant
    (median). ensemble: seeds in row 1. quick: one tiny model for every size (for tests; figures not meaningful).
    threads: torch intra-op threads during the bench (restored afterwards); None keeps torch's setting. 1 by
    default: on a shared 2-core machine two threads per process slowed the sequential runs of row 1 up to 15-fold
    between repeats (tests/conftest.py has the same rule); every figure is measured with the same setting.
    The defaults took 3 min 20 s on 2 shared CPU cores (load average about 2 from other work) before rows 7 and 8;
    row 7 adds about 3.5 minutes there (one repeat of both modes took 105 s at load average 5); row 8 runs on
    CUDA only.
    """
    sizes = check_bench_options(sizes, steps, repeats, ensemble, threads)
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run_bench(device, sizes, steps, repeats, ensemble, echo, quick)
    finally:
        torch.set_num_threads(old_threads)


def _run_bench(
    device: str,
    sizes: tuple[str, ...],
    steps: int,
    repeats: int,
    ensemble: int,
    echo: Callable[[str], None],
    quick: bool,
) -> list[BenchRow]:
    dev = resolve_device(device)
    cfgs = {s: bench_config(s, str(dev), steps, quick) for s in sizes}
    for s, c in cfgs.items():  # the ensemble row trains `ensemble` models at once: refuse what cannot fit
        try:
            check_fits(c, members=ensemble)
        except ValueError as e:
            raise ValueError(f"--ensemble: {ensemble} seeds of size {s} at once: {str(e).splitlines()[0]}") from None
    echo(_machine(dev))
    echo(
        f"settings: sizes={','.join(sizes)} steps={steps} repeats={repeats} ensemble={ensemble} quick={quick}; "
        f"figures are medians of {repeats} interleaved measurements in this process; ratio = A / B"
    )
    for s, c in cfgs.items():
        echo(f"size {s}: {_describe(c)}")
    train(replace(next(iter(cfgs.values())), steps=1))  # process warm-up: lazy imports, allocator

    rows: list[BenchRow] = []
    echo("[1/8] ensemble vs sequential")
    for s, c in cfgs.items():
        echo(f" size {s}: {ensemble} seeds x {steps} steps, batched vs one after another")
        rows.append(_bench_ensemble(c, s, ensemble, repeats, dev, echo))
        if rows[-1].status in ("n/a", "skipped"):
            echo(f"  {rows[-1].note}")

    echo("[2/8] ours vs plain PyTorch")
    steppers: dict[str, tuple[_Stepper, list[float]]] = {}
    for s, c in cfgs.items():
        echo(f" size {s}: {steps} timed steps after {WARMUP_STEPS} warm-up; ours(copy), ours(none), plain")
        plain_rows, stepper, step_s = _bench_plain(c, s, steps, repeats, dev, echo)
        rows += plain_rows
        steppers[s] = (stepper, step_s)

    echo("[3/8] probes on vs off")
    for s, c in cfgs.items():
        echo(
            f" size {s}: train() with probes every {PROBE_EVERY} steps vs off, "
            f"{steps if quick else max(steps, PROBE_RUN_STEPS)} steps"
        )
        rows.append(_bench_probes(c, s, repeats, dev, echo, quick))

    echo("[4/8] achieved FLOP/s")
    peak, peak_n = matmul_peak_flops(dev, 256 if quick else None)
    echo(f"  matmul peak {statistics.median(peak):.4g} FLOP/s ({peak_n}x{peak_n} float32, median of {len(peak)})")
    for s in cfgs:
        rows.append(_bench_flops(*steppers[s], peak, peak_n, s))

    def add(title: str, run: Callable[[], list[BenchRow]]) -> None:
        """Say the title, run the row group and keep its rows; say why where its last row was skipped or n/a."""
        echo(title)
        rows.extend(run())
        if rows[-1].note.startswith(("skipped", "n/a")):
            echo(f"  {rows[-1].note}")

    add("[5/8] head-statistics kernel vs materialising", lambda: _bench_head_stats(dev, repeats, echo))
    add("[6/8] RMSNorm fused kernels vs torch (forward + backward)", lambda: [_bench_rmsnorm(dev, repeats, echo)])
    add(
        "[7/8] time to verdict: one sweep size, seeds ensembled vs one by one",
        lambda: [_bench_sweep_point(repeats, dev, echo, quick)],
    )
    add("[8/8] bf16 MFU at d_model 1024 (CUDA only)", lambda: [_bench_mfu(repeats, dev, echo)])

    echo("")
    for line in format_table(rows):
        echo(line)
    return rows

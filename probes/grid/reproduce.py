"""`dmft-probe reproduce --preset NAME`: run the sweeps and learning-rate grids of a preset into one folder; the
CLI then writes the verdict table of that folder (`dmft.report.write_report`).

A preset is a list of jobs, each a sweep along N, H or L (`probes.grid.sweep.run_sweep`, resumable: a job stopped
half-way continues where it stopped) or a learning-rate grid (`probes.grid.lr_grid.run_lr_grid`, skipped when its
file is complete). Every job shares one base setting, changed only in what the job names, so that pairs of
sweeps differ in one exponent (P9, P12). The "cpu" preset is sized for 2 CPU cores (under 15 minutes), its power
planned before any data (`dmft.report.preset_plan`, written to plan.md); "smoke" runs the same jobs at toy sizes
in about two minutes (a test of the machinery: its figures mean nothing); "gpu" runs them at the paper's scale
(N up to 512, H up to 128, L up to 64) on one CUDA device (about 2 hours of an H100, estimated), refused on a
machine without CUDA (`check_preset_device`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from parametrizations.checks import one_of_error


@dataclass(frozen=True)
class Job:
    """One dataset of a preset. kind: "sweep" or "lr_grid". name: the file stem. param/optim/model: overrides of
    the preset's base (`probes.experiment.config.make_run_config` sections). axis, values: the swept sizes. etas: the eta0
    grid of an lr_grid job."""

    name: str
    kind: str
    axis: str
    values: tuple[int, ...]
    param: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    etas: tuple[float, ...] = ()
    run: dict = field(default_factory=dict)
    seeds: int | None = None


def job_seeds(preset: Preset, job: Job) -> int:
    """Seeds per size of a job: its own, else the preset's (sweeps) or grid_seeds (learning-rate grids)."""
    if job.seeds is not None:
        return job.seeds
    return preset.seeds if job.kind == "sweep" else preset.grid_seeds


@dataclass(frozen=True)
class Preset:
    """base: make_run_config sections shared by every job; seeds: per size (a job may set its own); grid_seeds and
    grid_steps: of the learning-rate grids (no probes, so cheaper per run). noise: per sweep job, the noise
    (`dmft.power.Noise` fields) its power is planned with before any data (`dmft.report.preset_plan`), measured
    on an earlier run of the preset with `dmft-probe plan --from`. needs_cuda: runs only where torch has a CUDA
    device (`check_preset_device`); its base then says device "auto", so its configs build anywhere."""

    name: str
    description: str
    base: dict
    seeds: int
    jobs: tuple[Job, ...]
    grid_seeds: int = 3
    grid_steps: int | None = None
    noise: dict = field(default_factory=dict)
    needs_cuda: bool = False


def _jobs(
    N: tuple[int, ...],
    H: tuple[int, ...],
    L: tuple[int, ...],
    grid_N: tuple[int, ...],
    etas_mup: tuple[float, ...],
    etas_sp: tuple[float, ...],
    io_seeds: int,
    L_seeds: int,
    N_model: dict | None = None,
    H_model: dict | None = None,
) -> tuple[Job, ...]:
    paired = {"io_seeds": io_seeds}  # conv-L's paired design: io groups share embedding, positions, readout
    n_model = N_model or {}  # the N sweeps' model overrides (cpu: H = 2, so N = 64 is d = 128)
    h_model = H_model or {"N": 4}  # the H sweep's (cpu: N = 4, Fig. 3)
    return (
        Job("N-mup", "sweep", "N", N, {"preset": "mup"}, n_model),  # P1-P3, P6 (alpha_A = 1), coord
        Job("N-mup-sqrt", "sweep", "N", N, {"preset": "mup-sqrt"}, n_model),  # P1-P3, P6 (alpha_A = 1/2); P12
        Job("H-mup", "sweep", "H", H, {"preset": "mup"}, h_model),  # P4, P5, P11, coord
        Job("L-mup", "sweep", "L", L, {"preset": "mup"}, run=paired, seeds=L_seeds),  # P8, P10, conv-L (alpha_L = 1)
        Job("L-depth-sqrt", "sweep", "L", L, {"preset": "depth-sqrt"}, run=paired, seeds=L_seeds),  # at 1/2; P9
        Job("lr-N-mup", "lr_grid", "N", grid_N, {"preset": "mup"}, etas=etas_mup),  # P7
        Job("lr-N-sp", "lr_grid", "N", grid_N, {"preset": "sp"}, etas=etas_sp),  # P7's negative control
    )


def _noise(rho_entries: float, rho_sizes: float, bias: float) -> dict:
    """A sweep job's noise as `dmft-probe plan --from` measured it (320 entries: the probe outputs)."""
    return {
        "entries": 320,
        "rho_entries": rho_entries,
        "rho_sizes": rho_sizes,
        "bias": bias,
        "source": "measured on a cpu run (plan --from)",
    }


def _quarter_decades(k_lo: int, k_hi: int) -> tuple[float, ...]:
    """eta0 = 10^(k/4) for k = k_lo..k_hi (a quarter-decade grid)."""
    return tuple(round(10 ** (k / 4), 6) for k in range(k_lo, k_hi + 1))


# The digits task (real 8x8 images, offline) with the paper's ViT optimizer (SGD + momentum 0.9, Table 1 rates)
# and its feature-learning strength gamma0 = 0.1 (Fig. 6 base). eta0 = 2 lies in the range where every size
# trains stably (`python bench/gamma0_stability.py 0.1 0.2,1,5,25` and `... 0.1 2,5 8`; 300 steps, L = 2 and 8:
# eta0 = 1..5 reach held-out losses 0.14-0.54 with O(1) head variance of A); at gamma0 = 1, eta0 = 0.5 the
# attention logits grow without bound (Var_h A ~ 1e2 to 1e8 by step 300 over the preset's sizes).
_BASE = {
    "model": {"task": "digits", "N": 8, "H": 4, "L": 2},
    "param": {"gamma0": 0.1},
    "optim": {"name": "sgd-momentum", "eta0": 2.0},
    "run": {"steps": 300, "batch_size": 32},
    "probes": {"every": 30, "n_samples": 32},
}
# The learning-rate grids train 300 steps, long enough for an interior optimum: at 100 steps the muP optimum was
# the last eta0 before blow-up; at 300 steps (N = 4, 16, 3 seeds, quarter decades 0.1..56) the held-out loss is
# lowest at eta0 = 2-4 with stable runs up to 31.6 on both sides of it. muP's grid spans 0.56..31.6 around that
# optimum; SP's 0.0056..0.56 around its optimum at 100 steps (0.1 at N = 4 down to 0.01 at N = 64).
# Sizes and seeds from `dmft-probe plan` (dmft.report.preset_plan, default noise): at 4 sizes no seed count up to
# 64 gives a slope or seed-variance row power 0.8 (the band of 3 local slopes is too noisy), at 5 sizes 6 seeds
# do for P1/P10 and 12 for P5/P6/conv-L. Time (2 quiet cores, 12 seeds as one ensemble, 300 steps, H = 4): the N
# sweeps took 5 min 17 s and 5 min 29 s (N = 64, d = 256: 157 s of each), H-mup 4 min 07 s (H = 32: 80 s), the L
# sweeps 4 min 49 s and 4 min 36 s (L = 16: 99 s + 23 s for a seed left out of the ensemble by its memory
# budget), about 10 s of model building and store I/O per point; a learning-rate grid about 15-20 s per eta0 over
# its 3 sizes (3 eta0 at N = 4, 8, 16: 62 s muP, 44 s SP). 29 minutes in all. Trimmed to fit 20: the
# sweeps train 200 steps (the grids keep 300: their interior optimum needs it), the N sweeps run at H = 2 (N = 64
# is d = 128), the L sweeps stop at L = 12: 21 min 47 s from a fresh clone (sweeps 14 min 41 s, grids 2 min 56 s
# and 2 min 21 s at 8 and 9 eta0, the check 1 min 47 s, of which 104 s the P4 solver at 8192 Monte Carlo heads).
# Then the grids were cut to the informative range around the optima that run found (muP eta0* = 5.1, 2.7, 3.35;
# SP 0.057, 0.042, 0.030 at N = 4, 8, 16): muP 1..17.8 and SP 0.01..0.18, six quarter decades each, two or more
# points on each side of every optimum; and the P4 solver runs 2048 heads (dmft.check.MC_HEADS).
PRESETS: dict[str, Preset] = {
    "cpu": Preset(
        "cpu",
        "digits, SGD+momentum, gamma0 0.1, eta0 2, 200 steps, 12 seeds (N sweeps at H = 2; L "
        "sweeps: 4 io groups x 3 block draws); learning-rate grids: 300 steps, 3 seeds, quarter "
        "decades; 2 CPU cores, under 15 minutes",
        {**_BASE, "run": {"steps": 200, "batch_size": 32}, "probes": {"every": 25, "n_samples": 32}},
        12,
        _jobs(
            N=(4, 8, 16, 32, 64),
            H=(2, 4, 8, 16, 32),
            L=(1, 2, 4, 6, 12),
            grid_N=(4, 8, 16),
            etas_mup=_quarter_decades(0, 5),
            etas_sp=_quarter_decades(-8, -3),
            io_seeds=4,
            L_seeds=12,
            N_model={"H": 2},
        ),
        grid_seeds=3,
        grid_steps=300,
        # measured on the run above (`dmft-probe plan --from runs/reproduce-cpu/JOB.nc`: probe_outputs at
        # the last step); cv is not measured by --from and stays at its default 0.2
        noise={
            "N-mup": _noise(0.01, 0.08, 0.53),
            "N-mup-sqrt": _noise(0.01, 0.05, 0.54),
            "H-mup": _noise(0.01, 0.06, 0.91),
            "L-mup": _noise(0.01, 0.36, 0.83),
            "L-depth-sqrt": _noise(0.02, 0.28, 0.81),
        },
    ),
    "smoke": Preset(
        "smoke",
        "toy sizes, 12 steps: checks the machinery, the figures mean nothing",
        {**_BASE, "run": {"steps": 12, "batch_size": 8}, "probes": {"every": 4, "n_samples": 8}},
        5,
        _jobs(
            N=(2, 4, 8, 16),
            H=(1, 2, 4, 8),
            L=(1, 2, 3, 4),
            grid_N=(2, 4, 8),
            etas_mup=(0.25, 1.0, 4.0),
            etas_sp=(0.25, 1.0, 4.0),
            io_seeds=3,
            L_seeds=9,
        ),  # 3 io groups x 3 block draws: the
        grid_seeds=2,
    ),  # two-stage bootstrap had no interval at 2 groups, nor at 2 draws per group
}


# The gpu preset: the paper's scale (N up to 512, H up to 128, L up to 64; its ViTs train on CIFAR-5M, here the
# synthetic vision task, 16x16 images in 16 patches, so no data is needed) on one CUDA device, in float32 (the
# theory checks' precision). The base is the cpu preset's (SGD + momentum, gamma0 0.1, eta0 2: stable on digits,
# not yet checked on this task; the learning-rate grids show where its optimum lies) at N = 32, H = 4, L = 2,
# batch 128, 2000 steps with probes every 250. Sizes: N sweeps at H = 4 (d = 64..2048), the H sweep at N = 16
# (d = 64..2048), the L sweeps at N = 32, H = 4 (d = 128). Seeds: 16 per size (the L sweeps' paired design: 4 io
# groups x 4 block draws), from `dmft.report.preset_plan` with the default noise: at 8 seeds (12 for L) the
# plateau rows of N-mup-sqrt and L-depth-sqrt had power 0.41 and 0.74 and asked for 16; at 16 every row but the
# squared-bias ones reaches 0.8 (those stay underpowered at any seed count up to 64 here, as in the cpu preset).
# Grids: 3 seeds, 6 half-decades of eta0 at N = 16, 64, 256.
# Budget, estimated before any run (no GPU has run it yet): FLOPs from the shapes, `bench.training.preset_flops`
# (`step_flops_estimate` per seed-step, equal to FlopCounterMode's count, tests/test_benchmark.py, times seeds,
# steps and eta0 values): 3.5e16 per N or H sweep (8.3e11 per seed-step at N = 512 or H = 128), 1.4e16 for both
# L sweeps, 0.8e16 and 0.6e16 for the grids; 1.34e17 in all. At an assumed 20 TFLOP/s achieved (30% of an H100
# SXM's 67 TFLOP/s float32 peak) that is 112 minutes, plus the small sizes' launch-bound floor (L = 64: a few
# thousand kernels per step) and the probes: about 2 hours of one H100. `bash bench/gpu_check.sh` runs a slice
# of it and prints its achieved FLOP/s and the hours the whole preset would take at that rate.
GPU_BASE = {
    "model": {"task": "vision", "N": 32, "H": 4, "L": 2},
    "param": {"gamma0": 0.1},
    "optim": {"name": "sgd-momentum", "eta0": 2.0},
    "run": {"steps": 2000, "batch_size": 128, "device": "auto"},  # cuda: needs_cuda refuses a machine without
    "probes": {"every": 250, "n_samples": 64},
}
PRESETS["gpu"] = Preset(
    "gpu",
    "synthetic vision (16 patches), SGD+momentum, gamma0 0.1, eta0 2, 2000 steps, fp32 on one CUDA device; "
    "N 16..512 (H = 4), H 4..128 (N = 16), L 2..64 (N = 32, H = 4), 16 seeds (L: 4 io groups x 4); learning-rate grids at "
    "N = 16, 64, 256, 3 seeds; about 2 hours of one H100 (estimated)",
    GPU_BASE,
    16,
    _jobs(
        N=(16, 32, 64, 128, 256, 512),
        H=(4, 8, 16, 32, 64, 128),
        L=(2, 4, 8, 16, 32, 64),
        grid_N=(16, 64, 256),
        etas_mup=tuple(round(10 ** (k / 2), 6) for k in range(-2, 4)),  # 0.1 .. 31.6
        etas_sp=tuple(round(10 ** (k / 2), 6) for k in range(-6, 0)),  # 0.001 .. 0.316
        io_seeds=4,
        L_seeds=16,
        N_model={"H": 4},
        H_model={"N": 16},
    ),
    grid_seeds=3,
    needs_cuda=True,
)  # noise: none measured yet, so the plan uses dmft.power's default noise


# The verdict tables `dmft.report.write_report` writes into the folder.
REPORTS = ("verdicts.md", "verdicts-full.md", "plan.md")


def job_config(preset: Preset, job: Job):
    """The RunConfig of one job: the preset's base with the job's overrides (validated)."""
    from probes.experiment.config import make_run_config

    b = preset.base
    run = {**b.get("run", {}), **job.run}
    probes = dict(b.get("probes", {}))
    if job.kind == "lr_grid":
        probes["enabled"] = False
        if preset.grid_steps is not None:
            run["steps"] = preset.grid_steps
    return make_run_config(
        model={**b.get("model", {}), **job.model, "axis": job.axis},
        param={**b.get("param", {}), **job.param},
        optim=dict(b.get("optim", {})),
        run=run,
        probes=probes,
    )


def check_preset(name: str) -> Preset:
    """The preset called `name`; ValueError naming --preset and the choices otherwise."""
    if name not in PRESETS:
        raise one_of_error("--preset", name, PRESETS)
    return PRESETS[name]


def check_preset_device(preset: Preset) -> None:
    """ValueError (one line naming --preset) when the preset needs CUDA (`Preset.needs_cuda`) and this torch has
    no CUDA device; its configs and plan are still computed on any machine (`job_config`,
    `dmft.report.preset_plan`)."""
    import torch

    if preset.needs_cuda and not torch.cuda.is_available():
        raise ValueError(
            f"--preset {preset.name} needs a CUDA GPU, and CUDA is not available to this torch "
            f"({torch.__version__}); use --preset cpu"
        )


def check_outputs(preset: Preset, configs: list, out: Path) -> None:
    """Before any work, writing nothing: `out` is a folder that exists or can be made, writable
    (`probes.experiment.config.check_out_folder`), and every job's output that exists can be reused or resumed: a sweep's
    merged file is a sweep of the job's grid and settings and its store `<file>.parts/` one that can resume
    (`probes.grid.preflight.check_sweep_out`), a learning-rate grid's file is the job's grid
    (`probes.grid.preflight.check_lr_grid_out`); every size of a sweep still to run fits in memory. ValueError, one
    line naming --out and the file (or the sizes that do not fit), otherwise."""
    from probes.experiment.config import check_out_folder
    from probes.grid.preflight import check_lr_grid_out, check_sweep_out
    from probes.grid.sweep import check_grid_fits

    out = Path(out)
    check_out_folder(out, "--out")
    for name in REPORTS:  # written at the end, through a temporary file renamed over them
        path = out / name
        if (path.exists() or path.is_symlink()) and not path.is_file():
            raise ValueError(f"--out: {path} exists and is not a regular file; move it away or choose another --out")
    for job, cfg in zip(preset.jobs, configs):
        path = out / f"{job.name}.nc"
        if job.kind == "sweep":
            check_sweep_out(
                cfg, job.axis, list(job.values), [cfg.seed + s for s in range(job_seeds(preset, job))], path
            )
            if not path.exists():  # a sweep to run: every size fits in memory
                check_grid_fits(cfg, job.axis, list(job.values))
        else:
            check_lr_grid_out(cfg, job.axis, list(job.values), list(job.etas), job_seeds(preset, job), path)


def run_preset(
    name: str, out: Path, say: Callable[[str], None] = print, ensemble: str = "auto", progress: bool | None = None
) -> list[Path]:
    """Run every job of preset `name` into folder `out` (created; finished datasets are kept and reused); returns
    the dataset paths. say(line) reports progress. Every job's config and every output already in `out` are
    checked before any work (`check_outputs`). progress: one bar over the points of every job with an ETA on
    stderr (`probes.experiment.progress`; None: on a terminal, False: never); the points finished before are
    counted done, not timed."""
    from probes.experiment.progress import Progress
    from probes.grid.lr_grid import run_lr_grid
    from probes.grid.sweep import check_grid_fits, open_sweep

    preset = check_preset(name)
    check_preset_device(preset)
    configs = [job_config(preset, job) for job in preset.jobs]  # every job validated before any work
    out = Path(out)
    check_outputs(preset, configs, out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = [
        len(job.values) * job_seeds(preset, job) * (len(job.etas) if job.kind == "lr_grid" else 1)
        for job in preset.jobs
    ]
    with Progress("reproduce", sum(sizes), unit="points", enabled=progress) as bar:
        say = bar.wrap(say)
        counted = 0
        for i, (job, cfg) in enumerate(zip(preset.jobs, configs), 1):
            path = out / f"{job.name}.nc"
            say(f"[{i}/{len(preset.jobs)}] {job.name}: {job.kind} along {job.axis} = {list(job.values)}")
            bar.set_info(job.name)
            if job.kind == "sweep":
                with open_sweep(
                    cfg, job.axis, list(job.values), job_seeds(preset, job), path, ensemble=ensemble, on_point=say
                ) as sweep:
                    if sweep.units or not path.exists():  # a finished, merged sweep is kept as it is
                        check_grid_fits(cfg, job.axis, list(job.values))
                        sweep.run(on_point=say, progress=bar)
                    else:
                        say(f"{path.name}: finished, kept")
            else:
                run_lr_grid(
                    cfg,
                    job.axis,
                    list(job.values),
                    list(job.etas),
                    job_seeds(preset, job),
                    out=path,
                    ensemble=ensemble,
                    progress=bar,
                )
            counted += sizes[i - 1]
            bar.skip(counted - bar.done)  # a job kept as it was: done, not timed
    return [out / f"{job.name}.nc" for job in preset.jobs]

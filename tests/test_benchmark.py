"""`bench.training` (the `dmft-probe bench` table): structure and equivalences only, never timings (benchmarks
are not tests; shared machines are noisy)."""

import math

import pytest
import torch

from bench.training import (
    ROW_MFU,
    ROW_NAMES,
    ROW_SWEEP_POINT,
    BenchRow,
    PlainTransformer,
    bench_config,
    format_table,
    mfu_config,
    nominal_bf16_peak,
    ours_stepper,
    plain_stepper,
    preset_flops,
    run_bench,
    step_flops_estimate,
    sweep_point_units,
    time_head_stats,
    training_step_flops,
)
from parametrizations.spec import get_preset
from parametrizations.transformer import LWSTransformer, ModelConfig
from probes.experiment.run import train


def test_run_bench_quick_prints_every_row():
    """A tiny run (quick model, 2 steps, 1 repeat, 2 seeds): every row is in the table and in the result, each
    with a finite positive ratio or marked skipped / n/a with a reason."""
    lines: list[str] = []
    rows = run_bench(device="cpu", sizes=("default",), steps=2, repeats=1, ensemble=2, echo=lines.append, quick=True)
    text = "\n".join(lines)
    assert lines[0].startswith("machine: cpu") and "torch" in lines[0] and "threads" in lines[0]
    assert "settings:" in text
    for name in ROW_NAMES:
        assert name in text
        assert any(r.name == name for r in rows)
    for r in rows:
        assert isinstance(r, BenchRow)
        if r.status in ("skipped", "n/a"):
            assert r.ratio is None and r.note.startswith(r.status), r
        else:
            assert r.status in ("pass", "miss", "info"), r
            assert r.ratio is not None and math.isfinite(r.ratio) and r.ratio > 0, r
            assert r.a > 0 and r.b > 0, r
    head = [r for r in rows if r.name.startswith("head-stats")]
    if not torch.cuda.is_available():
        assert all(r.status == "skipped" and r.note == "skipped: no CUDA device" for r in head)
        rms = [r for r in rows if r.name.startswith("rmsnorm")]
        assert len(rms) == 1 and rms[0].status == "skipped" and rms[0].note.startswith("skipped: no CUDA device")
        (mfu,) = [r for r in rows if r.name == ROW_MFU]
        assert mfu.status == "n/a" and mfu.note.startswith("n/a (CUDA only)") and mfu.a is None, mfu
    (point,) = [r for r in rows if r.name == ROW_SWEEP_POINT]  # a number on every device
    assert point.status == "info" and point.size == "smoke/N-mup at 4" and "s per seed-step: auto" in point.note, point


@pytest.mark.parametrize(
    "model",
    [
        {},
        {"N": 64},
        {"N": 8, "H": 2, "L": 3, "ffn_mult": 2.0},
        {"N": 4, "H": 6, "L": 4, "lws": "openelm"},
        {"task": "vision", "N": 4, "seq_len": 16},
    ],
)
def test_plain_transformer_has_our_shapes(model):
    """The plain baseline has exactly our parameters: the same names, shapes and count, and the same output."""
    cfg = ModelConfig(**model)
    ours = LWSTransformer(cfg, get_preset("mup"), "adam")
    plain = PlainTransformer(cfg)
    assert {n: p.shape for n, p in plain.named_parameters()} == {n: p.shape for n, p in ours.named_parameters()}
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in ours.parameters())
    if cfg.task == "lm":
        x = torch.randint(0, cfg.vocab_size, (2, cfg.seq_len))
    else:
        x = torch.randn(2, cfg.seq_len, cfg.d_in)
    with torch.no_grad():
        assert plain(x).shape == ours.reset_parameters(0)(x).shape


def test_ours_stepper_is_train_step():
    """The timed step of row 2 is train()'s step: the same batches, losses and updates, step for step."""
    cfg = bench_config("default", "cpu", steps=4, quick=True)
    losses = train(cfg).train_loss
    stepper = ours_stepper(cfg)
    for _ in range(4):
        stepper.step()
    assert stepper.losses[:4].tolist() == pytest.approx(losses, rel=1e-6)


def test_training_step_flops_counts_matmuls_and_attention():
    """FLOPs of one step = 8 x (tokens x matmul weights) (forward, centring forward, 2x backward) plus 4.5 x the
    attention forward per layer (forward, centring forward, backward 2.5x as torch counts it), causal mask not
    discounted; the plain model has no centring: 6 x and 3.5 x."""
    cfg = bench_config("default", "cpu", steps=2, quick=True)
    m = cfg.model
    B, S, d, N = cfg.batch_size, m.seq_len, m.d_model, m.N
    shapes = m.shapes()
    weights = sum(4 * d * H_l * N + 2 * d * f for H_l, f in zip(shapes.heads, shapes.d_ff)) + d * m.vocab_size
    attn = sum(4 * B * H_l * S * S * N for H_l in shapes.heads)
    assert training_step_flops(ours_stepper(cfg)) == 8 * B * S * weights + 4.5 * attn
    assert training_step_flops(plain_stepper(cfg)) == 6 * B * S * weights + 3.5 * attn


def test_time_head_stats_reports_both_backends():
    """The row-5 measurement, run on the CPU with the torch backend standing in for both (no CUDA here): both
    backends timed once per repeat; peak memory only on CUDA."""
    from probes.hooks.head_stats import head_stats

    calls: list[str] = []

    def both_torch(q, k, scale, causal, q0, k0, backend):
        calls.append(backend)
        return head_stats(q, k, scale, causal, q0, k0, backend="torch")

    res = time_head_stats(
        both_torch, torch.device("cpu"), repeats=2, shape={"B": 1, "H": 3, "S": 8, "N": 4}, calls=2, echo=lambda s: None
    )
    assert set(res) == {"triton", "torch"}
    for r in res.values():
        assert len(r["ms"]) == 2 and all(t > 0 for t in r["ms"]) and r["peak_mib"] is None
    assert calls.count("triton") == calls.count("torch") == 1 + 2 * 2


def test_format_table_marks_missing_rows():
    rows = [
        BenchRow("r", "default", "A", "B", None, None, "s", None, ">= 3", "n/a", "n/a (probes.x missing)"),
        BenchRow("r2", "d256", "A", "B", 2.0, 1.0, "s", 2.0, "", "info"),
    ]
    lines = format_table(rows)
    assert len(lines) == 4 and "n/a (probes.x missing)" in lines[2] and "info" in lines[3]


def test_run_bench_rejects_unknown_size():
    with pytest.raises(ValueError, match="--sizes: unknown 'huge'"):
        run_bench(sizes=("huge",), echo=lambda s: None)


def test_ensemble_row_without_ensemble_module(monkeypatch):
    """Without probes.experiment.ensemble the row says so and the bench goes on."""
    import sys

    from bench import training as benchmark

    monkeypatch.setitem(
        sys.modules, "probes.experiment.ensemble", None
    )  # makes `import probes.experiment.ensemble` fail
    cfg = bench_config("default", "cpu", steps=2, quick=True)
    row = benchmark._bench_ensemble(cfg, "default", 2, 1, torch.device("cpu"), lambda s: None)
    assert (row.status, row.note, row.ratio) == ("n/a", "n/a (probes.experiment.ensemble missing)", None)


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_sweep_point_units_are_the_sweeps_units(mode, tmp_path):
    """Row 7 times the units the sweep itself would run for that size: the same configs and seed groups as
    `open_sweep` plans for the smoke preset's N-mup job at N = 4, under either ensemble mode."""
    from probes.grid.reproduce import PRESETS, job_config, job_seeds
    from probes.grid.sweep import open_sweep

    preset = PRESETS["smoke"]
    job = next(j for j in preset.jobs if j.name == "N-mup")
    cfg = job_config(preset, job)
    with open_sweep(cfg, job.axis, list(job.values), job_seeds(preset, job), tmp_path / "N.nc", ensemble=mode) as sw:
        theirs = [(u.cfg, u.seeds, u.ensemble) for u in sw.units if u.value == 4]
    ours = sweep_point_units("smoke", "N-mup", 4, cfg.device, mode, tmp_path / "parts")
    assert [(u.cfg, u.seeds, u.ensemble) for u in ours] == theirs
    assert sum(len(u.seeds) for u in ours) == job_seeds(preset, job)
    assert all(p.startswith(str(tmp_path / "parts")) for u in ours for p in u.parts)


def test_mfu_row_config_and_nominal_peaks():
    """Row 8's run is d_model 1024 under bf16; the nominal peak is matched on the CUDA device name."""
    cfg = mfu_config("cpu")
    assert (cfg.model.d_model, cfg.model.seq_len, cfg.precision, cfg.probes.enabled) == (1024, 256, "bf16", False)
    assert nominal_bf16_peak("NVIDIA H100 80GB HBM3") == ("H100", 989e12)
    assert nominal_bf16_peak("NVIDIA H100 PCIe") == ("H100 PCIe", 756e12)
    assert nominal_bf16_peak("NVIDIA H200") == ("H200", 989e12)
    assert nominal_bf16_peak("Tesla T4") is None


@pytest.mark.parametrize("centre", ["copy", "none"])
@pytest.mark.parametrize(
    "model", [{"N": 4, "H": 2, "L": 1, "seq_len": 16}, {"N": 4, "H": 3, "L": 2, "task": "vision"}, {"task": "digits"}]
)
def test_step_flops_estimate_is_the_counted_flops(model, centre):
    """The shape-only FLOP count (the gpu preset's budget) equals FlopCounterMode's count of one real step."""
    from probes.experiment.config import make_run_config

    cfg = make_run_config(
        model=model, run={"steps": 2, "batch_size": 4}, param={"centre": centre}, probes={"enabled": False}
    )
    assert step_flops_estimate(cfg) == training_step_flops(ours_stepper(cfg))


def test_preset_flops_sums_every_run():
    """preset_flops of a job = seeds x steps (x eta0 values) x the per-step count summed over its sizes."""
    from probes.grid.reproduce import PRESETS, job_config, job_seeds
    from probes.grid.sweep import value_config

    preset = PRESETS["smoke"]
    flops = preset_flops(preset)
    assert set(flops) == {j.name for j in preset.jobs}
    for job in preset.jobs:
        cfg = job_config(preset, job)
        per = sum(step_flops_estimate(value_config(cfg, job.axis, v)) for v in job.values)
        assert flops[job.name] == job_seeds(preset, job) * max(1, len(job.etas)) * cfg.steps * per > 0

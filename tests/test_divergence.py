"""Divergence, end to end on tiny real runs: a run whose loss or probes turn NaN/inf stops as diverged (per member
in an ensemble) with what it recorded before; a sweep keeps every point's status and step (`status`,
`diverged_at`, dims (axis, seed)) and finishes the other points; `check` fits over the points that did not
diverge and names the diverged ones; plots mark them; `best_eta0` reports the largest stable eta0.

Every divergence here is built, never found at a learning rate measured on one machine: near the edge of
divergence the outcome depends on the CPU's floating-point path (and on whether seeds train as an ensemble), so
a test there passes on one machine and fails on another.
- The diverging sweep trains SP + plain SGD on the vision task (H = 2, L = 1, 20 steps, batch 8, probes every 5)
  at eta0 = 0.01, far inside the stable range, and the test hook `DMFT_PROBE_INJECT_NONFINITE` (`probes.experiment.faults`,
  docs/design.md "Test hooks") turns the training loss of step 7 of every N = 16 run NaN: N = 16 diverges at
  step 7 exactly, whatever the CPU. Margin of the sizes that stay finite, measured on an AMD EPYC (1 thread;
  seeds 0-1 as separate runs and as a 2-seed ensemble; eta0 = 2^0, 2^1, ...): the first eta0 with a diverged
  seed is N=2: 2^8, N=4: 2^15, N=8: 2^8, N=16: 2^13 (one member or run at a time: chaotic), so eta0 = 0.01 is
  4.4 orders of magnitude below every edge.
- The real overflow (`test_a_real_overflow_diverges_within_the_run_and_a_tiny_eta0_stays_finite`): SP + SGD at
  eta0 = 1e25 moves the weights by ~1e25 in one step, so a product of two of them (the attention logits, the
  kernels) overflows float32 (max 3.4e38) at once; the same config at eta0 = 1e-2 stays finite. Measured edges
  (6 steps, N = 2 and 16, seeds 0-1, eta0 = 1e-2, 1e-1, ..., 1e30): every seed finite up to 1e3 (N=2) and 1e4
  (N=16); N=2 seed 1 diverged at 1e4; every seed diverged within the 6 steps from 1e5 up to 1e30 (at step 1 or 2
  from 1e6 on, once at step 5). Margin: 1e-2 is 6 orders of magnitude below the first divergence, 1e25 is 21
  orders above the last eta0 where a seed stayed finite.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

from probes.experiment.config import make_run_config
from probes.experiment.dataset import combine_runs, load, run_dataset
from probes.experiment.faults import ENV as FAULT_ENV
from probes.experiment.faults import Fault, fault_for, parse
from probes.experiment.run import train, train_ensemble
from probes.hooks.recorder import ProbeRecorder

SIZES = [2, 4, 8, 16]  # N; H = 2 -> d = 4, 8, 16, 32
DIVERGING = [16]
SWEEP_ETA0 = 0.01  # 4.4 orders of magnitude inside the stable range (module docstring)
STEPS = 20
SEEDS = 2
INJECTED_AT = 7  # not a log step: found at log step 10 through the training loss
FAULT = f"N={DIVERGING[0]}@{INJECTED_AT}"
SAFE_ETA0, ABSURD_ETA0 = 1e-2, 1e25  # the real overflow test (module docstring)


def sp_sgd(eta0: float, steps: int = STEPS, **model):
    return make_run_config(
        model={"N": 4, "H": 2, "L": 1, "task": "vision", **model},
        param={"preset": "sp"},
        optim={"name": "sgd", "eta0": eta0},
        run={"steps": steps, "batch_size": 8, "heldout_batch": 16},
        probes={"every": 5, "n_samples": 4, "n_points": 2},
    )


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """The diverging sweep, trained by a pool of 2 spawned workers: they see the hook's variable only through the
    environment they inherit."""
    from probes.grid.executors import LocalPool
    from probes.grid.sweep import run_sweep

    out = tmp_path_factory.mktemp("div") / "sweep.nc"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(FAULT_ENV, FAULT)
        run_sweep(sp_sgd(SWEEP_ETA0), "N", SIZES, SEEDS, out, executor=LocalPool(2))
    return out


def test_a_sweep_records_each_diverged_point_and_finishes_the_rest(sweep):
    ds = load(sweep)  # the merged file, read back through h5netcdf
    assert ds.status.dims == ("N", "seed") and ds.diverged_at.dims == ("N", "seed")
    assert ds.status.dtype.kind == "i" and ds.diverged_at.dtype.kind == "i"
    assert ds.status.attrs["flag_meanings"] == "ok diverged" and list(ds.status.attrs["flag_values"]) == [0, 1]
    for n in SIZES:
        status, at = ds.status.sel(N=n).values, ds.diverged_at.sel(N=n).values
        if n in DIVERGING:
            assert (status == 1).all(), (n, status)
            assert (at == INJECTED_AT).all(), (n, at)  # exactly the injected step
        else:
            assert (status == 0).all() and (at == -1).all(), (n, status, at)
            # finished: every log step, finite losses and probes
            assert np.isfinite(ds.heldout_loss.sel(N=n).values).all()
            assert np.isfinite(ds.h_rms.sel(N=n).values).all()
    assert int(ds.step.max()) == STEPS
    # a diverged point keeps what it recorded before: step 0 at least, nothing from its diverged step on
    wide = ds.sel(N=DIVERGING[0])
    for s in range(SEEDS):
        at = int(wide.diverged_at.isel(seed=s))
        kept = wide.step.values[np.isfinite(wide.heldout_loss.isel(seed=s).values)]
        assert 0 in kept and kept.max() <= at
        assert list(kept) == [0, 5]  # found at log step 10; nothing of it kept
    # each part file keeps its run's status as attrs too (unchanged for single runs), and says it was injected
    part = load(sweep.with_name(sweep.name + ".parts") / f"N{DIVERGING[0]}-seed0.nc")
    assert part.attrs["status"] == "diverged" and part.attrs["diverged_at"] == int(wide.diverged_at.isel(seed=0))
    assert int(part.status) == 1 and part.status.dims == ()
    assert part.attrs["injected_fault"] == FAULT
    assert part.attrs["diverged_on"] == f"training loss (injected by {FAULT_ENV}={FAULT})"
    ok = load(sweep.with_name(sweep.name + ".parts") / "N8-seed1.nc")
    assert "injected_fault" not in ok.attrs and ok.attrs["diverged_on"] == ""


def test_runs_written_before_the_status_variables_still_combine_with_it(sweep):
    parts = sweep.with_name(sweep.name + ".parts")
    old = [load(parts / f"N{n}-seed0.nc").drop_vars(["status", "diverged_at"]) for n in (4, DIVERGING[0])]
    merged = combine_runs(old, "N")
    assert list(merged.status.values) == [0, 1] and merged.diverged_at.values[0] == -1


def test_check_fits_over_the_points_that_did_not_diverge_and_names_the_rest(sweep, tmp_path):
    from dmft.check import check, verdict_dataset, verdict_lines

    ds = load(sweep)
    verdicts = check(ds)
    trained = [v for v in verdicts if v.quantity in ("attn_var_trained", "feature_update")]
    assert trained
    for v in trained:
        assert (
            v.diverged == SEEDS and v.diverged_points == f"N={DIVERGING[0]} diverged (seeds 0-1 at step {INJECTED_AT})"
        )
        assert np.isfinite(v.estimate) and v.outcome != "not measured"
        assert "left out of the fit" in v.note
    init = next(v for v in verdicts if v.quantity == "attn_var_init")
    assert init.diverged == 0 and "step-0 records of diverged points used" in init.note
    table = verdict_dataset(verdicts)
    table.to_dataframe().to_csv(tmp_path / "v.csv", index=False)
    table.to_netcdf(tmp_path / "v.nc", engine="h5netcdf")
    header = (tmp_path / "v.csv").read_text().splitlines()[0].split(",")
    assert "diverged" in header and "diverged_points" in header
    back = xr.open_dataset(tmp_path / "v.nc", engine="h5netcdf")
    assert int(back.diverged.max()) == SEEDS and any("diverged" in str(s) for s in back.diverged_points.values)
    lines = verdict_lines(verdicts)
    assert lines[0].rstrip().endswith("diverged")

    # too few sizes left: the verdict says which points diverged, where, and why nothing was fitted
    few = check(ds.sel(N=[2, 4, DIVERGING[0]]))
    v = next(v for v in few if v.quantity == "attn_var_trained")
    assert v.outcome == "not measured" and not v.consistent
    assert v.note.startswith(f"N={DIVERGING[0]} diverged (seeds 0-1 at step {INJECTED_AT});")
    assert v.note.endswith("; a slope needs at least 3 sizes, got 2")
    assert any(v.note in line for line in verdict_lines(few))


def test_plots_mark_the_diverged_points(sweep):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dmft import plots

    ds = load(sweep)

    def legend_texts(ax):
        leg = ax.get_legend()
        return [t.get_text() for t in leg.get_texts()] if leg else []

    fig = plots.loss_curves(ds)
    texts = legend_texts(fig.axes[0])
    assert any("diverged run" in t for t in texts) and f"{DIVERGING[0]} ({SEEDS} of {SEEDS} diverged)" in texts
    plt.close(fig)
    part = load(sweep.with_name(sweep.name + ".parts") / f"N{DIVERGING[0]}-seed0.nc")
    fig = plots.loss_curves(part)  # one diverged run
    assert int(part.diverged_at) == INJECTED_AT and f"diverged at step {INJECTED_AT}" in legend_texts(fig.axes[0])
    plt.close(fig)
    fig = plots.verdict_figure(ds)
    notes = [t for ax in fig.axes for t in legend_texts(ax) if t.startswith("diverged, not drawn")]
    assert notes and all(f"N={DIVERGING[0]} ({SEEDS} seeds)" in t for t in notes)
    plt.close(fig)
    fig = plots.coord_check_panels(ds)
    assert f"N={DIVERGING[0]} diverged" in fig._suptitle.get_text()
    plt.close(fig)
    fig = plots.kernel_panels(ds)
    assert any("diverged at step" in ax.get_title() for ax in fig.axes)
    plt.close(fig)
    losses = ds.heldout_loss.isel(step=-1).expand_dims(eta0=[SWEEP_ETA0])
    ax = plots.lr_transfer(losses, axis="N")
    assert "diverged (top edge)" in legend_texts(ax)
    assert [ln for ln in ax.lines if ln.get_marker() == "x" and len(ln.get_xdata())]
    plt.close(ax.figure)


def test_the_fault_hook_reads_its_rules_and_refuses_a_malformed_one_before_any_work(monkeypatch):
    import probes.experiment.run as run_module

    rules = parse(" N=8 , seed=1 @ 3;H=4@0;N=8@2")
    assert [(dict(f.match), f.step, f.text) for f in rules] == [
        ({"N": 8, "seed": 1}, 3, "N=8 , seed=1 @ 3"),
        ({"H": 4}, 0, "H=4@0"),
        ({"N": 8}, 2, "N=8@2"),
    ]
    assert fault_for(rules, {"N": 8, "H": 2, "L": 1, "seed": 1}).text == "N=8@2"  # the earliest step wins
    assert fault_for(rules, {"N": 8, "H": 4, "L": 1, "seed": 1}).text == "H=4@0"
    assert fault_for(rules, {"N": 4, "H": 2, "L": 1, "seed": 1}) is None
    assert parse("") == [] and parse("  ") == []
    assert isinstance(rules[0], Fault)

    def no_work(*args, **kwargs):
        raise AssertionError("the run started before its test hook was checked")

    monkeypatch.setattr(run_module, "setup", no_work)
    for bad, why in [
        ("N=4", "needs exactly one '@STEP'"),
        ("N=4@x", "STEP that is not"),
        ("Q=4@2", "key 'Q'"),
        ("N=4,N=8@1", "gives N twice"),
        ("N=4@1;", "is empty"),
        ("@3", "not key="),
        ("N=-1@2", "not key="),
        ("N=4@1@2", "exactly one"),
        ("seed=1.5@2", "not key="),
        ("N=4@2x", "STEP that is not"),
    ]:
        monkeypatch.setenv(FAULT_ENV, bad)
        with pytest.raises(ValueError) as e:
            train(sp_sgd(SWEEP_ETA0, steps=2))
        msg = str(e.value)
        assert msg.startswith(f"{FAULT_ENV}: rule ") and why in msg and "\n" not in msg, (bad, msg)


def test_an_injected_fault_stops_a_run_at_exactly_its_step_and_says_so(monkeypatch):
    """Probes every 5 of 10 steps. Step 3 (not a log step): found at log step 5 through the training loss. Step 5
    (a log step): its held-out loss turns NaN too, so nothing of log step 5 is kept. Step 0: no record at all. A
    run the rule does not match is the run without the hook, bit for bit."""
    cfg = sp_sgd(SWEEP_ETA0, steps=10)
    monkeypatch.delenv(FAULT_ENV, raising=False)
    clean = run_dataset(train(cfg))
    cases = {
        "N=4@3": ("training loss", [0], 5),
        "N=4,H=2,L=1,seed=0@5": ("held-out loss", [0], 5),
        "N=4@0": ("held-out loss", [], 0),
    }
    for rule, (on, log_steps, found_at) in cases.items():
        at = int(rule.split("@")[1])
        monkeypatch.setenv(FAULT_ENV, f"N=2@1;{rule};seed=1@0")  # the other rules match nothing here
        r = train(cfg)
        assert r.status == "diverged" and r.diverged_at == at and r.steps_done == found_at, rule
        assert r.log_steps == log_steps and r.extra["recorder"].steps == log_steps
        assert r.extra["diverged_on"] == f"{on} (injected by {FAULT_ENV}={rule})"
        ds = run_dataset(r)
        assert ds.attrs["injected_fault"] == rule and ds.attrs["diverged_at"] == at and int(ds.diverged_at) == at
        assert ds.attrs["diverged_on"] == r.extra["diverged_on"]
        kept = len(r.train_loss)
        assert kept == found_at
        np.testing.assert_array_equal(ds.train_loss.values[:at], clean.train_loss.values[:at])  # untouched before
        if at < kept:
            assert np.isnan(ds.train_loss.values[at])
    monkeypatch.setenv(FAULT_ENV, "N=8@3;N=4,seed=1@3;N=4@11")  # never fires for this run
    untouched = run_dataset(train(cfg))
    assert "injected_fault" not in untouched.attrs and untouched.attrs["status"] == "ok"
    for v in clean.data_vars:
        np.testing.assert_array_equal(untouched[v].values, clean[v].values, err_msg=v)


def test_in_an_ensemble_the_fault_hook_stops_only_the_member_with_that_seed(monkeypatch):
    """Each member is matched by its own seed; the others train on and equal the ensemble without the hook."""
    cfg = sp_sgd(SWEEP_ETA0, steps=10)
    monkeypatch.delenv(FAULT_ENV, raising=False)
    clean = train_ensemble(cfg, [0, 1, 2])
    monkeypatch.setenv(FAULT_ENV, "N=4,seed=1@7;seed=2@10;N=4,seed=2@12")
    ens = train_ensemble(cfg, [0, 1, 2])
    assert [m.status for m in ens] == ["ok", "diverged", "diverged"] and [m.diverged_at for m in ens] == [None, 7, 10]
    assert ens[1].log_steps == [0, 5] and ens[2].log_steps == [0, 5]
    assert ens[1].extra["injected_fault"] == "N=4,seed=1@7" and ens[2].extra["injected_fault"] == "seed=2@10"
    assert "injected_fault" not in ens[0].extra
    a, b = run_dataset(ens[0]), run_dataset(clean[0])
    for v in b.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)


def test_a_real_overflow_diverges_within_the_run_and_a_tiny_eta0_stays_finite():
    """No hook: real float32 overflow found by the loss and probe checks, 21 orders of magnitude past the edge
    (module docstring); the same configs 6 orders below it train to the end with everything finite."""
    for N in (2, 16):
        for seed in (0, 1):
            cfg = replace(sp_sgd(ABSURD_ETA0, steps=6, N=N), seed=seed)
            r = train(cfg)
            assert r.status == "diverged" and 0 <= r.diverged_at < 6, (N, seed, r.status, r.diverged_at)
            assert "injected" not in r.extra["diverged_on"] and "injected_fault" not in r.extra
            assert r.log_steps[0] == 0 and max(r.log_steps) <= r.diverged_at  # the step-0 record at init kept
            ds = run_dataset(r)
            assert np.isfinite(ds.heldout_loss.values).all() and "injected_fault" not in ds.attrs
            ok = train(replace(cfg, optim=replace(cfg.optim, eta0=SAFE_ETA0)))
            assert ok.status == "ok" and ok.steps_done == 6 and ok.log_steps == [0, 5, 6]
            assert np.isfinite(ok.train_loss).all() and np.isfinite(ok.heldout_loss).all()
            assert np.isfinite(run_dataset(ok).h_rms.values).all()


def _inject_inf(monkeypatch, at_call: int, member: int):
    """Make the `at_call`-th probe pass (0-based) of every recorder return h_rms = inf for `member`."""
    real = ProbeRecorder.stats
    calls: dict[int, int] = {}

    def stats(self, model):
        out = real(self, model)
        k = calls[id(self)] = calls.get(id(self), -1) + 1
        if k == at_call:
            out["h_rms"][member, -1] = float("inf")
        return out

    monkeypatch.setattr(ProbeRecorder, "stats", stats)


def test_a_run_whose_probes_turn_non_finite_stops_as_diverged(monkeypatch):
    """Probes every 5 steps; the third probe pass (step 10) records h_rms = inf while every loss stays finite."""
    cfg = sp_sgd(0.05)
    clean = train(cfg)
    _inject_inf(monkeypatch, at_call=2, member=0)
    r = train(cfg)
    assert clean.status == "ok" and r.status == "diverged" and r.diverged_at == 10 and r.steps_done == 10
    assert "probes (h_rms)" in r.extra["diverged_on"]
    assert r.log_steps == [0, 5] and r.extra["recorder"].steps == [0, 5]  # nothing of step 10 kept
    assert np.isfinite(r.train_loss).all() and len(r.train_loss) == 10
    ds = run_dataset(r)
    assert ds.attrs["status"] == "diverged" and ds.attrs["diverged_at"] == 10 and int(ds.diverged_at) == 10
    assert list(ds.step.values) == [0, 5] and np.isfinite(ds.h_rms.values).all()

    # the same in a seed ensemble: member 1 stops as its separate run does, members 0 and 2 go on untouched
    monkeypatch.undo()
    _inject_inf(monkeypatch, at_call=2, member=1)
    ens = train_ensemble(cfg, [0, 1, 2])
    monkeypatch.undo()
    assert [m.status for m in ens] == ["ok", "diverged", "ok"]
    _inject_inf(monkeypatch, at_call=2, member=0)
    alone = train(replace(cfg, seed=1))
    monkeypatch.undo()
    from tests.test_ensemble import assert_same_run

    assert_same_run(ens[1], alone)
    assert_same_run(ens[0], clean)
    assert ens[1].extra["recorder"].steps == [0, 5] and ens[2].extra["recorder"].steps == [0, 5, 10, 15, 20]


def test_statistics_that_are_nan_by_construction_do_not_stop_a_run():
    """A one-head layer (variance over heads undefined, attn_raw padded) and a zero-initialised readout
    (io_movement 0/0) are not divergence."""
    cfg = make_run_config(
        model={"N": 4, "H": 2, "L": 2, "task": "vision", "lws": "explicit", "lws_heads": (2, 1), "lws_d_ff": (8, 8)},
        param={"preset": "mup", "centre": "zero_readout"},
        optim={"name": "sgd", "eta0": 0.5},
        run={"steps": 6, "batch_size": 8},
        probes={"every": 3, "n_samples": 4, "n_points": 2},
    )
    r = train(cfg)
    assert r.status == "ok", r.extra["diverged_on"]
    ds = run_dataset(r)
    assert np.isnan(ds.attn_var_heads.sel(layer=1)).all() and np.isnan(ds.attn_raw.sel(layer=1, head=1)).all()
    assert not np.isfinite(ds.io_movement.sel(io="readout")).all()
    assert list(ds.step.values) == [0, 3, 6]


def test_best_eta0_reports_the_largest_stable_eta0():
    from dmft.transfer import best_eta0

    etas = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    centres = np.array([0.4, 1.6, 0.4])  # the loss is lowest at these eta0, per size
    loss = (np.log2(etas)[:, None, None] - np.log2(centres)[None, :, None]) ** 2 + np.zeros((1, 1, 4))
    loss += 0.01 * np.random.default_rng(0).standard_normal(loss.shape)  # (eta0, N, seed)
    loss[3:, 0] = np.nan  # N=4: 0.8 and 1.6 diverge
    loss[4, 1, 3] = np.inf  # N=16: one seed of its optimum 1.6 diverges
    loss[:, 2] = np.nan  # N=64: every eta0 diverges
    t = best_eta0(xr.DataArray(loss, dims=("eta0", "N", "seed"), coords={"eta0": etas, "N": [4, 16, 64]}), "N")
    assert list(t.best[:2]) == [0.4, 0.8] and np.isnan(t.best[2])
    assert list(t.stable[:2]) == [0.4, 0.8] and np.isnan(t.stable[2]) and list(t.stable_edge) == [True, True, True]
    # a diverged eta0 never wins, not even in a resample that happens to leave out the seed that diverged
    assert t.freq[1, 4] == 0 and t.freq[1, 3] == 1 and t.freq[2].sum() == 0
    line = t.line()
    assert "largest stable eta0: N=4: 0.4 (0.8 diverged), N=16: 0.8 (1.6 diverged)" in line
    assert "N=64: none (every eta0 diverged)" in line and "N=64: none (the smallest, 0.1, diverged)" in line
    nothing = best_eta0(
        xr.DataArray(
            np.ones((len(etas), 2, 2)) + etas[:, None, None],  # nothing diverged
            dims=("eta0", "N", "seed"),
            coords={"eta0": etas, "N": [4, 16]},
        ),
        "N",
    )
    assert list(nothing.stable) == [1.6, 1.6] and not nothing.stable_edge.any()
    assert "N=4: >= 1.6 (none diverged)" in nothing.line()


def _poison_readout_at_n8(monkeypatch, seeds: set[int]) -> None:
    """inf in the readout of the N = 8 models of `seeds`, whether they are trained as an ensemble (member e is
    seed e) or one by one (DMFT_PROBE_ENSEMBLE=off)."""
    import probes.experiment.run as run_module

    real = run_module.build_model

    def poisoned(cfg, p, optimizer, seed, *args, **kwargs):
        model = real(cfg, p, optimizer, seed, *args, **kwargs)
        if cfg.N == 8:
            with torch.no_grad():
                if model.ensemble:
                    for member, s in enumerate(seed):
                        if s in seeds:
                            model.readout.weight[member][0, 0] = float("inf")
                elif seed in seeds:
                    model.readout.weight[0, 0] = float("inf")
        return model

    monkeypatch.setattr(run_module, "build_model", poisoned)


def test_a_point_that_diverges_at_step_0_is_kept_with_nothing_recorded(tmp_path, monkeypatch):
    """inf in one seed's readout: its held-out loss at step 0 is inf, so it has no probe record at all; the
    sweep still merges it (its variables NaN), `check` names it, and init quantities fit over the others."""
    from dmft.check import check
    from probes.grid.sweep import run_sweep

    _poison_readout_at_n8(monkeypatch, {0})
    cfg = make_run_config(
        model={"N": 4, "H": 2, "L": 1, "task": "vision"},
        optim={"name": "sgd", "eta0": 0.5},
        run={"steps": 4, "batch_size": 8},
        probes={"every": 2, "n_samples": 4, "n_points": 2},
    )
    run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "s.nc")
    ds = load(tmp_path / "s.nc")
    assert ds.status.values.tolist() == [[0, 0], [0, 0], [1, 0]]
    assert ds.diverged_at.values.tolist() == [[-1, -1], [-1, -1], [0, -1]]
    assert np.isnan(ds.h_rms.sel(N=8, seed=0)).all() and np.isfinite(ds.h_rms.sel(N=8, seed=1)).all()
    p1 = next(v for v in check(ds) if v.key == "P1")
    assert p1.diverged == 1 and p1.diverged_points == "N=8 diverged (seed 0 at step 0)"
    assert np.isfinite(p1.estimate)


@pytest.mark.parametrize("ensemble", ["auto", "off"])
def test_a_point_whose_every_seed_diverges_at_step_0_still_merges(tmp_path, monkeypatch, ensemble):
    """Every seed of N = 8 diverges at step 0, so that point has no probe record (no `depth`, `sample` dims) in
    any run: the merge used to fail ("'depth' not present in all datasets") and lose the whole sweep; found with
    DMFT_PROBE_ENSEMBLE=off, where the one-seed poisoning above hit both separate runs."""
    from probes.grid.sweep import run_sweep

    _poison_readout_at_n8(monkeypatch, {0, 1})
    cfg = make_run_config(
        model={"N": 4, "H": 2, "L": 1, "task": "vision"},
        optim={"name": "sgd", "eta0": 0.5},
        run={"steps": 4, "batch_size": 8},
        probes={"every": 2, "n_samples": 4, "n_points": 2},
    )
    run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "s.nc", ensemble=ensemble)
    ds = load(tmp_path / "s.nc")
    assert ds.status.values.tolist() == [[0, 0], [0, 0], [1, 1]]
    assert ds.diverged_at.values.tolist() == [[-1, -1], [-1, -1], [0, 0]]
    assert np.isnan(ds.h_rms.sel(N=8)).all() and np.isfinite(ds.h_rms.sel(N=[2, 4])).all()
    assert ds.sizes["depth"] == 2  # L = 1: h^0 and h^1, from the runs that recorded them

"""Divergence, end to end on tiny real runs: a run whose loss or probes turn NaN/inf stops as diverged (per member
in an ensemble) with what it recorded before; a sweep keeps every point's status and step (`status`,
`diverged_at`, dims (axis, seed)) and finishes the other points; `check` fits over the points that did not
diverge and names the diverged ones; plots mark them; `best_eta0` reports the largest stable eta0.

The diverging sweep: SP + plain SGD on the vision task (H = 2, L = 1, 20 steps, batch 8, probes every 5). SP's
learning rate does not scale with width, so a large eta0 diverges the wide models first. With LayerNorm before
every branch and the readout, and a bounded cross-entropy gradient, the weights grow by ~eta0 per step rather than
exponentially, so a run turns NaN/inf only once something overflows float32: first the probes (the variance over
heads of A grows as the fourth power of the weights), then the loss. That takes a large eta0, reached much earlier
at larger width. Measured with these settings (20 steps, seeds 0-3, eta0 in factors of 2; largest eta0 with
every seed finite -> smallest with every seed diverged): N=2: >= 2^15; N=4: 2^14 -> 2^15; N=8: 2^13 -> 2^15
(2^14 partial); N=64: 2^9 -> 2^11 (2^10 partial); N=256: 2^8 -> 2^9. At eta0 = 2^11 the stable sizes N <= 8 stay
finite up to 4x that eta0, and N=256 diverges (at step 5) from 4x below it. Without probes (loss only) the edges
are 10-30x higher (N=8: 2^17 -> 2^18, N=256: 2^12 -> 2^14).
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import xarray as xr

from probes.config import make_run_config
from probes.dataset import combine_runs, load, run_dataset
from probes.recorder import ProbeRecorder
from probes.run import train, train_ensemble

SIZES = [2, 4, 8, 256]           # N; H = 2 -> d = 4, 8, 16, 512
DIVERGING = [256]
SWEEP_ETA0 = 2.0 ** 11           # see the module docstring for the measured edges
STEPS = 20
SEEDS = 2


def sp_sgd(eta0: float, steps: int = STEPS, **model):
    return make_run_config(model={"N": 4, "H": 2, "L": 1, "task": "vision", **model},
                           param={"preset": "sp"}, optim={"name": "sgd", "eta0": eta0},
                           run={"steps": steps, "batch_size": 8, "heldout_batch": 16},
                           probes={"every": 5, "n_samples": 4, "n_points": 2})


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from probes.sweep import run_sweep

    out = tmp_path_factory.mktemp("div") / "sweep.nc"
    run_sweep(sp_sgd(SWEEP_ETA0), "N", SIZES, SEEDS, out)
    return out


def test_a_sweep_records_each_diverged_point_and_finishes_the_rest(sweep):
    ds = load(sweep)                                         # the merged file, read back through h5netcdf
    assert ds.status.dims == ("N", "seed") and ds.diverged_at.dims == ("N", "seed")
    assert ds.status.dtype.kind == "i" and ds.diverged_at.dtype.kind == "i"
    assert ds.status.attrs["flag_meanings"] == "ok diverged" and list(ds.status.attrs["flag_values"]) == [0, 1]
    for n in SIZES:
        status, at = ds.status.sel(N=n).values, ds.diverged_at.sel(N=n).values
        if n in DIVERGING:
            assert (status == 1).all(), (n, status)
            assert ((at >= 0) & (at <= STEPS // 2)).all(), (n, at)     # by half-way: far from the edge
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
    # each part file keeps its run's status as attrs too (unchanged for single runs)
    part = load(sweep.with_name(sweep.name + ".parts") / f"N{DIVERGING[0]}-seed0.nc")
    assert part.attrs["status"] == "diverged" and part.attrs["diverged_at"] == int(wide.diverged_at.isel(seed=0))
    assert int(part.status) == 1 and part.status.dims == ()


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
        assert v.diverged == SEEDS and v.diverged_points.startswith(f"N={DIVERGING[0]} diverged (seeds 0-1 at step")
        assert np.isfinite(v.slope) and v.measured != "not fitted"
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
    assert v.measured == "not fitted" and not v.consistent
    assert v.note.startswith(f"N={DIVERGING[0]} diverged (seeds 0-1 at step")
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
    fig = plots.loss_curves(part)                            # one diverged run
    assert f"diverged at step {int(part.diverged_at)}" in legend_texts(fig.axes[0])
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
    assert r.log_steps == [0, 5] and r.extra["recorder"].steps == [0, 5]       # nothing of step 10 kept
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
    cfg = make_run_config(model={"N": 4, "H": 2, "L": 2, "task": "vision", "lws": "explicit", "lws_heads": (2, 1),
                                 "lws_d_ff": (8, 8)},
                          param={"preset": "mup", "centre": "zero_readout"}, optim={"name": "sgd", "eta0": 0.5},
                          run={"steps": 6, "batch_size": 8}, probes={"every": 3, "n_samples": 4, "n_points": 2})
    r = train(cfg)
    assert r.status == "ok", r.extra["diverged_on"]
    ds = run_dataset(r)
    assert np.isnan(ds.attn_var_heads.sel(layer=1)).all() and np.isnan(ds.attn_raw.sel(layer=1, head=1)).all()
    assert not np.isfinite(ds.io_movement.sel(io="readout")).all()
    assert list(ds.step.values) == [0, 3, 6]


def test_best_eta0_reports_the_largest_stable_eta0():
    from dmft.transfer import best_eta0

    etas = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    centres = np.array([0.4, 1.6, 0.4])                  # the loss is lowest at these eta0, per size
    loss = (np.log2(etas)[:, None, None] - np.log2(centres)[None, :, None]) ** 2 + np.zeros((1, 1, 4))
    loss += 0.01 * np.random.default_rng(0).standard_normal(loss.shape)     # (eta0, N, seed)
    loss[3:, 0] = np.nan                       # N=4: 0.8 and 1.6 diverge
    loss[4, 1, 3] = np.inf                     # N=16: one seed of its optimum 1.6 diverges
    loss[:, 2] = np.nan                        # N=64: every eta0 diverges
    t = best_eta0(xr.DataArray(loss, dims=("eta0", "N", "seed"), coords={"eta0": etas, "N": [4, 16, 64]}), "N")
    assert list(t.best[:2]) == [0.4, 0.8] and np.isnan(t.best[2])
    assert list(t.stable[:2]) == [0.4, 0.8] and np.isnan(t.stable[2]) and list(t.stable_edge) == [True, True, True]
    # a diverged eta0 never wins, not even in a resample that happens to leave out the seed that diverged
    assert t.freq[1, 4] == 0 and t.freq[1, 3] == 1 and t.freq[2].sum() == 0
    line = t.line()
    assert "largest stable eta0: N=4: 0.4 (0.8 diverged), N=16: 0.8 (1.6 diverged)" in line
    assert "N=64: none (every eta0 diverged)" in line and "N=64: none (the smallest, 0.1, diverged)" in line
    nothing = best_eta0(xr.DataArray(np.ones((len(etas), 2, 2)) + etas[:, None, None],   # nothing diverged
                                     dims=("eta0", "N", "seed"), coords={"eta0": etas, "N": [4, 16]}), "N")
    assert list(nothing.stable) == [1.6, 1.6] and not nothing.stable_edge.any()
    assert "N=4: >= 1.6 (none diverged)" in nothing.line()


def test_a_point_that_diverges_at_step_0_is_kept_with_nothing_recorded(tmp_path, monkeypatch):
    """inf in one member's readout: its held-out loss at step 0 is inf, so it has no probe record at all; the
    sweep still merges it (its variables NaN), `check` names it, and init quantities fit over the others."""
    import probes.run as run_module
    from dmft.check import check
    from probes.sweep import run_sweep

    real = run_module.build_model

    def poisoned(cfg, *args, **kwargs):
        model = real(cfg, *args, **kwargs)
        if cfg.N == 8:
            with torch.no_grad():
                (model.readout.weight[0] if model.ensemble else model.readout.weight)[0, 0] = float("inf")
        return model

    monkeypatch.setattr(run_module, "build_model", poisoned)
    cfg = make_run_config(model={"N": 4, "H": 2, "L": 1, "task": "vision"}, optim={"name": "sgd", "eta0": 0.5},
                          run={"steps": 4, "batch_size": 8}, probes={"every": 2, "n_samples": 4, "n_points": 2})
    run_sweep(cfg, "N", [2, 4, 8], 2, tmp_path / "s.nc")
    ds = load(tmp_path / "s.nc")
    assert ds.status.values.tolist() == [[0, 0], [0, 0], [1, 0]]
    assert ds.diverged_at.values.tolist() == [[-1, -1], [-1, -1], [0, -1]]
    assert np.isnan(ds.h_rms.sel(N=8, seed=0)).all() and np.isfinite(ds.h_rms.sel(N=8, seed=1)).all()
    p1 = next(v for v in check(ds) if v.key == "P1")
    assert p1.diverged == 1 and p1.diverged_points == "N=8 diverged (seed 0 at step 0)"
    assert np.isfinite(p1.slope)

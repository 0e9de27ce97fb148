"""Regression tests asserting variance and depth scaling exponents (docs/predictions.md).

Every sweep here is seeded (init seeds 0..n-1, data seed 0) and deterministic on CPU; sizes are small.
The measured values quoted next to each tolerance come from these exact settings (2026-11-28; the trained P2
values 2026-12-01, after the Adam readout fix). The fit is `dmft.fit.slope_fit`: the same least-squares slope as
before, with the 95% joint-jackknife interval (t quantile); the intervals quoted in brackets were measured with
the per-size seed bootstrap it replaced.
"""

import numpy as np
import pytest

from dmft import measure
from dmft.check import check
from dmft.fit import slope_fit
from dmft.predictions import REGISTRY, hypotheses_for, p2_hypotheses, planned_rows
from probes.experiment.config import make_run_config
from probes.grid.sweep import run_sweep

NS = [4, 8, 16, 32, 64]
LS = [1, 2, 4, 8, 16]


def sweep(tmp_path, preset, axis, values, seeds=4, init_only=True, N=8, **kw):
    cfg = make_run_config(
        model={"N": N, "H": 4, "L": 2, "task": "vision"},
        param={"preset": preset},
        optim={"name": "adam", "eta0": kw.pop("eta0", 0.05)},
        run={"steps": kw.pop("steps", 200), "batch_size": 32},
        probes={"every": 50, "n_samples": 16},
    )
    return run_sweep(cfg, axis, values, seeds, tmp_path / f"{preset}-{axis}.nc", init_only=init_only)


@pytest.mark.parametrize("preset,alpha_A", [("mup-sqrt", 0.5), ("mup", 1.0)])
def test_p1_head_variance_at_init_scales_as_N_to_1_minus_2alpha(tmp_path, preset, alpha_A):
    ds = sweep(tmp_path, preset, "N", NS)
    sizes, values = measure.attn_var_init(ds, "N")
    fit = slope_fit(sizes, values)
    # measured: alpha_A=1/2 slope -0.04 [-0.07, -0.01]; alpha_A=1 slope -1.04 [-1.07, -1.01]; the 0.15
    # is about 5x the CI half-width
    assert abs(fit.slope - (1 - 2 * alpha_A)) <= 0.15, fit
    # the constant is exact: Var_h A(0) = N^(1-2 alpha_A) (LN makes q, k coordinates N(0, 1)); measured ratio
    # 0.97-1.11 per size with 4 seeds x 4 heads x 2 layers; allow 15%
    ratio = values.mean(axis=1) / sizes ** (1 - 2 * alpha_A)
    assert np.all(np.abs(ratio - 1) < 0.15), ratio


@pytest.mark.parametrize("preset,alpha_L", [("mup", 1.0), ("depth-sqrt", 0.5)])
def test_p10_residual_growth_with_depth_at_init(tmp_path, preset, alpha_L):
    # alpha_L = 1: the growth ~ L^-1 is small at large L and each seed's value is noisy, so the sweep is wider
    # (N = 32, d = 128) and stops at L = 8 with 8 seeds. Measured over disjoint seed sets (scratch sweep of 24
    # seeds split by seed, 2026-12): per-seed growth at L = 8 is 0.063 +- 0.011 (N = 32) against 0.029 +- 0.019 at
    # L = 16, N = 8, where 4 of 48 seeds were <= 0 and the log-log fit refused 3 of 12 seed sets of 4.
    # alpha_L = 1/2 keeps N = 8, L = 1..16 with 8 seeds (not re-measured across seed sets): with slope_fit's
    # joint-jackknife interval (t quantile of 3 degrees of freedom) 4 seeds gave a width of 0.35 at seeds 0-3.
    N, sizes_L, seeds = (32, [1, 2, 4, 8], 8) if alpha_L == 1.0 else (8, LS, 8)
    ds = sweep(tmp_path, preset, "L", sizes_L, seeds=seeds, N=N)
    sizes, values = measure.stream_growth_init(ds, "L")
    fit = slope_fit(sizes, values)
    # alpha_L=1 (Brownian motion suppressed, ~L^-1): slope over 6 seed sets of 4: -0.980 sd 0.041, so with 8 seeds
    # sd ~0.029 and |slope + 1| <= 0.15 holds with margin (0.15 - 0.02) / 0.029 = 4.5 sd.
    # alpha_L=1/2 slope +0.006 [-0.02, +0.03] (O(1) Brownian growth). Tolerance 0.15 ~ 2x the CI half-width.
    assert abs(fit.slope - (1 - 2 * alpha_L)) <= 0.15, fit
    # alpha_L=1: CI width over seed sets of 4: 0.127 sd 0.036 (max 0.186), of 8: 0.105 sd 0.023 (3 sets); margin
    # to 0.3 >= (0.3 - 0.127) / 0.036 = 4.8 sd already at 4 seeds. Before (N = 8, L = 1..16, 4 seeds): width
    # 0.296 sd 0.089 over the 9 sets that could be fitted, i.e. at the edge.
    assert fit.hi - fit.lo < 0.3


def test_sp_residual_grows_with_depth(tmp_path):
    ds = sweep(tmp_path, "sp", "L", LS, seeds=2)
    fit = slope_fit(*measure.stream_growth_init(ds, "L"))
    # SP has no depth factor: the L branch variances add up, ~L^1 (measured +1.12)
    assert fit.slope > 0.8, fit


def test_predictions_follow_the_parametrization():
    def e(key, row, alpha_A, alpha_L, axis, standard=False):
        return hypotheses_for(key, row, alpha_A, alpha_L, standard, axis).exponent

    assert {a: e("P1", "Var_h A(0)", a, 1.0, "N") for a in (0.5, 0.75, 1.0)} == {0.5: 0.0, 0.75: -0.5, 1.0: -1.0}
    assert {a: e("P10", "stream growth", 1.0, a, "L") for a in (0.5, 1.0)} == {0.5: 0.0, 1.0: -1.0}
    assert {a: e("P8", "W_QK movement", 1.0, a, "L") for a in (0.5, 1.0)} == {0.5: -0.5, 1.0: 0.0}
    # P2: the CLT exponent is the prediction; the caption's (doubled) exponent is an alternative, never a rescue
    for alpha_A, clt in ((1.0, -1.0), (0.75, -0.5)):
        h = p2_hypotheses(alpha_A)
        assert h.exponent == clt and 2 * clt in [a.value for a in h.alternatives]
    assert p2_hypotheses(0.5).exponent == 0.0 and [a.value for a in p2_hypotheses(0.5).alternatives] == [-1.0]
    sp = hypotheses_for("coord", "feature update", 0.5, 0.0, True, "N")
    assert sp.prediction.shape == "above" and sp.alternatives[0].value == 0.0
    assert not [p for p in planned_rows(REGISTRY, 1.0, 1.0, False, "N", False) if REGISTRY[p.key].trained]


def test_fit_recovers_a_power_law_and_its_interval():
    rng = np.random.default_rng(0)
    sizes = np.array([4, 8, 16, 32, 64])
    values = 3.0 * sizes[:, None] ** -0.7 * np.exp(0.1 * rng.standard_normal((5, 6)))
    fit = slope_fit(sizes, values)
    assert fit.lo < -0.7 < fit.hi and abs(fit.slope + 0.7) < 0.1 and abs(fit.constant - 3) < 0.5
    with pytest.raises(ValueError, match="at least 3"):
        slope_fit(sizes[:2], values[:2])
    with pytest.raises(ValueError, match="non-positive"):
        slope_fit(sizes, -values)


@pytest.mark.parametrize("preset", ["mup-sqrt", "mup"])
def test_p2_head_variance_after_a_short_training_run(tmp_path, preset):
    """alpha_A = 1/2: Var over heads of A stays flat in N; alpha_A = 1: it decays (heads collapse as N grows).

    Time matters (finding, README "Known deviations"; `python bench/p2_over_time.py`, the same settings run to
    300 steps): with the width-stable rules the alpha_A = 1 slope of Var_h A(t) under Adam is -1.00 at step 0,
    -0.93 at step 100, -0.66 at step 200 and -0.47 at step 300 (under SGD it stays at -0.98 to -1.05); the
    alpha_A = 1/2 slope is +0.01, +0.12, +0.14, +0.17. The thresholds are asserted for the 100-step run they
    were written for; the drift at longer times is reported, not asserted.
    """
    ds = sweep(tmp_path, preset, "N", NS, seeds=3, init_only=False, steps=100)
    verdicts = {v.row: v for v in check(ds) if v.key == "P2"}
    fit = slope_fit(*measure.QUANTITIES["attn_var_trained"](ds, "N"))
    if preset == "mup-sqrt":
        # measured +0.12 [+0.07, +0.17]
        assert abs(fit.slope) < 0.25, fit
        v = verdicts["Var_h A"]
        assert v.outcome != "refuted" and v.alternatives[0].disjoint(v.lo, v.hi), (v.measured(), v.outcome)
    else:
        # measured -0.93 [-1.02, -0.86]: the N^-1 (CLT) hypothesis, not the caption's N^-2
        assert fit.slope < -0.7, fit
        v = verdicts["Var_h A"]
        caption = next(a for a in v.alternatives if a.name.startswith("caption"))
        assert v.outcome != "refuted" and caption.disjoint(v.lo, v.hi), v


@pytest.mark.parametrize("preset", ["mup", "mup-sqrt"])
def test_init_only_sweep_check_is_consistent(tmp_path, preset):
    """The issue's acceptance run: `sweep --axis N --values 4,8,16,32,64 --seeds 4 --init-only` then `check`,
    with the CLI's defaults (LM task, H=4, L=2): every initialisation prediction consistent."""
    cfg = make_run_config(param={"preset": preset})
    ds = run_sweep(cfg, "N", NS, 4, tmp_path / "s.nc", init_only=True)
    verdicts = check(ds)
    assert {v.key for v in verdicts} == {"P1", "P3"}
    # the predictions are true at init: never refuted; at 4 seeds (t quantile of 3 degrees of freedom) a row may
    # be underpowered, and then it says what would decide it
    assert all(v.outcome in ("consistent", "underpowered") for v in verdicts), [
        (v.key, v.measured(), v.outcome) for v in verdicts
    ]
    assert all(v.needs for v in verdicts if v.outcome == "underpowered")


# ------------------------------------------------------------------------------------------------------------ P3
def _p3(ds):
    return next(v for v in check(ds) if v.key == "P3")


def test_p3_variance_gamma_is_confirmed_and_a_gaussian_a_is_refuted(tmp_path):
    """P3 on a real init-only sweep along H = 2, 4, 8 at N = 2 (24 seeds, L = 2, 4 probe points: 384 (seed, layer,
    head) clusters): the mean log-likelihood ratio of variance-gamma(2) over the Gaussian of the same variance is
    consistent (> 0). The same dataset on disk with every A(0) replaced by Gaussian draws of the same variance is
    refuted: the rule can fail both ways. Measured over 3 disjoint seed sets (`python bench/p3_margin.py 0,24,48`):
    estimates +0.066, +0.081, +0.067 nats (KL(VG || Gauss) = 0.072 at N = 2), lower ends +0.047 to +0.060 (mean
    0.052, sd 0.007: 7 sd above 0); the Gaussian copies' upper ends -0.066 to -0.041 (mean -0.051, sd 0.013: 4 sd
    below 0)."""
    import xarray as xr

    from dmft.solvers import attention_law

    ds = sweep(tmp_path, "mup", "H", [2, 4, 8], seeds=24, N=2)
    v = _p3(ds)
    assert v.primary and v.band == 0.0 and v.outcome == "consistent", (v.measured(), v.note)
    raw = ds.attn_raw.copy()
    x = raw.values
    g = np.random.default_rng(0).standard_normal(x.shape) * attention_law(2, 1.0).std()
    ds.assign(attn_raw=raw.copy(data=np.where(np.isfinite(x), g, np.nan))).to_netcdf(tmp_path / "gauss.nc")
    with xr.open_dataset(tmp_path / "gauss.nc") as f:
        w = _p3(f.load())
    assert w.outcome == "refuted", (w.measured(), w.note)


def test_p3_at_a_handful_of_heads_is_underpowered_and_says_what_would_decide_it(tmp_path):
    """Two seeds along N = 4, 8, 16 (16 clusters; KL(VG || Gauss) is 0.024 nats at N = 4 and 0.0076 at 8): the
    interval cannot tell the laws apart, and the row says what would."""
    v = _p3(sweep(tmp_path, "mup", "N", [4, 8, 16], seeds=2))
    assert v.outcome == "underpowered" and v.needs, (v.measured(), v.outcome)

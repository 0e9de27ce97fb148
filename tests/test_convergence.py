"""dmft.convergence: distance-from-the-limit rates (largest size and Richardson limits, with the noise-floor
correction) and seed-variance rates, on synthetic sweeps with known answers, and once on a real tiny sweep.

Synthetic sweeps: Q(n, seed) = Q_oo + c/n + sigma n^noise_exp z (z standard normal, independent per entry, seed,
step), entries (sample, output) as `probe_outputs`. With noise_exp = -1/2 the expected mean-square distance from
the limit is sigma^2/n + c^2/n^2, and the seed variance sigma^2/n."""

import numpy as np
import pytest
import xarray as xr

from dmft import convergence as cv

SIZES = (8, 16, 32, 64, 128)


def synthetic(
    sizes=SIZES,
    seeds=24,
    sigma=1.0,
    c=0.3,
    gen=0,
    noise_exp=-0.5,
    entries=(8, 5),
    steps=(0, 10),
    axis="H",
    zero_step0=False,
) -> tuple[xr.Dataset, np.ndarray]:
    """A sweep dataset with `probe_outputs` (axis, seed, step, sample, output) and `heldout_loss` (axis, seed,
    step), and the true limit Q_oo of the outputs (sample, output)."""
    rng = np.random.default_rng(gen)
    n = np.asarray(sizes, dtype=float)[:, None, None, None, None]
    q_inf = rng.normal(size=entries)
    bias = c * rng.normal(size=entries)
    z = rng.normal(size=(len(sizes), seeds, len(steps)) + tuple(entries))
    q = q_inf + bias / n + sigma * n**noise_exp * z
    if zero_step0:
        q[:, :, 0] = 0.0  # centred outputs at init: f - f0 = 0
    loss = (
        1.0 + 0.5 / n[..., 0, 0] + sigma * n[..., 0, 0] ** noise_exp * rng.normal(size=(len(sizes), seeds, len(steps)))
    )
    coords = {axis: np.asarray(sizes), "seed": np.arange(seeds), "step": np.asarray(steps)}
    ds = xr.Dataset(
        {
            "probe_outputs": ((axis, "seed", "step", "sample", "output"), q, {"units": "1"}),
            "heldout_loss": ((axis, "seed", "step"), loss, {"units": "nats"}),
        },
        coords=coords,
        attrs={"sweep_axis": axis, "task": "vision"},
    )
    return ds, q_inf


def loglog_slope(sizes, y) -> float:
    return float(np.polyfit(np.log(sizes), np.log(y), 1)[0])


# ---- both limit estimates recover the rate --------------------------------------------------------------------


@pytest.mark.parametrize("method", cv.METHODS)
def test_both_methods_recover_the_rate_of_noise_plus_bias(method):
    ds, _ = synthetic(seeds=24, c=0.3)
    r = cv.convergence_rate(ds, "probe_outputs", method=method, n_boot=1000)
    # The expected distance sigma^2/n + c^2/n^2 (mean c^2 = 0.09) has a log-log slope of -1.00 over 8..128. Over 40
    # generator seeds the fitted slope had mean -0.99 (largest) / -1.00 (richardson), sd 0.022 / 0.020, and the 95%
    # interval held -1 in 95% / 97% of them (half-widths 0.059 / 0.042: 1.4 / 1.05 times 1.96 sd, conservative,
    # not narrow): the tolerance 0.1 is ~4.5 sd.
    assert r.lo <= -1.0 <= r.hi, r.text()
    assert abs(r.slope + 1.0) < 0.1, r.text()
    assert r.step == 10 and r.reason == ""
    assert list(r.fit_sizes) == (list(SIZES[:-1]) if method == "largest" else list(SIZES))
    assert r.units == "(1)^2"


def test_the_two_limit_estimates_agree_where_they_should():
    ds, _ = synthetic(seeds=24, c=0.3)
    a = cv.convergence_rate(ds, "probe_outputs", method="largest", n_boot=1000)
    b = cv.convergence_rate(ds, "probe_outputs", method="richardson", n_boot=1000)
    ag = cv.agreement(a, b)
    assert ag and str(ag).startswith("agree") and "richardson" in str(ag)
    # a deliberately wrong Richardson order (n^-3 corrections) on a strongly biased sweep disagrees
    biased, _ = synthetic(seeds=24, c=3.0, sigma=0.05)
    a = cv.convergence_rate(biased, "probe_outputs", method="largest", n_boot=500)
    b = cv.convergence_rate(biased, "probe_outputs", method="richardson", order=3.0, n_boot=500)
    ag = cv.agreement(a, b)
    assert not ag and str(ag).startswith("disagree"), str(ag)


def test_pure_bias_richardson_is_exact_and_largest_has_its_documented_bias():
    ds, q_inf = synthetic(seeds=4, sigma=0.0, c=1.0)
    lim = cv.limit_estimate(ds.probe_outputs, "H", "richardson")
    np.testing.assert_allclose(
        lim.transpose("step", "sample", "output").values, np.broadcast_to(q_inf, lim.shape), rtol=0, atol=1e-10
    )
    r = cv.convergence_rate(ds, "probe_outputs", method="richardson", n_boot=200)
    assert abs(r.slope + 2.0) < 1e-10 and abs(r.lo + 2.0) < 1e-10 and abs(r.hi + 2.0) < 1e-10
    # "largest": the distance of size n is c^2 (1/n - 1/n_max)^2, fitted over the sizes below n_max only (the
    # largest one's distance from its own mean is 0 here)
    r = cv.convergence_rate(ds, "probe_outputs", method="largest", n_boot=200)
    n = np.asarray(SIZES[:-1], dtype=float)
    assert abs(r.slope - loglog_slope(n, (1 / n - 1 / SIZES[-1]) ** 2)) < 1e-10, r.text()


# ---- the noise floor of the "largest" estimate ----------------------------------------------------------------


def test_the_floor_correction_removes_the_flattening_of_a_noisy_largest_size():
    # Pure noise (c = 0), variance 1/n, only 2 seeds: the largest size's seed mean is off by a variance
    # v(128)/2 = 1/256, a floor under every distance (16% of the distance at n = 64), which flattens the slope.
    corrected, raw = [], []
    for gen in range(10):
        ds, _ = synthetic(seeds=2, c=0.0, entries=(32, 10), gen=gen)
        a = cv.convergence_rate(ds, "probe_outputs", method="largest", n_boot=0)
        b = cv.convergence_rate(ds, "probe_outputs", method="largest", corrected=False, n_boot=0)
        corrected.append(a.slope)
        raw.append(b.slope)
        # the floor: the estimated variance of m(n) - m(n_max) minus that of one seed's value, over S = 2: the
        # unbiased seed variance at n_max minus twice the covariance of one seed's values at n and n_max (seeds
        # are paired across sizes; mean over entries), over S
        d = ds.probe_outputs.sel(step=10) - ds.probe_outputs.sel(step=10).mean("seed")
        top = d.sel(H=SIZES[-1])
        floor = [float(((top**2).sum("seed") - 2 * (d.sel(H=n) * top).sum("seed")).mean()) / 2 for n in SIZES[:-1]]
        np.testing.assert_allclose(a.floor.sel(step=10, H=list(SIZES[:-1])).values, floor, rtol=1e-10)
        np.testing.assert_allclose(a.mean_distance.values, b.mean_distance.values, rtol=1e-12)
        np.testing.assert_allclose(
            a.fitted_distance.sel(H=list(SIZES[:-1])).values,
            (b.mean_distance - a.floor).sel(H=list(SIZES[:-1])).values,
            rtol=1e-12,
        )
        assert np.isnan(a.fitted_distance.sel(H=SIZES[-1])).all()
    # Measured over these 10 generator seeds: corrected -1.015 (sd 0.046 per seed, 0.015 for the mean), uncorrected
    # -0.924 (sd 0.038); expected for the uncorrected fit from the floor alone: -0.907. Thresholds at ~3 sd of the mean.
    assert abs(np.mean(corrected) + 1.0) < 0.05, corrected
    assert np.mean(raw) > -0.96, raw
    assert np.mean(raw) - np.mean(corrected) > 0.05


def test_a_precise_interval_holds_its_own_estimate():
    """16 seeds and 3072 entries make the slope precise (sd ~0.005); every leave-one-seed-out replicate recomputes
    the limit and its noise correction, so the interval of the corrected slope is centred on it (the old
    percentile bootstrap had to recentre its resamples: -1.000 with [-0.997, -0.980] before it did)."""
    ds, _ = synthetic(sizes=(4, 8, 16, 32, 64, 128), seeds=16, c=0.0, entries=(64, 48), steps=(10,), gen=1)
    for method in cv.METHODS:
        r = cv.convergence_rate(ds, "probe_outputs", method=method, n_boot=500)
        assert r.lo <= r.slope <= r.hi and r.lo <= -1.0 <= r.hi, r.text()


# ---- seed variance --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("noise_exp, expected", [(-0.5, -1.0), (0.0, 0.0)])
def test_seed_variance_rate_recovers_the_noise_exponent(noise_exp, expected):
    ds, _ = synthetic(seeds=24, noise_exp=noise_exp)
    r = cv.seed_variance_rate(ds, "probe_outputs", n_boot=1000)
    # over 40 generator seeds: sd of the slope 0.020, interval half-width 0.043, coverage 95%
    assert r.lo <= expected <= r.hi, r.text()
    assert abs(r.slope - expected) < 0.08, r.text()
    # the variance is the unbiased (ddof = 1) one, per entry, averaged over entries
    direct = ds.probe_outputs.var("seed", ddof=1).mean(("sample", "output")).transpose("H", "step")
    np.testing.assert_allclose(r.variance.values, direct.values, rtol=1e-10)
    loss = cv.seed_variance_rate(ds, "heldout_loss", n_boot=200)
    np.testing.assert_allclose(
        loss.variance.values, ds.heldout_loss.var("seed", ddof=1).transpose("H", "step"), rtol=1e-10
    )
    assert loss.units == "(nats)^2"


def test_seed_variance_interval_is_calibrated_and_honest_with_few_seeds():
    """The interval is the joint jackknife over seeds with a t quantile (S - 1 degrees of freedom), recomputing
    the variance without each seed. With 24 seeds its half-width is close to 1.96 sd of the slope over independent
    sweeps; with 6 seeds wider by about t_5 / 1.96 = 1.31, the price of estimating the spread from 6 seeds (the
    coverage over many more sweeps: tests/test_estimators.py)."""
    for seeds, cover, ratio in ((24, 0.85, (0.8, 1.5)), (6, 0.95, (1.2, 2.5))):
        fits = []
        for gen in range(20):
            ds, _ = synthetic(seeds=seeds, c=0.3, steps=(10,), gen=gen)
            r = cv.seed_variance_rate(ds, "probe_outputs")
            fits.append((r.slope, r.lo, r.hi))
        f = np.array(fits)
        covered = np.mean((f[:, 1] <= -1) & (-1 <= f[:, 2]))
        half = np.median((f[:, 2] - f[:, 1]) / 2) / (1.96 * f[:, 0].std())
        # measured (jackknife-t): 24 seeds coverage 1.00, half-width / (1.96 sd) 1.31; 6 seeds 1.00 and 1.31 (20
        # sweeps: the sd over them is itself uncertain by ~16%)
        assert covered >= cover, (seeds, covered)
        assert ratio[0] <= half <= ratio[1], (seeds, half)


def test_an_unresolved_distance_makes_the_interval_unbounded_not_an_error():
    """3 seeds, one entry (the loss), pure noise: the floor-corrected distance is resolved with every seed, but
    without one of them (a leave-one-seed-out replicate of the joint jackknife) it is <= 0 at some fitted size
    (not resolved above the noise of the limit estimate). The interval is then unbounded on both sides instead
    of dropping that replicate (which would narrow it) or raising."""
    ds, _ = synthetic(seeds=3, c=0.0, gen=0)
    r = cv.convergence_rate(ds, "heldout_loss")
    assert r.lo == -np.inf and r.hi == np.inf and np.isfinite(r.slope), r.text()
    assert float(r.boot_unresolved.sel(step=10)) == 1 / 3  # one of the 3 replicates
    assert "not resolved above the noise" in r.text()
    other = cv.convergence_rate(ds, "heldout_loss", method="richardson")
    assert bool(cv.agreement(r, other))  # an unbounded interval overlaps any


# ---- what is left out, and what is refused --------------------------------------------------------------------


def with_status(ds: xr.Dataset, diverged: list[tuple[int, int]]) -> xr.Dataset:
    status = xr.zeros_like(ds.heldout_loss.isel(step=0, drop=True), dtype=np.int8)
    at = xr.full_like(status, -1, dtype=np.int64)
    for size, seed in diverged:
        status.loc[{"H": size, "seed": seed}] = 1
        at.loc[{"H": size, "seed": seed}] = 5
    return ds.assign(status=status, diverged_at=at)


def test_diverged_points_are_left_out():
    ds, _ = synthetic(seeds=8, c=0.3)
    # seed 3 at H=32 diverged (status) but carries finite garbage; seed 5 at H=64 is NaN without a status (an
    # older sweep)
    bad = ds.copy(deep=True)
    bad.probe_outputs.loc[{"H": 32, "seed": 3}] = 1e6
    bad.heldout_loss.loc[{"H": 32, "seed": 3}] = 1e6
    bad.probe_outputs.loc[{"H": 64, "seed": 5, "step": 10}] = np.nan
    bad = with_status(bad, [(32, 3)])
    clean = ds.copy(deep=True)
    clean.probe_outputs.loc[{"H": 32, "seed": 3}] = np.nan
    clean.heldout_loss.loc[{"H": 32, "seed": 3}] = np.nan
    clean.probe_outputs.loc[{"H": 64, "seed": 5}] = np.nan  # NaN at one step: left out at every step
    for method in cv.METHODS:
        r = cv.convergence_rate(bad, "probe_outputs", method=method, n_boot=200)
        ref = cv.convergence_rate(clean, "probe_outputs", method=method, n_boot=200)
        assert r.diverged == 1 and "H=32" in r.diverged_points and "seed 3" in r.diverged_points
        assert list(r.n_seeds) == [8, 8, 7, 7, 8]
        np.testing.assert_allclose(r.mean_distance.values, ref.mean_distance.values, rtol=1e-12)
        assert r.slope == pytest.approx(ref.slope, abs=1e-12)
        assert np.isnan(r.distance.sel(H=32, seed=3)).all()
    v = cv.seed_variance_rate(bad, "heldout_loss", n_boot=200)
    ref = cv.seed_variance_rate(clean, "heldout_loss", n_boot=200)
    np.testing.assert_allclose(v.variance.values, ref.variance.values, rtol=1e-12)


def test_bad_input_is_refused_with_one_clear_message():
    ds, _ = synthetic(seeds=4)
    with pytest.raises(ValueError, match="unknown quantity 'kernel'"):
        cv.convergence_rate(ds, "kernel")
    with pytest.raises(ValueError, match="method must be one of"):
        cv.convergence_rate(ds, "probe_outputs", method="median")
    with pytest.raises(ValueError, match="axis N is not a dimension"):
        cv.convergence_rate(ds, "probe_outputs", axis="N")
    with pytest.raises(ValueError, match="LM task only; this sweep's task is 'vision'"):
        cv.convergence_rate(ds, "kernel_last_token")
    with pytest.raises(ValueError, match="no 'kernel_pooled'"):
        cv.convergence_rate(ds, "kernel_pooled")
    with pytest.raises(ValueError, match="has no depth or layer"):
        cv.convergence_rate(ds, "probe_outputs", depth=1)
    with pytest.raises(ValueError, match="step 7 is not a probe step"):
        cv.convergence_rate(ds, "probe_outputs", step=7)
    three = ds.sel(H=[8, 16, 32])
    with pytest.raises(ValueError, match="fewer than 4 usable sizes, got 3.*largest"):
        cv.convergence_rate(three, "probe_outputs")
    cv.convergence_rate(three, "probe_outputs", method="richardson", n_boot=50)  # 3 sizes are enough here
    two = ds.sel(H=[8, 16, 32]).copy(deep=True)
    two.probe_outputs.loc[{"H": 8}] = np.nan  # no usable seed at H=8
    with pytest.raises(ValueError, match=r"fewer than 3 usable sizes, got 2 \(16, 32\) \(H=8 left out"):
        cv.convergence_rate(two, "probe_outputs", method="richardson")
    with pytest.raises(ValueError, match="at least 3 sizes with 2 or more usable seeds"):
        cv.seed_variance_rate(ds.isel(seed=[0]), "heldout_loss")


def test_a_quantity_identically_zero_at_step_0_gives_nan_with_a_reason():
    ds, _ = synthetic(seeds=6, zero_step0=True)
    r = cv.convergence_rate(ds, "probe_outputs", n_boot=200)
    assert np.isnan(r.slope_by_step.sel(step=0)) and "same at every size and seed" in r.reasons[0]
    assert np.isfinite(r.slope) and r.step == 10 and r.reasons[1] == ""
    r0 = cv.convergence_rate(ds, "probe_outputs", method="richardson", step=0, n_boot=200)
    assert np.isnan(r0.slope) and "no distance to fit" in r0.text()
    v = cv.seed_variance_rate(ds, "probe_outputs", n_boot=200)
    assert np.isnan(v.slope_by_step.sel(step=0)) and np.isfinite(v.slope)
    assert "not comparable" in str(cv.agreement(r0, r))
    # a floor larger than the distances: the largest size's 2 seeds at -1 and +1 (floor 2/2 = 1), the others
    # within 0.1 of the limit 0. The corrected distance is negative: NaN with the reason, not a log error or -inf.
    loss = np.zeros((len(SIZES), 2, 2))
    loss[:, 0], loss[:, 1] = 0.1, -0.1
    loss[-1, 0], loss[-1, 1] = 1.0, -1.0
    floored = ds.isel(seed=[0, 1]).assign(heldout_loss=(("H", "seed", "step"), loss))
    f = cv.convergence_rate(floored, "heldout_loss", n_boot=100)
    assert np.isnan(f.slope) and "floor-corrected distance is <= 0 at H=8, 16, 32, 64" in f.reason, f.text()
    raw = cv.convergence_rate(floored, "heldout_loss", corrected=False, n_boot=100)
    assert raw.slope == pytest.approx(0.0, abs=1e-12)  # uncorrected: 0.01 + 1 at every size, flat


def test_distances_match_the_entrywise_definition():
    """The jackknife engine's point estimates (`dmft.estimators`) equal limit_estimate + distance."""
    ds, _ = synthetic(seeds=5, c=1.0)
    for method in cv.METHODS:
        r = cv.convergence_rate(ds, "probe_outputs", method=method, n_boot=10)
        lim = cv.limit_estimate(ds.probe_outputs, "H", method)
        d = cv.distance(ds.probe_outputs, "H", lim, ("sample", "output"))
        np.testing.assert_allclose(r.mean_distance.values, d.mean("seed").transpose("H", "step").values, rtol=1e-10)
        np.testing.assert_allclose(r.distance.values, d.transpose("H", "seed", "step").values, rtol=1e-10)
    # limit_estimate entrywise: "largest" is the seed mean at the largest size with a finite mean
    x = ds.probe_outputs.copy(deep=True)
    x.loc[{"H": 128, "sample": 0}] = np.nan
    lim = cv.limit_estimate(x, "H", "largest")
    np.testing.assert_allclose(lim.sel(sample=0).values, x.sel(H=64, sample=0).mean("seed").values)
    np.testing.assert_allclose(lim.sel(sample=1).values, x.sel(H=128, sample=1).mean("seed").values)
    np.testing.assert_allclose(cv.richardson_weights(SIZES).sum(), 1.0)


def test_along_L_kernels_are_compared_at_the_last_depth_of_each_model():
    rng = np.random.default_rng(0)
    sizes = [2, 4, 8, 16]
    S, P = 12, 6
    k = np.full((len(sizes), S, 2, 17, P, P), np.nan)
    for i, L in enumerate(sizes):
        for d in range(L + 1):
            k[i, :, :, d] = d / L + 0.5 / L + L**-0.5 * rng.normal(size=(S, 2, P, P))
    ds = xr.Dataset(
        {"kernel_pooled": (("L", "seed", "step", "depth", "sample", "sample_"), k, {"units": "1"})},
        coords={"L": sizes, "seed": np.arange(S), "step": [0, 5], "depth": np.arange(17)},
        attrs={"sweep_axis": "L", "task": "vision"},
    )
    r = cv.convergence_rate(ds, "kernel_pooled", method="richardson", n_boot=300)
    assert r.selection.startswith("last depth of each model") and "depth" not in r.limit.dims
    last = xr.concat([ds.kernel_pooled.sel(L=[L], depth=L, drop=True) for L in sizes], "L")
    lim = cv.limit_estimate(last, "L", "richardson")
    np.testing.assert_allclose(r.limit.values, lim.values, rtol=1e-10)
    assert r.lo <= -1.0 <= r.hi, r.text()
    d2 = cv.convergence_rate(ds, "kernel_pooled", method="richardson", depth=2, n_boot=50)
    assert d2.selection == "depth 2" and list(d2.sizes) == sizes  # every model has depth 2
    with pytest.raises(ValueError, match="indexed by depth, not layer"):
        cv.convergence_rate(ds, "kernel_pooled", layer=0)


# ---- a real sweep ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sweep() -> xr.Dataset:
    """H = 1, 2, 4, 8, 2 seeds, 20 steps of a vision model, made in memory with the functions a sweep runs
    (`probes.experiment.ensemble.train_seeds` per size, `probes.experiment.dataset.run_dataset`, `combine_runs` over seeds, then sizes:
    what `probes.grid.sweep.run_sweep` merges, without its part files, which take 3/4 of its time here)."""
    from probes.experiment.config import make_run_config
    from probes.experiment.dataset import combine_runs, run_dataset
    from probes.experiment.ensemble import train_seeds
    from probes.grid.sweep import value_config

    cfg = make_run_config(
        model={"N": 4, "H": 1, "L": 1, "task": "vision", "axis": "H"},
        optim={"name": "sgd-momentum"},
        run={"steps": 20, "batch_size": 16},
        probes={"every": 10, "n_samples": 8},
    )
    per_size = [
        combine_runs([run_dataset(r) for r in train_seeds(value_config(cfg, "H", v), [0, 1])], "seed")
        for v in (1, 2, 4, 8)
    ]
    ds = combine_runs(per_size, "H")
    ds.attrs["sweep_axis"] = "H"
    return ds


def test_a_real_tiny_sweep_gives_finite_slopes(tiny_sweep):
    for quantity in ("kernel_pooled", "heldout_loss"):
        for method in cv.METHODS:
            r = cv.convergence_rate(tiny_sweep, quantity, method=method, n_boot=300)
            assert r.step == 20 and np.isfinite(r.slope), r.text()
            assert r.axis == "H" and list(r.sizes) == [1, 2, 4, 8]
    r = cv.convergence_rate(tiny_sweep, "heldout_loss", n_boot=50)
    assert "same at every size and seed" in r.reasons[0]  # zero readout: the loss at init is log(10)

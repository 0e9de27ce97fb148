"""dmft.transfer.best_eta0 on synthetic loss grids whose optimum is known."""
import numpy as np
import pytest
import xarray as xr

from dmft.transfer import best_eta0

ETAS = np.array([0.1, 0.2, 0.4, 0.8, 1.6])


def grid(centres, noise=0.01, seeds=4, diverge=()):
    """Loss = (log2 eta0 - log2 centre)^2 + noise per size; `diverge` lists (size index, eta index) set to NaN."""
    rng = np.random.default_rng(0)
    vals = np.array([[(np.log2(e) - np.log2(c)) ** 2 for c in centres] for e in ETAS])[..., None]
    vals = vals + noise * rng.standard_normal((len(ETAS), len(centres), seeds))
    for j, i in diverge:
        vals[i, j, :] = np.nan
    return xr.DataArray(vals, dims=("eta0", "N", "seed"), coords={"eta0": ETAS, "N": [4, 16, 64][: len(centres)]})


def test_an_optimum_that_stays_put_transfers():
    t = best_eta0(grid([0.4, 0.4, 0.4]), "N")
    assert list(t.best) == [0.4, 0.4, 0.4] and t.steps == 0 and t.stays
    assert np.all(t.freq.max(axis=1) > 0.95)          # noise 0.01 against a curvature of 1 per grid step
    assert "stays within one grid step" in t.line()


def test_a_drifting_optimum_is_reported_in_grid_steps():
    t = best_eta0(grid([0.2, 0.4, 1.6]), "N")
    assert list(t.best) == [0.2, 0.4, 1.6] and t.steps == 3 and not t.stays
    assert "moves by 3 grid steps" in t.line()


def test_diverged_points_never_win_and_noisy_seeds_spread_the_bootstrap():
    t = best_eta0(grid([0.4, 0.4], diverge=[(0, 2)]), "N")   # the true optimum of N=4 diverged
    assert t.best[0] in (0.2, 0.8)
    flat = best_eta0(grid([0.4, 0.4], noise=5.0), "N")      # noise far above the curvature: no clear argmin
    assert ((flat.freq > 0.05).sum(axis=1) >= 2).any()       # the support spreads over several eta0


def test_missing_dims_are_named():
    with pytest.raises(ValueError, match="seed"):
        best_eta0(grid([0.4, 0.4]).isel(seed=0), "N")

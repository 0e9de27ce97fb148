"""P9, P11 and P12 verdicts (dmft.compare) on hand-made sweep datasets whose answer is known by construction."""
import json

import numpy as np
import pytest
import xarray as xr

from dmft import compare


def sweep(axis: str, sizes, loss=None, kernel=None, alpha_A=1.0, alpha_L=1.0, name="mup", seeds=6, steps=3):
    """A minimal trained sweep dataset: heldout_loss (axis, seed, step) and kernel_pooled (axis, seed, step, depth,
    sample, sample_), with the config attribute dmft.check.run_attrs reads."""
    cfg = {"param": {"alpha_A": alpha_A, "alpha_L": alpha_L, "beta0": 1.0, "L0": 1.0, "standard": False,
                     "name": name, "gamma0": 1.0},
           "model": {"task": "digits", "N": 8, "H": 4, "L": 2, "axis": axis}, "optim": {"name": "sgd", "eta0": 0.5},
           "steps": 30}
    coords = {axis: np.asarray(sizes), "seed": np.arange(seeds), "step": np.arange(steps)}
    data = {}
    if loss is not None:
        data["heldout_loss"] = ((axis, "seed", "step"), np.repeat(np.asarray(loss, float)[..., None], steps, -1))
    if kernel is not None:
        data["kernel_pooled"] = ((axis, "seed", "step", "depth", "sample", "sample_"),
                                 np.repeat(np.asarray(kernel, float)[:, :, None], steps, 2))
    return xr.Dataset(data, coords=coords, attrs={"config": json.dumps(cfg), "sweep_axis": axis})


RNG = np.random.default_rng(0)


def test_p9_reads_which_alpha_L_has_the_lower_loss_at_the_largest_L():
    sizes = [1, 2, 4, 8]
    base = 1.0 + 0.01 * RNG.standard_normal((4, 6))
    better = sweep("L", sizes, loss=base - np.array([0, 0.02, 0.05, 0.1])[:, None], alpha_L=1.0)
    worse = sweep("L", sizes, loss=base, alpha_L=0.5, name="depth-sqrt")
    assert compare.comparable(better, worse, "alpha_L")
    v = compare.p9_verdict(better, worse)
    assert v.consistent and v.hi < 0 and v.slope == pytest.approx(-0.1, abs=0.01)
    # the other way round: alpha_L = 1 worse at the largest L -> not consistent
    v = compare.p9_verdict(sweep("L", sizes, loss=base + 0.1, alpha_L=1.0), worse)
    assert not v.consistent and v.lo > 0


def test_p9_pairs_only_sweeps_that_differ_in_alpha_L_alone():
    a = sweep("L", [1, 2, 4], loss=np.ones((3, 6)), alpha_L=1.0)
    b = sweep("L", [1, 2, 4], loss=np.ones((3, 6)), alpha_L=0.5, alpha_A=0.5)     # alpha_A differs too
    c = sweep("L", [1, 2, 8], loss=np.ones((3, 6)), alpha_L=0.5)                   # other sizes
    assert not compare.comparable(a, b, "alpha_L") and not compare.comparable(a, c, "alpha_L")
    assert not compare.comparable(a, a, "alpha_L")


def test_p11_tells_flat_from_improving_loss_across_H():
    sizes = [1, 2, 4, 8]
    noise = 0.002 * RNG.standard_normal((4, 6))
    flat = compare.p11_verdict(sweep("H", sizes, loss=0.8 + noise))
    assert flat.consistent and "similar" in flat.supported and "improves" not in flat.supported
    falls = compare.p11_verdict(sweep("H", sizes, loss=0.8 * np.asarray(sizes, float)[:, None] ** -0.2 + noise))
    assert falls.consistent and falls.supported == "improves with H (C4, Fig. 7a)"
    rises = compare.p11_verdict(sweep("H", sizes, loss=0.8 * np.asarray(sizes, float)[:, None] ** 0.2 + noise))
    assert not rises.consistent and rises.supported == "neither"


def kernels(shift: float, paired_noise: np.ndarray, own: float = 0.0):
    """(size, seed, depth, P, P) kernels: a fixed mean + `shift` + per-seed noise shared by both alpha_A (the
    same seeds) + noise of its own."""
    mean = np.eye(5)[None, None, None] + 0.2
    return mean + shift + paired_noise + own * RNG.standard_normal(paired_noise.shape)


def test_p12_compares_kernels_with_the_seed_noise_of_their_difference():
    shared = 0.05 * RNG.standard_normal((4, 6, 2, 5, 5))
    one = sweep("N", [4, 8, 16, 32], kernel=kernels(0.0, shared, 0.01))
    same = sweep("N", [4, 8, 16, 32], kernel=kernels(0.0, shared, 0.01), alpha_A=0.5, name="mup-sqrt")
    v = compare.p12_verdict(one, same)
    assert v.consistent and v.slope < compare.P12_NOISE_UNITS
    # a difference of 0.05 per entry is 0.05 / (0.01 sqrt(2/6)) = 8.7 standard errors of the paired difference
    off = sweep("N", [4, 8, 16, 32], kernel=kernels(0.05, shared, 0.01), alpha_A=0.5, name="mup-sqrt")
    v = compare.p12_verdict(one, off)
    assert not v.consistent and v.slope > 5


def test_p12_leaves_diverged_seeds_out():
    shared = 0.05 * RNG.standard_normal((3, 6, 2, 5, 5))
    K = kernels(0.0, shared, 0.01)
    K[0, 2] = np.nan                                             # seed 2 of the smallest N diverged
    one = sweep("N", [4, 8, 16], kernel=K)
    half = sweep("N", [4, 8, 16], kernel=kernels(0.0, shared, 0.01), alpha_A=0.5, name="mup-sqrt")
    v = compare.p12_verdict(one, half)
    assert np.isfinite(v.slope) and v.consistent

"""P9, P11 and P12 verdicts (dmft.compare) on hand-made sweep datasets whose answer is known by construction."""

import json

import numpy as np
import pytest
import xarray as xr

from dmft import compare
from dmft.predictions import P12_DELTA


def sweep(axis: str, sizes, loss=None, kernel=None, alpha_A=1.0, alpha_L=1.0, name="mup", seeds=6, steps=3):
    """A minimal trained sweep dataset: heldout_loss (axis, seed, step) and kernel_pooled (axis, seed, step, depth,
    sample, sample_), with the config attribute dmft.check.read_run_attrs reads."""
    cfg = {
        "param": {
            "alpha_A": alpha_A,
            "alpha_L": alpha_L,
            "beta0": 1.0,
            "L0": 1.0,
            "standard": False,
            "name": name,
            "gamma0": 1.0,
        },
        "model": {"task": "digits", "N": 8, "H": 4, "L": 2, "axis": axis},
        "optim": {"name": "sgd", "eta0": 0.5},
        "steps": 30,
    }
    coords = {axis: np.asarray(sizes), "seed": np.arange(seeds), "step": np.arange(steps)}
    data = {}
    if loss is not None:
        data["heldout_loss"] = ((axis, "seed", "step"), np.repeat(np.asarray(loss, float)[..., None], steps, -1))
    if kernel is not None:
        data["kernel_pooled"] = (
            (axis, "seed", "step", "depth", "sample", "sample_"),
            np.repeat(np.asarray(kernel, float)[:, :, None], steps, 2),
        )
    return xr.Dataset(data, coords=coords, attrs={"config": json.dumps(cfg), "sweep_axis": axis})


RNG = np.random.default_rng(0)


def test_p9_reads_which_alpha_L_has_the_lower_loss_at_the_largest_L():
    sizes = [1, 2, 4, 8]
    base = 1.0 + 0.01 * RNG.standard_normal((4, 6))
    better = sweep("L", sizes, loss=base - np.array([0, 0.02, 0.05, 0.1])[:, None], alpha_L=1.0)
    worse = sweep("L", sizes, loss=base, alpha_L=0.5, name="depth-sqrt")
    assert compare.comparable(better, worse, "alpha_L")
    v = compare.p9_verdict(better, worse)
    assert v.consistent and v.primary and v.hi < 0 and v.estimate == pytest.approx(-0.1, abs=0.01)
    assert v.band == 0 and "stated" in v.band_source
    # the other way round: alpha_L = 1 worse at the largest L -> not consistent
    v = compare.p9_verdict(sweep("L", sizes, loss=base + 0.1, alpha_L=1.0), worse)
    assert v.outcome == "refuted" and v.lo > 0


def test_p9_pairs_only_sweeps_that_differ_in_alpha_L_alone():
    a = sweep("L", [1, 2, 4], loss=np.ones((3, 6)), alpha_L=1.0)
    b = sweep("L", [1, 2, 4], loss=np.ones((3, 6)), alpha_L=0.5, alpha_A=0.5)  # alpha_A differs too
    c = sweep("L", [1, 2, 8], loss=np.ones((3, 6)), alpha_L=0.5)  # other sizes
    assert not compare.comparable(a, b, "alpha_L") and not compare.comparable(a, c, "alpha_L")
    assert not compare.comparable(a, a, "alpha_L")


def test_p11_names_which_of_its_two_hypotheses_the_data_favour():
    """Flat loss favours "flat" (Fig. 6a), a falling one "falls" (Fig. 7a), noise neither (underpowered), a rising
    one neither; the prediction is the task's figure (vision: Fig. 6a; lm: Fig. 7a)."""
    sizes = np.array([1, 2, 4, 8])
    noise = 0.002 * RNG.standard_normal((4, 6))
    flat = compare.p11_verdict(sweep("H", sizes, loss=0.8 + noise))
    assert flat.consistent and flat.note.startswith("favours: flat (Fig. 6a)"), flat
    assert flat.prediction.name == "flat (Fig. 6a)" and flat.band == compare.P11_BAND and "stated" in flat.band_source
    falls = compare.p11_verdict(sweep("H", sizes, loss=0.8 * sizes[:, None] ** -0.2 + noise))
    assert falls.outcome == "refuted" and falls.note.startswith("favours: falls (Fig. 7a)"), falls
    lm = sweep("H", sizes, loss=0.8 * sizes[:, None] ** -0.2 + noise)
    cfg = json.loads(lm.attrs["config"])
    cfg["model"]["task"] = "lm"
    lm.attrs["config"] = json.dumps(cfg)
    assert compare.p11_verdict(lm).consistent
    wild = compare.p11_verdict(sweep("H", sizes, loss=0.8 * np.exp(0.3 * RNG.standard_normal((4, 6)))))
    assert wild.outcome == "underpowered" and wild.note.startswith("favours: neither"), wild
    rises = compare.p11_verdict(sweep("H", sizes, loss=0.8 * sizes[:, None] ** 0.2 + noise))
    assert rises.outcome == "refuted" and rises.note.startswith("favours: neither (the loss rises"), rises


def kernels(shift: float, paired_noise: np.ndarray, own: float = 0.0):
    """(size, seed, depth, P, P) kernels: a fixed mean + `shift` + per-seed noise shared by both alpha_A (the
    same seeds) + noise of its own."""
    mean = np.eye(5)[None, None, None] + 0.2
    return mean + shift + paired_noise + own * RNG.standard_normal(paired_noise.shape)


def test_p12_is_an_equivalence_test_with_a_stated_margin():
    """The 90% interval of |dK|/|K| inside [0, delta) passes, above delta fails."""
    shared = 0.05 * RNG.standard_normal((4, 6, 2, 5, 5))
    one = sweep("N", [4, 8, 16, 32], kernel=kernels(0.0, shared, 0.01))
    same = sweep("N", [4, 8, 16, 32], kernel=kernels(0.0, shared, 0.01), alpha_A=0.5, name="mup-sqrt")
    v = compare.p12_verdict(one, same)
    assert v.consistent and v.hi < P12_DELTA and v.level == 0.90 and v.band == P12_DELTA, v
    assert "stated equivalence margin" in v.band_source
    # a shift of 0.2 per entry is |dK|/|K| ~ 0.26: outside the margin
    off = sweep("N", [4, 8, 16, 32], kernel=kernels(0.2, shared, 0.01), alpha_A=0.5, name="mup-sqrt")
    v = compare.p12_verdict(one, off)
    assert v.outcome == "refuted" and v.lo > P12_DELTA, v


def test_p12_leaves_diverged_seeds_out():
    shared = 0.05 * RNG.standard_normal((3, 6, 2, 5, 5))
    K = kernels(0.0, shared, 0.01)
    K[0, 2] = np.nan  # seed 2 of the smallest N diverged
    one = sweep("N", [4, 8, 16], kernel=K)
    half = sweep("N", [4, 8, 16], kernel=kernels(0.0, shared, 0.01), alpha_A=0.5, name="mup-sqrt")
    v = compare.p12_verdict(one, half)
    assert np.isfinite(v.estimate) and v.consistent

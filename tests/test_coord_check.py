"""Coordinate checks: O(1) coordinates at init, scale-invariant feature updates under muP, blow-up under SP.

Slopes are least-squares fits of log(RMS) against log(size) over >= 4 sizes, seeded and deterministic on CPU.
Measured values (single-seed slopes over seeds 0-2, mean and sd, recorded 2026-11-28) are quoted next to each
tolerance; the tolerances are the issue's (0.1 at init, 0.15 after steps, 0.3 for SP). The seed-to-seed sd of a
fitted slope is <= 0.03 at init and <= 0.06 after 3 steps, and the tests average two seeds.
"""
import pytest

from probes.config import make_run_config
from probes.coord import coord_check, loglog_slope

AXES = {"N": [4, 8, 16, 32, 64], "H": [2, 4, 8, 16], "L": [1, 2, 4, 8, 16]}
BASE = {"N": 8, "H": 4, "L": 2, "task": "vision"}


def cfg_for(preset: str, optimizer: str, eta0: float = 0.1):
    return make_run_config(model=BASE, param={"preset": preset}, optim={"name": optimizer, "eta0": eta0},
                           run={"batch_size": 16}, probes={"enabled": False})


@pytest.mark.parametrize("preset", ["mup", "mup-sqrt", "depth-sqrt"])
@pytest.mark.parametrize("axis", list(AXES))
def test_coordinates_are_order_one_at_init(preset, axis):
    # measured mean slopes within [-0.054, 0.047] for every site, preset and axis (sd <= 0.031)
    vals = AXES[axis]
    sizes = coord_check(cfg_for(preset, "adam"), axis, vals, steps=0, seeds=2)
    for site in ("h", "attn_out", "mlp_out"):
        slope = loglog_slope(vals, sizes[site])
        assert abs(slope) <= 0.1, f"{preset}: RMS of {site} scales as {axis}^{slope:.3f} at init"
        assert 0.05 < sizes[site].min() and sizes[site].max() < 20, (site, sizes[site])


# muP after 3 steps (SGD eta0=1, Adam eta0=0.1), measured mean (sd) of single-seed slopes, seeds 0-2:
#   SGD  N: d_h -0.00 (0.04), d_attn_out 0.05 (0.05), d_mlp_out -0.07 (0.05), d_A -0.51 (0.01)
#   SGD  H: d_h -0.00 (0.04), d_attn_out 0.06 (0.04), d_mlp_out -0.09 (0.06), d_A -0.01 (0.03)
#   Adam N: d_h -0.05 (0.03), d_attn_out -0.05 (0.05), d_mlp_out -0.10 (0.02), d_A -0.55 (0.02)
#   Adam H: d_h -0.04 (0.04), d_attn_out -0.02 (0.06), d_mlp_out -0.10 (0.02), d_A -0.05 (0.03)
MUP_ETA0 = {"sgd": 1.0, "adam": 0.1}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("axis", ["N", "H"])
def test_mup_feature_updates_are_scale_invariant(optimizer, axis):
    vals = AXES[axis]
    sizes = coord_check(cfg_for("mup", optimizer, MUP_ETA0[optimizer]), axis, vals, steps=3, seeds=2)
    slopes = {site: loglog_slope(vals, sizes[site]) for site in ("d_h", "d_attn_out", "d_mlp_out", "d_A")}
    for site in ("d_h", "d_attn_out", "d_mlp_out"):
        assert abs(slopes[site]) <= 0.15, f"mup/{optimizer}: update of {site} scales as {axis}^{slopes[site]:.3f}"
        assert sizes[site].min() > 1e-3, "features did not move: the check would be vacuous"
    if axis == "H":
        assert abs(slopes["d_A"]) <= 0.15, f"mup/{optimizer}: A(t)-A(0) scales as H^{slopes['d_A']:.3f}"
    else:
        # Finding (see README, "Known deviations"): at alpha_A = 1 the first steps move A by
        # eta0 gamma0 N^-1/2, because dL/dA at init is a sum of N uncorrelated products (W_O and the readout are
        # not yet aligned with the values); the Theta(1) update of the paper builds up later (measured slope
        # -0.53 at step 1, -0.53 at 10, -0.42 at 30, -0.29 at 100 with Adam). So after 3 steps we assert the
        # early-time law N^-1/2 (measured -0.55 SGD, -0.56 Adam), not invariance.
        assert abs(slopes["d_A"] + 0.5) <= 0.15, f"mup/{optimizer}: A(t)-A(0) scales as N^{slopes['d_A']:.3f}"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sp_feature_updates_blow_up(optimizer):
    """The negative control: SP with an unscaled learning rate moves features faster at larger N (and H)."""
    eta0 = {"sgd": 0.5, "adam": 0.01}[optimizer]
    worst = 0.0
    for axis in ("N", "H"):
        vals = AXES[axis]
        sizes = coord_check(cfg_for("sp", optimizer, eta0), axis, vals, steps=3, seeds=2)
        worst = max(worst, *(abs(loglog_slope(vals, sizes[s])) for s in ("d_h", "d_attn_out", "d_mlp_out", "d_A")))
    # measured largest mean slope: SGD 0.65 (d_attn_out vs N), Adam 0.97 (d_attn_out vs N); the issue asks > 0.3
    assert worst > 0.3, f"sp/{optimizer}: largest feature-update slope only {worst:.3f}"

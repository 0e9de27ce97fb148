"""The coordinate check (`dmft-probe coord`): every site, the logits included, at init and after >= 10 steps.

Each check is the user-facing path: `probes.grid.sweep.run_sweep` with the coord probe schedule writes a real sweep
dataset; `dmft.coord.coord_verdicts` turns it into `dmft.verdict.Verdict` rows (slope of log RMS against log size,
95% joint-jackknife interval over seeds, band from the local slopes and the two-term model's exponent, the expected
exponent against it +-1/2) decided by the one rule (docs/predictions.md, "Coordinate check"). Seeded, CPU.

Measured with the old rule's settings (3 seeds, probes at steps 1, 3, 10, 30; `dmft-probe coord --task vision --N 8
--H 4 --L 2 --seeds 3 --values 4,8,16,32,64 --steps 0,1,3,10,30 --probe-samples 16 --optimizer X --eta0 Y`,
2026-12-01): the largest |change slope| of a site expected flat, along N: sgd 0.14 (mlp_out, step 1), sgd-momentum
0.14 (mlp_out, step 1), adam 0.13 (attn_out, step 30), adamw 0.13 (attn_out, step 30); along H = 4..64: sgd 0.10,
adam 0.07. The logits' change along N: sgd -0.10, -0.06, -0.03, -0.07 and adam -0.08, -0.06, +0.01, +0.07 at steps 1,
3, 10, 30. The A and softmax(A) change along N at alpha_A = 1: -0.48 to -0.59 up to step 10 (expected -1/2 at early
times; by step 30 SGD stays at -0.50 and Adam relaxes to -0.33).
"""

import numpy as np
import pytest

from dmft import synthetic
from dmft.coord import coord_row, coord_verdicts, kind_of, refuted, step_of, trend
from dmft.fit import slope_fit
from dmft.predictions import CoordExpectation
from dmft.verdict import CONSISTENT, REFUTED
from probes.experiment.config import make_run_config
from probes.grid.sweep import coord_config, run_sweep

AXES = {"N": [4, 8, 16, 32, 64], "H": [2, 4, 8, 16, 32], "L": [1, 2, 4, 8, 16]}
BASE = {"N": 8, "H": 4, "L": 2, "task": "vision"}
ETA0 = {"sgd": 0.5, "sgd-momentum": 0.1, "adam": 0.05, "adamw": 0.05}
STEPS = [0, 1, 3, 10, 20]
# Regression bound on a flat site's change slope, from the measurements above (not the verdict rule: the rule's
# band is derived per row); kept from the old test, where it was the rule's allowance.
FLAT = 0.15


def coord(tmp_path, preset, optimizer, axis, steps=STEPS, seeds=3, eta0=None, values=None, seed=0, **param):
    cfg = make_run_config(
        model=BASE,
        param={"preset": preset, **param},
        optim={"name": optimizer, "eta0": eta0 or ETA0[optimizer]},
        run={"batch_size": 32, "seed": seed},
        probes={"n_samples": 16},
    )
    ds = run_sweep(
        coord_config(cfg, steps), axis, values or AXES[axis], seeds, tmp_path / f"{preset}-{optimizer}-{axis}.nc"
    )
    return ds, coord_verdicts(ds)


def expected(v) -> float:
    """The expected exponent of a row (the centre of its prediction's region)."""
    return (v.prediction.lo + v.prediction.hi) / 2


def rows_of(rows, kind, min_step=0):
    return [v for v in rows if kind_of(v) == kind and step_of(v) >= min_step]


def off(rows) -> list[tuple]:
    """The refuted rows, as (row, slope [CI], band)."""
    return [(v.row, v.measured(), round(v.band, 3)) for v in refuted(rows)]


@pytest.mark.parametrize("preset", ["mup", "mup-sqrt", "depth-sqrt"])
@pytest.mark.parametrize("axis", list(AXES))
def test_coordinates_at_init(tmp_path, preset, axis):
    # measured in the mup runs quoted above (3 seeds): every init slope within 0.08 of its expectation (0, except
    # A ~ N^(1/2-alpha_A) and the raw logits ~ d^-1/2 along N and H; the largest gap is the logits along L, -0.08)
    _, rows = coord(tmp_path, preset, "adam", axis, steps=[0], seeds=2)
    init = rows_of(rows, "init")
    assert {v.row.split()[0] for v in init} >= {
        "embed",
        "q",
        "k",
        "v",
        "A",
        "softmax_A",
        "attn_out",
        "mlp_hidden",
        "mlp_out",
        "h",
        "logits",
    }
    assert not off(init), f"{preset} along {axis}: init coordinates refuted: {off(init)}"
    far = [(v.row, round(v.estimate, 3)) for v in init if abs(v.estimate - expected(v)) > FLAT]
    assert not far, f"{preset} along {axis}: init slopes farther than {FLAT} from their expectation: {far}"


@pytest.mark.parametrize("optimizer", list(ETA0))
@pytest.mark.parametrize("axis", ["N", "H"])
def test_mup_updates_have_a_width_limit(tmp_path, optimizer, axis):
    """Logits and every hidden site move O(1) in N and in H, at every step up to 20 (the fix of the Adam readout:
    before it, the logits' change grew as N^+0.40 after 20 Adam steps): every late change
    slope lies within FLAT of its expectation; no judged row (init, steps >= 10) is refuted (the step-1 and step-3
    rows are an early transient, listed by the check and not judged, as in dmft.variant_verdicts)."""
    ds, rows = coord(tmp_path, "mup", optimizer, axis)
    late = rows_of(rows, "change", min_step=10)
    assert {v.row.split()[0] for v in late} >= {"logits", "h", "attn_out", "mlp_out", "q", "k", "v", "A", "embed"}
    far = [(v.row, round(v.estimate, 3)) for v in late if abs(v.estimate - expected(v)) > FLAT]
    assert not far, f"mup/{optimizer}: change slopes farther than {FLAT} from their expectation: {far}"
    judged = rows_of(rows, "init") + late  # the early steps are a transient (dmft.variant_verdicts)
    assert not off(judged), off(judged)
    moved = ds.io_update_rms.sel(io_site="logits").isel(step=-1)
    assert float(moved.min()) > 1e-2, "the logits did not move: the check would be vacuous"


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_sp_is_flagged(tmp_path, optimizer):
    """The negative control: SP with an unscaled learning rate moves features and logits faster at larger width."""
    _, rows = coord(tmp_path, "sp", optimizer, "N", steps=[0, 1, 3, 10], eta0={"sgd": 0.1, "adam": 0.01}[optimizer])
    change = rows_of(rows, "change", min_step=10)
    worst = max(abs(v.estimate) for v in change)
    # measured largest change slope at step 10: sgd +0.52 (logits), adam +1.16 (attention-branch output); the
    # issue asks > 0.3
    assert worst > 0.3, f"sp/{optimizer}: largest change slope only {worst:.3f}"
    assert refuted(change), "SP passed the coordinate check"


DEPTH_SEEDS = 8


@pytest.mark.parametrize(
    "preset,optimizer", [("mup", "adam"), ("depth-sqrt", "adam"), ("mup", "sgd"), ("depth-sqrt", "sgd")]
)
def test_depth_exponents(tmp_path, preset, optimizer):
    """Along L = 2..16 (block sites read at the last block), what the check can show at these sizes: W_Q, W_K move
    by L^(alpha_L - 1) of their size (P8), their interval excluding the other alpha_L's exponent (0 at alpha_L =
    1/2, -1/2 at alpha_L = 1); and the stream h and the logits do not move as L^(+-1/2) (their change slopes lie
    between the two alternatives).

    Why not "no row refuted": depth-sqrt/SGD at 8 seeds over 5 disjoint seed sets (`python bench/coord_power.py
    --case depth-sqrt-sgd-L --seeds 8`): the q, k, A, softmax(A), v changes at step 10 read L^+0.22..+0.29 (sd
    0.06-0.08 over seed sets) with local slopes that fall with L (saturating: q change 0.039, 0.049, 0.056, 0.048 at
    L = 2..16 in the old measurement), so their rows come out refuted in some seed sets and underpowered in others,
    and W_Q moves as L^-0.44 (sd 0.02) against -1/2 with a band of 0.01-0.05: it touches the refuted edge. Those
    rows sit on an edge at CPU-test sizes and are reported, not asserted. What is asserted, over the same 5 seed
    sets at 8 seeds: W_Q, W_K's interval clears the alpha_L = 1 exponent's region by 0.34 (sd 0.03-0.04: 8-11 sd);
    the change slopes of h and the logits are +0.08 (sd 0.06) and +0.05 (sd 0.06), 7-8 sd inside +-1/2. At 4 seeds
    the h margin is 3.7 sd, hence 8 seeds.

    L = 1 is left out of the trained fit: its only block reads the embedding directly, so the q, k, A changes
    there lack the accumulated stream change that every deeper model's last block sees (SGD, step 10: q change
    0.025 at L = 1, then 0.039, 0.049, 0.056, 0.048, 0.059 for L = 2..32)."""
    _, rows = coord(tmp_path, preset, optimizer, "L", steps=[0, 10], seeds=DEPTH_SEEDS, values=[2, 4, 8, 16])
    alpha_L = {"mup": 1.0, "depth-sqrt": 0.5}[preset]
    other = {1.0: -0.5, 0.5: 0.0}[alpha_L]  # the W_Q, W_K exponent of the other alpha_L
    w = [v for v in rows_of(rows, "change") if v.row.split()[0] in ("W_q", "W_k")]
    assert len(w) == 2 and all(v.prediction.name == f"{alpha_L - 1:+g}" for v in w), [v.prediction for v in w]
    alt = [next(a for a in v.alternatives if a.name == f"{other:+g}") for v in w]
    assert all(a.disjoint(v.lo, v.hi) for v, a in zip(w, alt)), [(v.row, v.measured(), v.band) for v in w]
    stream = [v for v in rows_of(rows, "change") if v.row.split()[0] in ("h", "logits")]
    assert len(stream) == 2 and all(-0.5 < v.estimate < 0.5 for v in stream), [(v.row, v.measured()) for v in stream]


def test_a_broken_adam_readout_is_flagged(tmp_path, monkeypatch):
    """Break one role's rule on purpose (the old Adam readout: std 1, multiplier d^-1/2/gamma0, i.e. std x mult
    d^-1/2 instead of 1/d) and the check must refute the logits' change.

    Measured at these settings (N = 4..32, steps 0 and 10, 8 seeds) over 5 disjoint seed sets (`python
    bench/coord_power.py --case broken-adam-readout-N32 --seeds 8 --bases 0,100,200,300,400`): the logits' change
    at step 10 reads N^+0.261 (sd 0.011) and is refuted in 5 of 5, its interval clearing the band by 0.172 (sd
    0.033): 5.2 sd. The logits at init (d^0 instead of d^-1/2) are refuted in 5 of 5 too, but by 3.2 sd only, so
    they are not asserted. With 3 or 4 seeds the change row is refuted in 3 and 5 of 5 seed sets, by 0.1 and 1.3
    sd: the old test's 3 seeds sat on the edge (the t quantile of 2 degrees of freedom is 4.3).
    """
    import parametrizations.spec as spec

    right = spec.abc

    def old_readout(p, role, fan_in, *, d, N, L, optimizer):
        if role == "readout" and spec.is_adam(optimizer) and not p.standard:
            return 1.0, 1.0 / (np.sqrt(d) * p.gamma0)
        return right(p, role, fan_in, d=d, N=N, L=L, optimizer=optimizer)

    monkeypatch.setattr("parametrizations.transformer.abc", old_readout)
    _, rows = coord(tmp_path, "mup", "adam", "N", steps=[0, 10], seeds=8, values=[4, 8, 16, 32])
    v = next(v for v in rows if v.row == "logits change @10")
    assert v.outcome == REFUTED and v.estimate > 0, (v.measured(), v.band, v.outcome)


# ================================================================================ the rule on synthetic rows

SIZES = [4, 8, 16, 32, 64]


def outcomes(
    rate: float, seeds: int, cv: float, reps: int = 200, expected: float = 0.0, c: float = 0.0, sizes=SIZES
) -> dict[str, int]:
    """How often a coordinate-check row comes out consistent / refuted / underpowered over `reps` synthetic sweeps
    (`dmft.synthetic.positive`: a per-seed RMS ~ n^rate (1 + c/n) with log-normal noise of coefficient of
    variation cv, one seed's draws correlated 0.5 across sizes) judged against the expected exponent."""
    ys = synthetic.positive(rate, cv, sizes, seeds, np.random.default_rng(1), reps=reps, rho_sizes=0.5)
    ys = ys * (1 + c / np.asarray(sizes, float))[:, None]  # (reps, size, seed) x (size, 1)
    rows = [coord_row("x", "change", 10, "N", "synthetic", sizes, y, CoordExpectation(expected, "")) for y in ys]
    return {o: sum(v.outcome == o for v in rows) for o in (CONSISTENT, REFUTED, "underpowered")}


@pytest.mark.parametrize("rate", [0.5, -0.5])
@pytest.mark.parametrize("cv", [0.05, 0.2])
def test_an_alternative_exponent_is_never_consistent(rate, cv):
    """A site whose RMS goes as n^(+-1/2) while 0 is expected: over 200 sweeps at 8 seeds, never consistent.
    Measured: refuted 200 of 200 at cv 0.05 and 0.2."""
    got = outcomes(rate, 8, cv)
    assert got[CONSISTENT] == 0, got
    assert got[REFUTED] >= 180, got


@pytest.mark.parametrize("rate", [0.2, -0.2])
def test_an_exponent_off_by_a_fifth_is_refuted_when_precise(rate):
    """A site going as n^(+-0.2) while 0 is expected: at cv 0.05 the local slopes of a pure power law agree, the
    two-term exponent equals the slope, the derived band is small, and the row is refuted in 200 of 200 sweeps
    (measured); a constant allowance of 0.25 (the old rule's order) would pass it. At cv 0.2 it is consistent in
    at most 5%, the issue's bound for a wrong rate (measured 7 and 6 of 200; refuted 103 and 105, the rest
    underpowered)."""
    precise, noisy = outcomes(rate, 8, 0.05), outcomes(rate, 8, 0.2)
    assert precise[REFUTED] == 200, precise
    assert noisy[CONSISTENT] <= 10 and noisy[REFUTED] >= 80, noisy


def one_term_refuted(c: float, sizes) -> int:
    """How often the one-term band (local slopes only, no next-order term) refutes the same drift rows."""
    ys = synthetic.positive(0.0, 0.05, sizes, 8, np.random.default_rng(1), reps=200, rho_sizes=0.5)
    fits = [slope_fit(sizes, y) for y in ys * (1 + c / np.asarray(sizes, float))[:, None]]
    return sum(f.hi < -f.band or f.lo > f.band for f in fits)


@pytest.mark.parametrize("c", [0.4, 1.0, -0.8])
@pytest.mark.parametrize("sizes", [SIZES, SIZES[:4]], ids=["4-64", "4-32"])
def test_a_site_that_approaches_its_limit_as_1_plus_c_over_n_is_rarely_refuted(c, sizes):
    """RMS ~ 1 + c/n (softmax(A) at init: c = +0.3..+0.4 measured on the paper block, local slopes of one sign
    halving per doubling), 0 expected, cv 0.05, 8 seeds, 200 sweeps. The band with the two-term model's exponent
    refutes it in 5, 0, 0 of 200 (4..64) and 26, 10, 5 (4..32; c = 0.4, 1, -0.8); the one-term band it replaces
    in 13, 29, 8 and 47, 126, 71 (and in 5 of 5 real seed sets of softmax(A) over N = 4..32). At 4 sizes the
    two-term fit has one degree of freedom left and its exponent is noisy: up to 13% of precise drift rows are
    still refuted, a limit of the geometry, reported. Bounds: the measured count plus 2 binomial sd."""
    got = outcomes(0.0, 8, 0.05, c=c, sizes=sizes)
    assert got[REFUTED] <= (10 if len(sizes) == 5 else 36), got
    assert got[REFUTED] < one_term_refuted(c, sizes) or got[REFUTED] <= 5, got
    assert got[CONSISTENT] >= 100, got  # measured 120-200 of 200


def test_a_correct_exponent_is_consistent_at_enough_seeds():
    """A flat site (rate 0) is never refuted and is consistent in most sweeps at 8 seeds. Measured (200 sweeps,
    generator seed 1, 5 sizes): consistent 166, 166, 167 of 200 at cv 0.05, 0.1, 0.2 (binomial sd 5.3); never
    refuted. An exponent of 0.2 approached as 1 + 1/n is consistent in 1 of 200 (the credit of the two-term
    exponent applies only where it lies closer to the prediction)."""
    got = outcomes(0.0, 8, 0.1)
    assert got[REFUTED] == 0, got
    assert got[CONSISTENT] >= 150, got
    wrong = outcomes(0.2, 8, 0.05, c=1.0)
    assert wrong[CONSISTENT] <= 5 and wrong[REFUTED] >= 170, wrong  # measured 1 and 189


def test_trend_reads_the_interval_against_the_band():
    """flat inside [-band, band], grows above, shrinks below, unresolved across an edge (no constant)."""
    rng = np.random.default_rng(0)
    flat = coord_row(
        "x", "change", 10, "N", "s", SIZES, synthetic.positive(0.0, 0.05, SIZES, 8, rng), CoordExpectation(0.0, "")
    )
    grows = coord_row(
        "x", "change", 10, "N", "s", SIZES, synthetic.positive(0.4, 0.05, SIZES, 8, rng), CoordExpectation(0.0, "")
    )
    shrinks = coord_row(
        "x", "change", 10, "N", "s", SIZES, synthetic.positive(-0.4, 0.05, SIZES, 8, rng), CoordExpectation(0.0, "")
    )
    assert (trend(flat), trend(grows), trend(shrinks)) == ("flat", "grows", "shrinks")
    assert grows.lo > grows.band and shrinks.hi < -shrinks.band and -flat.band <= flat.lo <= flat.hi <= flat.band


def test_a_site_without_an_estimate_is_not_measured_and_says_why():
    """coord_row's three no-estimate cases: RMS zero at every size, zero at some size, and a fit that cannot be
    made (one size); each is NOT_MEASURED, never a verdict, and its note names the cause and the expectation."""
    from dmft.coord import IDENTICALLY_ZERO, PARTLY_ZERO
    from dmft.verdict import NOT_MEASURED

    sizes = np.array([4, 8, 16])
    exp = CoordExpectation(0.0, "the reason")
    zero = coord_row("x", "change", 1, "N", "s", sizes, np.zeros((3, 4)), exp)
    part = coord_row("x", "change", 1, "N", "s", sizes, np.array([[0.0] * 4, [1.0] * 4, [1.1] * 4]), exp)
    one = coord_row("x", "init", 0, "N", "s", sizes[:1], np.ones((1, 4)), exp)
    for v, cause in ((zero, IDENTICALLY_ZERO), (part, PARTLY_ZERO), (one, "")):
        assert v.outcome == NOT_MEASURED and np.isnan(v.estimate)
        assert v.note.startswith(cause) and v.note.endswith("; the reason")
    assert one.note != "; the reason"  # the fit's own error message leads the note

"""The registry of predictions (dmft.predictions.REGISTRY) and the rows built from it (dmft.check, dmft.report):
one primary row per prediction, declared before any data; a known wrong truth never comes out ✓; the headline
counts primary rows only; the band of a slope row is derived from its own local slopes, not a constant."""

import numpy as np
import pytest

from dmft import fit, synthetic, verdict
from dmft.check import check, row_verdict
from dmft.predictions import REGISTRY, planned_rows
from dmft.report import rate_verdict
from probes.experiment.config import make_run_config
from probes.grid.sweep import run_sweep

GRID = [
    (aA, aL, sp, axis)
    for aA in (0.5, 0.75, 1.0)
    for aL in (0.5, 1.0)
    for sp in (False, True)
    for axis in ("N", "H", "L")
]


@pytest.mark.parametrize("key", list(REGISTRY))
def test_every_prediction_declares_exactly_one_primary_row_wherever_it_applies(key):
    entry = REGISTRY[key]
    assert entry.claim and entry.needs and [r.name for r in entry.rows].count(entry.rows[0].name) == 1
    for aA, aL, sp, axis in GRID:
        rows = planned_rows([key], aA, aL, sp, axis, True)
        if rows:
            assert sum(p.primary for p in rows) == 1, (key, aA, aL, sp, axis, [p.spec.name for p in rows])
            for p in rows:  # hypotheses are values and shapes: no tolerance anywhere
                assert not hasattr(p.hypotheses, "tol") and p.hypotheses.prediction.name


def test_trained_rates_declare_their_primary_rows():
    """P5/P6: the seed-variance rate at the last probe step; alpha_A = 1/2 along N: the plateau test; conv-L: the
    paired block-draw variance, its squared bias secondary."""
    prim = {
        (aA, axis): next(p for p in planned_rows(["P5", "P6"], aA, 1.0, False, axis, True) if p.primary)
        for aA in (0.5, 1.0)
        for axis in ("N", "H")
    }
    assert prim[(1.0, "N")].spec.estimator == "seed-variance rate" and prim[(1.0, "N")].spec.step == "last"
    assert prim[(0.5, "N")].spec.estimator == "plateau" and prim[(0.5, "N")].hypotheses.prediction.name == "plateau"
    assert prim[(1.0, "H")].spec.estimator == "seed-variance rate"
    conv = planned_rows(["conv-L"], 1.0, 1.0, False, "L", True)
    assert [(p.spec.estimator, p.primary, p.hypotheses.exponent) for p in conv] == [
        ("paired block-draw variance", True, -1.0),
        ("paired squared bias", False, -2.0),
    ]
    assert planned_rows(["conv-L"], 1.0, 0.5, False, "L", True)[0].hypotheses.exponent == 0.0
    assert planned_rows(["conv-L"], 1.0, 1.0, True, "L", True) == []  # SP: no limit predicted


def test_a_known_wrong_rate_is_never_consistent_through_the_real_estimator(tmp_path):
    """Seed variance falling as N^-1/2 (correlated entries and sizes, the preset's 6 seeds over N = 4..32) checked
    as P6 at alpha_A = 1 (predicted -1): its primary row is refuted or underpowered in every repetition, and the
    true rate checked the same way is never refuted."""
    import xarray as xr

    prim = next(p for p in planned_rows(["P6"], 1.0, 1.0, False, "N", True) if p.primary)
    rng = np.random.default_rng(7)
    sizes = [4, 8, 16, 32]
    outcomes = {-0.5: [], -1.0: []}
    for rep in range(12):
        for rate in outcomes:
            truth = synthetic.Truth(rate=rate, bias=0.5, rho_entries=0.3, rho_sizes=0.5)
            path = tmp_path / f"s{rep}{rate}.nc"
            synthetic.to_dataset(synthetic.sweep(truth, sizes, 6, 16, rng), sizes).to_netcdf(path)
            with xr.open_dataset(path) as ds:
                v = rate_verdict(prim, ds.load(), {"name": "synthetic"}, "N", 10)
            assert v.primary and v.band_source == "local slopes"
            outcomes[rate].append(v.outcome)
    assert "consistent" not in outcomes[-0.5], outcomes
    assert "refuted" not in outcomes[-1.0], outcomes


def test_the_headline_counts_primary_rows_only_and_names_the_failures():
    p = next(p for p in planned_rows(["P1"], 1.0, 1.0, False, "N", False) if p.primary)
    sec = planned_rows(["P2"], 1.0, 1.0, False, "N", True)[1]
    rows = [
        row_verdict(p, "N", "mup", -1.0, -1.05, -0.95, 0.1, "local slopes"),
        row_verdict(p, "N", "sp", 0.0, -0.05, 0.05, 0.1, "local slopes"),
        row_verdict(sec, "N", "mup", 0.0, -0.05, 0.05, 0.1, "local slopes"),
    ]  # refuted, secondary
    assert [v.outcome for v in rows] == ["consistent", "refuted", "refuted"] and not rows[2].primary
    line = verdict.headline(rows)
    assert line.startswith("2 primary rows: 1 ✓ consistent, 1 ✗ refuted (P1 sp N)"), line
    assert "P2" not in line


def test_a_slope_row_carries_the_band_of_its_own_local_slopes(tmp_path):
    """check's P1 row on a real init-only sweep on disk: the band printed with the row is `dmft.fit.band_of` its
    local slopes, and the prediction's region is the exponent +- that band (not a constant)."""
    cfg = make_run_config(model={"task": "vision", "N": 2, "H": 2, "L": 1})
    ds = run_sweep(cfg, "N", [2, 4, 8, 16], 3, tmp_path / "s.nc", init_only=True)
    v = next(v for v in check(ds) if v.key == "P1")
    assert v.primary and v.band_source == "local slopes" and len(v.local) == 3
    assert v.band == pytest.approx(float(fit.band_of(np.asarray(v.estimate), np.asarray(v.local))))
    assert (v.prediction.hi - v.prediction.lo) / 2 == pytest.approx(v.band)

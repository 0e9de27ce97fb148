"""Verdicts that compare sweeps or read a whole trained sweep: P9 (depth at equal compute, alpha_L = 1 vs 1/2),
P11 (dynamics across H) and P12 (trained kernels across alpha_A). docs/predictions.md states each claim.

Every function returns a `dmft.verdict.Verdict` row with the hypotheses of the registry
(`dmft.predictions.REGISTRY`): P9 the sign of a loss difference (band 0, stated), P11 "flat" (Fig. 6a) against
"falls" (Fig. 7a) on the slope of the final loss with the band from its local slopes, P12 an equivalence test
(the 90% interval of the relative kernel difference within `P12_DELTA`). Diverged points (NaN losses or kernels) are left out of the seed means and of the resamples.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import xarray as xr

from . import divergence, measure
from .check import read_run_attrs, row_verdict, slope_verdict
from .predictions import P12_DELTA, P12_LEVEL, planned_rows
from .verdict import CONSISTENT, REFUTED, Verdict

N_BOOT = 2000
LEVEL = 0.95


def _finite_rows(values: np.ndarray) -> list[np.ndarray]:
    """Per size, the finite seed values of values (size, seed)."""
    return [row[np.isfinite(row)] for row in np.asarray(values, dtype=float)]


def _masked(ds: xr.Dataset, da: xr.DataArray, axis: str) -> xr.DataArray:
    """da with its diverged (size, seed) points set to NaN."""
    mask = divergence.diverged_mask(ds)
    return da if mask is None else da.where(~mask)


def final_loss(ds: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(sizes, final held-out loss (size, seed) in nats), diverged points NaN."""
    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    da = _masked(ds, ds["heldout_loss"].isel(step=-1), axis).transpose(axis, "seed")
    return da[axis].values.astype(float), da.values.astype(float)


def comparable(a: xr.Dataset, b: xr.Dataset, differ: str) -> bool:
    """True when two sweeps have the same model, optimizer, run and probe settings, the same axis and sizes, and
    parametrizations that differ only in `differ` ("alpha_A" or "alpha_L"; the preset name is ignored)."""

    def key(ds: xr.Dataset) -> str:
        cfg = json.loads(ds.attrs["config"])
        param = {k: v for k, v in cfg["param"].items() if k not in (differ, "name")}
        rest = {k: v for k, v in cfg.items() if k not in ("param", "seed", "out")}
        return json.dumps(
            [param, rest, measure.sweep_axis(ds), list(ds[measure.sweep_axis(ds)].values.tolist())],
            sort_keys=True,
            default=str,
        )

    try:
        return read_run_attrs(a)[differ] != read_run_attrs(b)[differ] and key(a) == key(b)
    except (KeyError, ValueError):
        return False


def _boot_mean_diff(x: np.ndarray, y: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """mean(x) - mean(y) and its bootstrap percentile interval (seeds of x and y resampled independently)."""
    rng = np.random.default_rng(seed)
    bx = x[rng.integers(0, len(x), (N_BOOT, len(x)))].mean(1)
    by = y[rng.integers(0, len(y), (N_BOOT, len(y)))].mean(1)
    a = (1 - LEVEL) / 2
    lo, hi = np.quantile(bx - by, [a, 1 - a])
    return float(x.mean() - y.mean()), float(lo), float(hi)


def _planned(key: str, ds: xr.Dataset, axis: str):
    a = read_run_attrs(ds)
    return planned_rows([key], a["alpha_A"], a["alpha_L"], a["standard"], axis, True, a["task"])[0]


def p9_verdict(one: xr.Dataset, half: xr.Dataset) -> Verdict:
    """P9 from two trained L sweeps, alpha_L = 1 (`one`) and 1/2 (`half`), otherwise identical: at equal L the
    parameters and steps, hence the compute, are equal, so "lower loss at fixed compute" is a lower final loss at
    the same L. Estimate: loss(alpha_L = 1) - loss(alpha_L = 1/2) at the largest L [95% seed bootstrap], in nats;
    consistent when the interval lies below 0, refuted above 0 (band 0, stated). The note lists every L."""
    sizes, l1 = final_loss(one)
    _, lh = final_loss(half)
    per = []
    for L, x, y in zip(sizes, _finite_rows(l1), _finite_rows(lh)):
        per.append((L, *_boot_mean_diff(x, y)) if len(x) and len(y) else (L, np.nan, np.nan, np.nan))
    L, d, lo, hi = per[-1]
    name = f"{read_run_attrs(one)['name']} vs {read_run_attrs(half)['name']}"
    note = f"L={int(L)}; loss(alpha_L=1) - loss(alpha_L=1/2) per L: " + ", ".join(
        f"L={int(s)}: {v:+.3f} [{a:+.3f}, {b:+.3f}]" for s, v, a, b in per
    )
    return row_verdict(
        _planned("P9", one, "L"),
        "L",
        name,
        d,
        lo,
        hi,
        0.0,
        "stated: the sign of a difference",
        n_sizes=len(sizes),
        n_seeds=int(min(len(r) for r in _finite_rows(l1))),
        note=note,
    )


# P11's band, stated: a slope of log(final loss) against log(H) within 0.01 of 0 is "flat" (a 1% loss change per
# e-fold of H, 0.7% per doubling: what Fig. 6a's overlapping curves allow), below -0.01 it "falls".
P11_BAND = 0.01
P11_BAND_SOURCE = "stated: 1% loss change per e-fold of H"


def p11_verdict(ds: xr.Dataset) -> Verdict:
    """P11 from a trained H sweep: the log-log slope of the final held-out loss against H with its joint jackknife
    interval and the stated band `P11_BAND` (`dmft.check.slope_verdict`), against P11's two hypotheses
    (`dmft.predictions.p11_hypotheses`: "flat", Fig. 6a, and "falls", Fig. 7a; the task's figure is the
    prediction). The note says which the data favour: the one whose region holds the interval while the other's
    does not, else neither."""
    sizes, loss = final_loss(ds)
    p = _planned("P11", ds, "H")
    means = [np.nanmean(r) if np.isfinite(r).any() else np.nan for r in loss]
    note = "final held-out loss per H: " + ", ".join(f"H={int(s)}: {m:.4f}" for s, m in zip(sizes, means))
    v = slope_verdict(
        p, "H", read_run_attrs(ds)["name"], sizes, loss, note=note, band=P11_BAND, band_source=P11_BAND_SOURCE
    )
    return replace(v, note=f"favours: {p11_favours(v)}; {v.note}")


def p11_favours(v: Verdict) -> str:
    """Which of P11's hypotheses the row `v` favours: the prediction's name when consistent, the alternative's when
    the interval lies in the alternative's region and outside the prediction's, else "neither" (with why)."""
    if v.outcome == CONSISTENT:
        return v.prediction.name
    alt = v.alternatives[0]
    if v.outcome == REFUTED and alt.contains(v.lo, v.hi):
        return alt.name
    if v.outcome == REFUTED:
        return "neither (the loss rises with H)"
    return "neither (underpowered)" if v.lo <= v.hi else "neither (not measured)"


def _final_kernel(ds: xr.Dataset) -> xr.DataArray:
    """The trained pooled kernel of the last layer, (axis, seed, sample, sample'), diverged points NaN."""
    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    K = ds["kernel_pooled"].isel(step=-1, depth=-1)
    return _masked(ds, K, axis).transpose(axis, "seed", ...)


def _rel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|mean a - mean b|_F / |mean b|_F over the seed axis 1 of (B, seed, P, P) stacks: (B,)."""
    d = a.mean(1) - b.mean(1)
    return np.sqrt((d**2).sum(axis=(1, 2)) / (b.mean(1) ** 2).sum(axis=(1, 2)))


def p12_verdict(one: xr.Dataset, half: xr.Dataset, n_boot: int = N_BOOT, seed: int = 0) -> Verdict:
    """P12 from two trained N sweeps, alpha_A = 1 (`one`) and 1/2 (`half`), otherwise identical: an equivalence
    test. Estimate: D = |mean K(1) - mean K(1/2)|_F / |mean K(1/2)|_F, the relative difference of the seed-mean
    trained pooled kernels of the last layer, at the smallest N (the paper: equal except a slight difference at
    large N), with its P12_LEVEL (90%) percentile bootstrap interval over seeds (jointly for both sweeps when they
    ran the same seeds: a seed draws the same random numbers under both alpha_A). Consistent when the interval
    lies within [0, P12_DELTA) (`dmft.predictions.P12_DELTA`, printed as the band), refuted when it lies above
    it. The note gives D at every N."""
    axis = measure.sweep_axis(one)
    K1, Kh = _final_kernel(one), _final_kernel(half)
    sizes = K1[axis].values.astype(float)
    paired = np.array_equal(K1["seed"].values, Kh["seed"].values)
    rng = np.random.default_rng(seed)
    per = []
    for n in sizes:
        a, b = K1.sel({axis: n}).values, Kh.sel({axis: n}).values  # (seed, P, P)
        ok_a, ok_b = np.isfinite(a).all(axis=(1, 2)), np.isfinite(b).all(axis=(1, 2))
        if paired:
            a, b = a[ok_a & ok_b], b[ok_a & ok_b]
        else:
            a, b = a[ok_a], b[ok_b]
        if len(a) < 2 or len(b) < 2:
            per.append((n, np.nan, np.nan, np.nan, 0))
            continue
        ia = rng.integers(0, len(a), (n_boot, len(a)))
        ib = ia if paired else rng.integers(0, len(b), (n_boot, len(b)))
        boot = _rel_diff(a[ia], b[ib])
        q = (1 - P12_LEVEL) / 2
        lo, hi = np.quantile(boot, [q, 1 - q])
        per.append((n, float(_rel_diff(a[None], b[None])[0]), float(lo), float(hi), len(a)))
    first = next((r for r in per if np.isfinite(r[1])), per[0])
    name = f"{read_run_attrs(one)['name']} vs {read_run_attrs(half)['name']}"
    note = f"{axis}={int(first[0])}, {'paired' if paired else 'independent'} seeds; |dK|/|K| per {axis}: " + ", ".join(
        f"{int(s)}: {d:.3f} [{lo:.3f}, {hi:.3f}]" for s, d, lo, hi, _ in per
    )
    return row_verdict(
        _planned("P12", one, axis),
        axis,
        name,
        first[1],
        first[2],
        first[3],
        P12_DELTA,
        "stated equivalence margin (dmft.predictions.P12_DELTA: a 10% kernel change)",
        level=P12_LEVEL,
        n_sizes=len(sizes),
        n_seeds=int(first[4]),
        note=note,
    )

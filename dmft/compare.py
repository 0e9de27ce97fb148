"""Verdicts that compare sweeps or read a whole trained sweep: P9 (depth at equal compute, alpha_L = 1 vs 1/2),
P11 (dynamics across H) and P12 (trained kernels across alpha_A). docs/predictions.md states each claim.

Every function returns a `dmft.check.Verdict`; the measured column carries the numbers and a seed bootstrap.
Diverged points (NaN losses or kernels) are left out of the seed means and of the resamples.
"""
from __future__ import annotations

import json

import numpy as np
import xarray as xr

from . import divergence, measure
from .check import Verdict, run_attrs
from .fit import loglog_fit
from .predictions import P9_NOTE, P11_HYPOTHESES, P12_NOTE

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
        return json.dumps([param, rest, measure.sweep_axis(ds), list(ds[measure.sweep_axis(ds)].values.tolist())],
                          sort_keys=True, default=str)
    try:
        return run_attrs(a)[differ] != run_attrs(b)[differ] and key(a) == key(b)
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


def p9_verdict(one: xr.Dataset, half: xr.Dataset) -> Verdict:
    """P9 from two trained L sweeps, alpha_L = 1 (`one`) and 1/2 (`half`), otherwise identical: at equal L the
    parameters and steps, hence the compute, are equal, so "lower loss at fixed compute" is a lower final loss at
    the same L. Measured: loss(alpha_L = 1) - loss(alpha_L = 1/2) at the largest L [95% CI], in nats; consistent
    when the interval lies below 0. The note lists the difference at every L."""
    sizes, l1 = final_loss(one)
    _, lh = final_loss(half)
    per = []
    for L, x, y in zip(sizes, _finite_rows(l1), _finite_rows(lh)):
        per.append((L, *_boot_mean_diff(x, y)) if len(x) and len(y) else (L, np.nan, np.nan, np.nan))
    L, d, lo, hi = per[-1]
    name = f"{run_attrs(one)['name']} vs {run_attrs(half)['name']}"
    note = P9_NOTE + "; loss(alpha_L=1) - loss(alpha_L=1/2) per L: " + ", ".join(
        f"L={int(s)}: {v:+.3f} [{a:+.3f}, {b:+.3f}]" for s, v, a, b in per)
    return Verdict("P9", "final_loss_difference", "L", name, "< 0 at the largest L",
                   f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}] nats at L={int(L)}", d, lo, hi, 0.0,
                   bool(np.isfinite(hi) and hi < 0), "", note)


# P11: |slope| of log(final loss) against log(H) below this is "similar" (a 1% loss change per e-fold of H, i.e.
# 0.7% per doubling: below the seed spread of the final loss in every CPU sweep we ran).
P11_FLAT = 0.01


def p11_verdict(ds: xr.Dataset) -> Verdict:
    """P11 from a trained H sweep: the log-log slope of the final held-out loss against H [95% CI]. Two
    statements of the paper are carried as hypotheses (`P11_HYPOTHESES`): "similar across H" (the ViT, Fig. 6a)
    when the interval reaches within P11_FLAT of 0; "improves with H" (C4, Fig. 7a) when it lies below 0. The
    data may support one, both (a small but resolved gain) or neither."""
    sizes, loss = final_loss(ds)
    fit = loglog_fit(sizes, loss)
    flat = fit.lo - P11_FLAT <= 0 <= fit.hi + P11_FLAT
    falls = fit.hi < 0
    supported = [h for h, kind in P11_HYPOTHESES.items() if (flat if kind == "flat" else falls)]
    means = [np.nanmean(r) for r in loss]
    note = ("final held-out loss per H: " + ", ".join(f"H={int(s)}: {m:.4f}" for s, m in zip(sizes, means))
            + f"; 'similar' means |slope| within {P11_FLAT:g} of 0")
    return Verdict("P11", "final_loss", "H", run_attrs(ds)["name"], "flat (Fig. 6a) or < 0 (Fig. 7a)",
                   f"{fit.slope:+.4f} [{fit.lo:+.4f}, {fit.hi:+.4f}]", fit.slope, fit.lo, fit.hi, P11_FLAT,
                   bool(supported), ", ".join(supported) or "neither", note)


def _final_kernel(ds: xr.Dataset) -> xr.DataArray:
    """The trained pooled kernel of the last layer, (axis, seed, sample, sample'), diverged points NaN."""
    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    K = ds["kernel_pooled"].isel(step=-1, depth=-1)
    return _masked(ds, K, axis).transpose(axis, "seed", ...)


# P12: a kernel difference within this many standard errors of the seed means counts as "within the seed noise"
# (2 standard errors: a two-sided 95% band of a difference of two independent means).
P12_NOISE_UNITS = 2.0


def p12_verdict(one: xr.Dataset, half: xr.Dataset) -> Verdict:
    """P12 from two trained N sweeps, alpha_A = 1 (`one`) and 1/2 (`half`), otherwise identical. Per N:
    D = |mean K(alpha_A = 1) - mean K(alpha_A = 1/2)|_F over the last layer's trained pooled kernel, and the
    noise level it would have if both means were equal: sigma = sqrt(sum over entries of Var_seed(K1 - Kh) /
    n_seeds) when both sweeps ran the same seeds (a paired comparison: a seed draws the same random numbers under
    both alpha_A, so the seed noise largely cancels in the difference), else sqrt(sum of Var_seed / n_seeds of
    both). Measured: D / sigma per N (in standard errors). Consistent when D / sigma <= P12_NOISE_UNITS at the
    smallest N ("identical except a slight difference at large N"); the note also reports the relative
    difference D / |K| and whether the ratio grows with N."""
    axis = measure.sweep_axis(one)
    K1, Kh = _final_kernel(one), _final_kernel(half)
    sizes = K1[axis].values.astype(float)
    paired = np.array_equal(K1["seed"].values, Kh["seed"].values)
    ratios, rel = [], []
    for n in sizes:
        a, b = K1.sel({axis: n}).values, Kh.sel({axis: n}).values                  # (seed, P, P)
        if paired:       # same seeds: the two draws share their random numbers, so difference per seed
            ok_s = np.isfinite(a).all(axis=(1, 2)) & np.isfinite(b).all(axis=(1, 2))
            a, b = a[ok_s], b[ok_s]
        else:
            a, b = a[np.isfinite(a).all(axis=(1, 2))], b[np.isfinite(b).all(axis=(1, 2))]
        if len(a) < 2 or len(b) < 2:
            ratios.append(np.nan)
            rel.append(np.nan)
            continue
        diff = a.mean(0) - b.mean(0)
        if paired:
            sigma = np.sqrt(((a - b).var(0, ddof=1) / len(a)).sum())
        else:
            sigma = np.sqrt((a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b)).sum())
        ratios.append(float(np.sqrt((diff ** 2).sum()) / sigma))
        rel.append(float(np.sqrt((diff ** 2).sum() / (a.mean(0) ** 2).sum())))
    ratios, rel = np.asarray(ratios), np.asarray(rel)
    ok = bool(np.isfinite(ratios[0]) and ratios[0] <= P12_NOISE_UNITS)
    trend = "grows" if np.isfinite(ratios).sum() >= 2 and ratios[np.isfinite(ratios)][-1] > ratios[0] else "does not grow"
    name = f"{run_attrs(one)['name']} vs {run_attrs(half)['name']}"
    note = (P12_NOTE + "; |dK|/|K| per N: " + ", ".join(f"N={int(s)}: {r:.3f}" for s, r in zip(sizes, rel))
            + f"; the difference in standard errors {trend} with N")
    return Verdict("P12", "kernel_difference", axis, name, f"<= {P12_NOISE_UNITS:g} s.e. at the smallest N",
                   "D/s.e. per N: " + ", ".join(f"{r:.2f}" for r in ratios), float(ratios[0]), np.nan, np.nan,
                   0.0, ok, "", note)

"""Exponent fitting: log-log slopes over >= 3 sizes, their local slopes, the band, and jackknife intervals.

A slope row fits log y(n) = intercept + slope log n by least squares over the sizes, where y(n) is a per-size
estimate (the seed mean of a per-seed positive quantity, a seed variance, a squared bias, a distance). It returns:

- the global slope and its interval at `level`: the jackknife over seeds, deleting one seed at every size at once
  (seed s is the same draw at every size: docs/predictions.md, "The verdict rule"), with a t quantile of
  S - 1 degrees of freedom: slope +- t SE, SE^2 = (S-1)/S sum_i (slope_(i) - mean)^2;
- the local slopes between adjacent sizes (point estimates): whether the asymptotic regime is reached;
- the band: the half-width of every hypothesis of the row, derived from the fit's own next-order term
  (`band_of`), or given by the user (`band=`; `band_source` says which).

With `correction=p` (the coordinate check, p = 1) the band also covers the next-order term of a quantity that
approaches its power law as n^e (1 + c n^-p): its local slopes drift towards e with one sign (halving per doubling
at p = 1), so the global slope lies outside their spread. The two-term model log y = a + e log n + c n^-p, fitted
by least squares, gives the asymptotic exponent e (`extrapolated_slope`). Where e lies closer to the predicted
exponent than the global slope, the band adds |e - slope|, the part of the distance that the next-order term
explains, to the local-slope band (`band_with_correction`); where e lies farther (local slopes moving away from
the prediction, a blow-up), nothing is added.

Functions on arrays (`fit_rows`) take the estimate and its leave-one-seed-out replicates as rows, with any
leading dims (repetitions of a synthetic sweep in `dmft.power`), and are vectorised over them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from . import estimators

__all__ = [
    "BAND_SOURCE",
    "RowFit",
    "SlopeFit",
    "band_of",
    "band_with_correction",
    "extrapolated_slope",
    "fit_rows",
    "jackknife_interval",
    "local_slopes",
    "loglog_rows",
    "slope_fit",
]

BAND_SOURCE = "local slopes"  # how `band_of` derives the band, as printed with the row


@dataclass(frozen=True)
class SlopeFit:
    """slope and intercept of log(y) = intercept + slope*log(size) fitted to the per-size estimates; lo, hi: its
    interval at `level` (the joint jackknife over seeds with a t quantile); n_sizes, n_seeds: the data behind it.
    local: the slopes between adjacent sizes; band, band_source: the half-width of the row's hypotheses and how it
    was obtained (`band_of`, or "user")."""

    slope: float
    intercept: float
    lo: float
    hi: float
    level: float
    n_sizes: int
    n_seeds: int
    local: tuple[float, ...] = ()
    band: float = math.nan
    band_source: str = ""

    @property
    def constant(self) -> float:
        """exp(intercept): the prefactor c in y = c * size^slope."""
        return float(np.exp(self.intercept))

    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


# ---- on arrays -----------------------------------------------------------------------------------------------


def _log_positive(y: np.ndarray) -> np.ndarray:
    """log y where y > 0, NaN elsewhere (no warning)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), np.nan)


def loglog_rows(x, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of log y against log x over the last axis of y (any leading dims).
    A value y <= 0 (or NaN) gives a NaN slope."""
    lx = np.log(np.asarray(x, dtype=float))
    w = (lx - lx.mean()) / np.sum((lx - lx.mean()) ** 2)
    ly = _log_positive(y)
    slope = ly @ w
    return slope, ly.mean(axis=-1) - slope * lx.mean()


def local_slopes(x, y: np.ndarray) -> np.ndarray:
    """(..., n-1): the slopes of log y between adjacent x (NaN where y <= 0)."""
    lx = np.log(np.asarray(x, dtype=float))
    ly = _log_positive(y)
    return np.diff(ly, axis=-1) / np.diff(lx)


def band_of(slope: np.ndarray, local: np.ndarray) -> np.ndarray:
    """The band of a slope row from its local slopes (docs/predictions.md, "The verdict rule"): the largest
    distance of a local slope from the global slope."""
    return np.max(np.abs(local - slope[..., None]), axis=-1)


def extrapolated_slope(x, y: np.ndarray, p: float = 1.0) -> np.ndarray:
    """The asymptotic exponent e of the two-term model log y = a + e log x + c x^-p, least squares over the last
    axis of y (...,) (module docstring). At 3 sizes the model interpolates: e is where the two local slopes
    extrapolate to. NaN where y <= 0."""
    x = np.asarray(x, dtype=float)
    if len(x) < 3:
        raise ValueError(f"a two-term fit needs at least 3 sizes, got {len(x)}")
    X = np.stack([np.ones_like(x), np.log(x), x**-p], axis=1)  # (n, 3) design matrix
    return _log_positive(y) @ np.linalg.pinv(X)[1]  # the coefficient of log x


def band_with_correction(
    x, y: np.ndarray, slope: np.ndarray, local: np.ndarray, toward: float, p: float = 1.0
) -> np.ndarray:
    """The band of a slope row of y whose next-order term is c n^-p (module docstring): `band_of` the local slopes,
    plus |e - slope| where the two-term model's exponent e (`extrapolated_slope`) lies closer to the predicted
    exponent `toward` than the slope does (a correction that explains part of the distance); nothing is added where
    e lies farther (local slopes that move away from the prediction, e.g. a blow-up)."""
    e = extrapolated_slope(x, y, p)
    credit = np.where(np.abs(e - toward) < np.abs(slope - toward), np.abs(e - slope), 0.0)
    return band_of(slope, local) + credit


def jackknife_interval(est: np.ndarray, reps: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """est +- t_{S-1} SE with the jackknife SE over the replicates reps (..., S) (leave one seed out). A
    replicate that is NaN (not resolved without that seed) makes the interval (-inf, +inf)."""
    S = reps.shape[-1]
    if S < 2:
        nan = np.full(np.shape(est), np.nan)
        return nan, nan
    with np.errstate(invalid="ignore"):
        se = np.sqrt((S - 1) / S * np.sum((reps - reps.mean(axis=-1, keepdims=True)) ** 2, axis=-1))
    t = stats.t.ppf(0.5 + level / 2, S - 1)
    half = np.where(np.isnan(se), np.inf, t * se)
    return est - half, est + half


@dataclass(frozen=True, eq=False)
class RowFit:
    """Slope rows on arrays: slope, intercept, lo, hi, band (...,) and local (..., n-1); NaN slope where the
    estimate is <= 0 at some size (not resolved)."""

    slope: np.ndarray
    intercept: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    local: np.ndarray
    band: np.ndarray


def fit_rows(x, y: np.ndarray, level: float = 0.95, correction: tuple[float, float] | None = None) -> RowFit:
    """Fit y (..., 1 + S, n): row 0 the per-size estimate, rows 1.. its leave-one-seed-out replicates, against
    sizes x (n,): the slope of row 0, its jackknife interval, its local slopes and `band_of` them (or
    `band_with_correction` with correction=(p, the predicted exponent))."""
    slopes, intercepts = loglog_rows(x, y)
    est = slopes[..., 0]
    lo, hi = jackknife_interval(est, slopes[..., 1:], level)
    local = local_slopes(x, y[..., 0, :])
    band = (
        band_of(est, local)
        if correction is None
        else band_with_correction(x, y[..., 0, :], est, local, correction[1], correction[0])
    )
    bad = np.isnan(est)
    lo, hi = np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)
    return RowFit(est, intercepts[..., 0], lo, hi, local, band)


# ---- on one sweep of a per-seed positive quantity -------------------------------------------------------------


def slope_fit(
    sizes, values, level: float = 0.95, band: float | None = None, correction: tuple[float, float] | None = None
) -> SlopeFit:
    """Fit log(mean over seeds) against log(size), with the joint jackknife interval, local slopes and band.

    sizes: (n_sizes,) positive; values: (n_sizes, n_seeds) with a positive seed mean at every size (single values
    may be <= 0), column s the same seed at every size (NaN: left out). band: a user band (>= 0) instead of the
    derived one. correction=(p, predicted exponent): the derived band also covers a next-order term c n^-p
    (`band_with_correction`). Raises ValueError with fewer than 3 sizes or a seed mean <= 0. With one seed the
    interval is NaN (nothing to resample)."""
    sizes = np.asarray(sizes, dtype=float)
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] == len(sizes):  # sizes without any finite value (e.g. a variance over H = 1 head)
        keep = np.isfinite(values).any(axis=1)
        sizes, values = sizes[keep], values[keep]
    if len(sizes) < 3:
        raise ValueError(f"a slope needs at least 3 sizes, got {len(sizes)}")
    if values.shape[0] != len(sizes):
        raise ValueError(f"values has {values.shape[0]} rows for {len(sizes)} sizes")
    with np.errstate(invalid="ignore"):
        means = np.nanmean(values, axis=1)
    if np.any(~(means > 0)):
        # single values may be <= 0 (a signed quantity such as the stream growth); its seed mean may not
        raise ValueError("log-log fit of non-positive values (the seed mean is <= 0 at some size)")
    if band is not None and not (np.isfinite(band) and band >= 0):
        raise ValueError(f"band must be a number >= 0, got {band!r}")
    values = values[:, np.isfinite(values).any(axis=0)]  # seeds with no value anywhere: not seeds
    S = values.shape[1]
    m = estimators.moments(values[:, :, None], estimators.jackknife_weights(S))
    y = m.mean[..., 0]  # (1 + S, n)
    r = fit_rows(sizes, y, level, correction)
    n_seeds = int(np.min(np.sum(np.isfinite(values), axis=1)))
    derived = BAND_SOURCE if correction is None else f"{BAND_SOURCE} + two-term (n^-{correction[0]:g}) exponent"
    b, source = (float(r.band), derived) if band is None else (float(band), "user")
    return SlopeFit(
        float(r.slope),
        float(r.intercept),
        float(r.lo),
        float(r.hi),
        level,
        len(sizes),
        n_seeds,
        tuple(float(s) for s in r.local),
        b,
        source,
    )

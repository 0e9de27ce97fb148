"""Exponent fitting: log-log slopes over >= 3 sizes with seed-bootstrap confidence intervals."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SlopeFit:
    """slope and intercept of log(y) = intercept + slope*log(size) fitted to the seed means; lo, hi: the
    bootstrap percentile interval of the slope (level `level`); n_sizes, n_seeds: the data behind it."""

    slope: float
    intercept: float
    lo: float
    hi: float
    level: float
    n_sizes: int
    n_seeds: int

    @property
    def constant(self) -> float:
        """exp(intercept): the prefactor c in y = c * size^slope."""
        return float(np.exp(self.intercept))

    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def _fit(logx: np.ndarray, logy: np.ndarray) -> tuple[float, float]:
    slope, intercept = np.polyfit(logx, logy, 1)
    return float(slope), float(intercept)


def loglog_fit(sizes, values, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> SlopeFit:
    """Fit log(mean over seeds) against log(size).

    sizes: (n_sizes,) positive; values: (n_sizes, n_seeds) positive (NaN seeds are ignored). The interval comes
    from resampling the seeds of each size independently with replacement (`n_boot` times). Raises ValueError
    with fewer than 3 sizes or non-positive values.
    """
    sizes = np.asarray(sizes, dtype=float)
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] == len(sizes):   # sizes without any finite value (e.g. a variance over H = 1 head)
        keep = np.isfinite(values).any(axis=1)
        sizes, values = sizes[keep], values[keep]
    if len(sizes) < 3:
        raise ValueError(f"a slope needs at least 3 sizes, got {len(sizes)}")
    if values.shape[0] != len(sizes):
        raise ValueError(f"values has {values.shape[0]} rows for {len(sizes)} sizes")
    if np.any(values[np.isfinite(values)] <= 0):
        raise ValueError("log-log fit of non-positive values")
    logx = np.log(sizes)
    means = np.nanmean(values, axis=1)
    slope, intercept = _fit(logx, np.log(means))
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        m = np.empty(len(sizes))
        for i, row in enumerate(values):
            row = row[np.isfinite(row)]
            m[i] = row[rng.integers(0, len(row), len(row))].mean()
        boots[b] = _fit(logx, np.log(m))[0]
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a])
    n_seeds = int(np.min(np.sum(np.isfinite(values), axis=1)))
    return SlopeFit(slope, intercept, float(lo), float(hi), level, len(sizes), n_seeds)


def consistent(fit: SlopeFit, predicted: float, tol: float) -> bool:
    """True when `predicted` lies in the bootstrap interval widened by the finite-size allowance `tol`."""
    return fit.lo - tol <= predicted <= fit.hi + tol

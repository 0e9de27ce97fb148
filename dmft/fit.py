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
    rows = [row[np.isfinite(row)] for row in values]
    if len({len(r) for r in rows}) == 1:
        # every size has the same number of seeds: all resamples at once. One (n_boot, sizes, seeds) draw takes the
        # generator's numbers in the loop's order (b, then size, then seed), so the interval is the loop's to 1e-15,
        # about 100x faster; the slope is the least-squares slope of each resample, as np.polyfit's.
        kept = np.stack(rows)                                               # (sizes, seeds)
        idx = rng.integers(0, kept.shape[1], (n_boot, *kept.shape))         # (n_boot, sizes, seeds)
        logm = np.log(np.take_along_axis(np.broadcast_to(kept, idx.shape), idx, axis=2).mean(2))   # (n_boot, sizes)
        xc = logx - logx.mean()
        boots = (logm - logm.mean(1, keepdims=True)) @ xc / (xc @ xc)
    else:
        boots = np.empty(n_boot)
        for b in range(n_boot):
            m = np.array([row[rng.integers(0, len(row), len(row))].mean() for row in rows])
            boots[b] = _fit(logx, np.log(m))[0]
    a = (1 - level) / 2
    lo, hi = np.quantile(boots, [a, 1 - a])
    n_seeds = int(np.min(np.sum(np.isfinite(values), axis=1)))
    return SlopeFit(slope, intercept, float(lo), float(hi), level, len(sizes), n_seeds)


def consistent(fit: SlopeFit, predicted: float, tol: float) -> bool:
    """True when `predicted` lies in the bootstrap interval widened by the finite-size allowance `tol`."""
    return fit.lo - tol <= predicted <= fit.hi + tol

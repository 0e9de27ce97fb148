"""Finite networks against the computed limit: per width, the seed variance, the squared bias (seed mean minus
limit) and the mean-square distance of a variable from the solver's, and their rates against width
(docs/dmft-dynamics.md, "Finite networks against the limit"; Bordelon & Pehlevan 2023, arXiv 2304.03408: the
variance ~ width^-1 and the bias ~ width^-1 in amplitude, so the squared bias ~ width^-2 and the mean-square
distance ~ width^-1).

Inputs are xarray objects with the dataset names of `probes.experiment.dataset` (dims (axis, seed, step, ...)) and of
`dmft.dynamics.output` (the solution, dims (step, ...)); steps are matched by value. Seed s is the same draw at
every width (keyed init: the narrower model's weights are the leading part of the wider one's), so the interval
of every rate is the joint jackknife over seeds (`dmft.estimators`), as for every other slope row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from dmft import estimators, fit
from dmft.verdict import NOT_MEASURED, Verdict, above, below, point

# what each estimate is, and its predicted exponent against width (module docstring)
KINDS = {
    "seed_var": ("seed variance", -1.0),
    "bias2": ("squared bias (seed mean - limit)", -2.0),
    "msd": ("mean-square distance to the limit", -1.0),
}
# the bias ratio's margin: "this limit" allows a bias below half the seed sd at the largest width (ratio <= 1/4).
# For the limit the finite networks converge to, the ratio falls as width^-1; for another limit it grows as width
BIAS_RATIO_MARGIN = 0.25


@dataclass(frozen=True, eq=False)
class LimitDistances:
    """Per-width estimates of one variable against its limit, each (1 + S, n): row 0 over every seed, row i + 1
    without seed i. sizes (n,): the widths; units: the variable's squared. seed_var: the unbiased variance over
    seeds; bias2: ||seed mean - limit||^2 minus the variance of the seed mean (unbiased; can be < 0); msd: the seed
    mean of ||finite - limit||^2, which is ||seed mean - limit||^2 + (S - 1)/S seed_var, in expectation
    bias^2 + variance. Every norm is the mean over the variable's entries (steps, samples, outputs, ...)."""

    sizes: np.ndarray
    seed_var: np.ndarray
    bias2: np.ndarray
    msd: np.ndarray
    n_seeds: int


def limit_distances(finite: xr.DataArray, limit: xr.DataArray, axis: str, seed_dim: str = "seed") -> LimitDistances:
    """The `LimitDistances` of `finite` (dims axis, seed_dim, step, ...) from `limit` (dims step, ...), over the
    steps the two share and every other entry. ValueError when they share no step or their other dims differ."""
    steps = np.intersect1d(finite["step"].values, limit["step"].values)
    if not len(steps):
        raise ValueError("the finite runs and the limit share no step")
    other = [d for d in finite.dims if d not in (axis, seed_dim)]
    if sorted(map(str, other)) != sorted(map(str, limit.dims)):
        raise ValueError(f"the limit has dims {limit.dims}, the finite runs {other} besides {axis}, {seed_dim}")
    f = finite.sel(step=steps).transpose(axis, seed_dim, *other).astype(float)
    g = limit.sel(step=steps).transpose(*other).astype(float)
    n, S = f.sizes[axis], f.sizes[seed_dim]
    q = (f - g).values.reshape(n, S, -1)  # (size, seed, entry): finite - limit
    m = estimators.moments(q, estimators.jackknife_weights(S))
    v = estimators.seed_variance(m)  # (J, n)
    sq = np.mean(m.mean**2, axis=-1)  # ||seed mean - limit||^2, (J, n)
    c = m.count
    return LimitDistances(np.asarray(f[axis].values, dtype=float), v, sq - v / c, sq + (c - 1) / c * v, S)


def rate_verdicts(
    dist: LimitDistances, axis: str, quantity: str, setting: str, level: float = 0.95, key: str = "limit"
) -> list[Verdict]:
    """One `Verdict` per estimate (KINDS): the log-log slope against width with its joint jackknife interval and
    the band of its local slopes, against the predicted exponent and the alternative 0 (no approach)."""
    out = []
    for name, (what, exponent) in KINDS.items():
        r = fit.fit_rows(dist.sizes, getattr(dist, name), level)
        band = float(r.band)
        b = band if np.isfinite(band) else 0.0
        note = "" if np.isfinite(r.slope) else f"the {what} is <= 0 at some width (not resolved above the noise)"
        out.append(
            Verdict(
                key,
                f"{name} {quantity}",
                quantity,
                axis,
                setting,
                f"slope of the {what}",
                float(r.slope),
                float(r.lo),
                float(r.hi),
                point(f"width^{exponent:g}", exponent, b),
                (point("no approach", 0.0, b),),
                band=band,
                band_source=fit.BAND_SOURCE,
                level=level,
                local=tuple(float(x) for x in r.local),
                n_sizes=len(dist.sizes),
                n_seeds=dist.n_seeds,
                note=note,
                outcome="" if np.isfinite(r.slope) else NOT_MEASURED,
            )
        )
    return out


def bias_ratio_verdict(
    dist: LimitDistances,
    axis: str,
    quantity: str,
    setting: str,
    level: float = 0.95,
    margin: float = BIAS_RATIO_MARGIN,
    key: str = "limit",
) -> Verdict:
    """Whether the finite networks converge to THIS limit: bias^2 / seed variance at the largest width, with its
    joint jackknife interval, against "this limit" (<= margin) and "another limit" (> margin). The slope rows
    cannot say it alone: the distance to a wrong limit falls as width^-1 until the bias dominates, and its drifting
    local slopes widen the band."""
    ratio = dist.bias2[:, -1] / dist.seed_var[:, -1]  # (1 + S,): row 0 and the replicates
    lo, hi = fit.jackknife_interval(ratio[0], ratio[1:], level)
    return Verdict(
        key,
        f"bias ratio {quantity}",
        quantity,
        axis,
        setting,
        f"squared bias / seed variance at {axis} = {dist.sizes[-1]:g}",
        float(ratio[0]),
        float(lo),
        float(hi),
        below("this limit", margin),
        (above("another limit", margin),),
        band=margin,
        band_source="stated: a bias below half the seed sd",
        level=level,
        n_sizes=len(dist.sizes),
        n_seeds=dist.n_seeds,
    )

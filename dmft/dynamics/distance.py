"""Finite networks against the computed limit: per width, the seed variance, the bias (seed mean minus limit) and
the mean-square distance of a variable, and their rates against width (docs/dmft-dynamics.md, "Finite networks
against the limit"; Bordelon & Pehlevan 2023, arXiv 2304.03408: variance ~ 1/width and bias ~ 1/width, so the
mean-square distance ~ 1/width).

Inputs are xarray objects with the dataset names of `probes.dataset` (a sweep combined with `combine_runs`, dims
(axis, seed, step, ...)) and of `dmft.dynamics.output` (the solution, dims (step, ...)); steps are matched by value.
The slope is fitted by `fit_rate`, the one place that picks the fitting rule (today `dmft.fit.loglog_fit`, the
seed bootstrap), so the verdict rule can be switched there.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from dmft.fit import SlopeFit, loglog_fit


def limit_distances(finite: xr.DataArray, limit: xr.DataArray, axis: str, seed_dim: str = "seed") -> xr.Dataset:
    """Distances of one variable from its limit, reduced over every dim but (axis, step):

    seed_var (axis, step): variance over seeds (ddof 1), mean over the other dims;
    msd (axis, seed, step): (finite - limit)^2 of each seed, mean over the other dims (its mean over seeds is
        bias^2 + the ddof-0 variance: the mean-square distance);
    bias2 (axis, step): the squared bias with the seed-noise floor removed, (mean - limit)^2 - seed_var / n_seeds,
        mean over the other dims (unbiased for the squared bias; can be slightly negative);
    bias_ratio (axis,): sum over steps of bias2 over sum over steps of seed_var: how far, in units of the seed
        spread, the seeds' mean sits from the limit (0 when the finite networks converge to this limit).
    Steps are those common to both."""
    steps = np.intersect1d(finite["step"].values, limit["step"].values)
    f = finite.sel(step=steps).astype(float)
    g = limit.sel(step=steps).astype(float)
    other = [d for d in f.dims if d not in (axis, seed_dim, "step")]
    n = f.sizes[seed_dim]
    var = f.var(seed_dim, ddof=1)
    sq = (f - g) ** 2
    out = xr.Dataset({"seed_var": var.mean(other), "msd": sq.mean(other),
                      "bias2": ((f.mean(seed_dim) - g) ** 2 - var / n).mean(other)})
    out["bias_ratio"] = out["bias2"].sum("step") / out["seed_var"].sum("step")
    return out


def fit_rate(sizes, values) -> SlopeFit:
    """The rate of `values` against `sizes`: log-log slope with a seed-bootstrap interval. values: (sizes,) or
    (sizes, seeds) positive numbers (per-seed values are resampled for the interval)."""
    return loglog_fit(np.asarray(sizes, dtype=float), np.asarray(values, dtype=float))


def rates(dist: xr.Dataset, axis: str, seed_dim: str = "seed") -> dict[str, SlopeFit]:
    """{"seed_var": fit, "msd": fit} of `limit_distances`' output, each summed over steps first (the variance at
    t = 0 of a centred output is 0, so a sum rather than a mean of logs)."""
    sizes = dist[axis].values
    return {"seed_var": fit_rate(sizes, dist["seed_var"].sum("step").values),
            "msd": fit_rate(sizes, dist["msd"].sum("step").transpose(axis, seed_dim).values)}

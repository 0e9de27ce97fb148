"""A width sweep of full-batch runs against the DMFT solution of the same problem: the rows `dmft-probe check SWEEP
--limit SOLUTION` adds (docs/dmft-dynamics.md, "Finite networks against the limit").

The sweep (`dmft-probe sweep ... --batch full`) and the solution (`dmft-probe solve` with the same data options)
must share the training samples, their labels and some probe steps. Per quantity (the centred outputs on the
training and held-out samples, the feature kernels `kernel_pooled`, the gradient kernels `kernel_grad`), the seed
variance, squared bias and mean-square distance to the solution against the sweep's axis, and the bias ratio at its
largest value (`dmft.dynamics.distance`), over every shared step together; then the outputs' seed variance and
squared bias at each shared probe step apart (rows "... @t"). The mean-square distance of the outputs is also P6's
row against the computed limit (alpha_A = 1: N^-1), next to P6's extrapolated rows of `dmft.report`.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from dmft import measure
from dmft.verdict import Verdict

from .distance import bias_ratio_verdict, limit_distances, rate_verdicts


def _first(da: xr.DataArray, keep: tuple[str, ...]) -> np.ndarray:
    """da's values at index 0 of every dim not in `keep`."""
    return da.isel({d: 0 for d in da.dims if d not in keep}).values


def _outputs(ds: xr.Dataset) -> xr.DataArray:
    """Training then held-out centred outputs along one `sample` dim."""
    test = ds["test_outputs"].rename(test_sample="sample")
    return xr.concat([ds["probe_outputs"], test.assign_coords(sample=test["sample"] + ds.sizes["sample"])], "sample")


def quantities(ds: xr.Dataset) -> dict[str, xr.DataArray]:
    """{"outputs", "kernels", "grad_kernels"} of a sweep or a solution, every one with a `step` dim (the gradient
    kernels' `train_step` renamed: the step whose update they belong to)."""
    out = {"outputs": _outputs(ds), "kernels": ds["kernel_pooled"]}
    if "kernel_grad" in ds:
        out["grad_kernels"] = ds["kernel_grad"].rename(train_step="step")
    return out


def check_pair(sweep: xr.Dataset, lim: xr.Dataset, axis: str) -> None:
    """ValueError (one line) unless `lim` is a DMFT solution of the sweep's full-batch problem: the same training
    inputs and labels, shared steps, a sweep along N (or along H with one token: there only d = N H matters)."""
    if lim.attrs.get("kind") != "dmft_dynamics":
        raise ValueError("--limit must be a DMFT solution written by `dmft-probe solve`")
    if "test_outputs" not in sweep:
        raise ValueError("the sweep is not of full-batch runs (dmft-probe sweep --batch full --train-size P)")
    S = lim.sizes.get("token", 1)
    if axis not in ("N", "H") or (S > 1 and axis != "N"):
        raise ValueError(f"the limit is along N{' at fixed H' if S > 1 else ' or H'}; the sweep is along {axis}")
    x_s = _first(sweep["probe_inputs"], ("sample", "token", "feature"))
    y_s = _first(sweep["train_labels"], ("sample",))
    if (
        x_s.shape != lim["probe_inputs"].shape
        or not np.allclose(x_s, lim["probe_inputs"].values, atol=1e-6)
        or not np.array_equal(y_s, lim["train_labels"].values)
    ):
        raise ValueError("the sweep's training samples are not the solution's (same --task, --patch and --train-size?)")
    if sweep.sizes["test_sample"] != lim.sizes["test_sample"]:
        raise ValueError(
            f"the sweep has {sweep.sizes['test_sample']} held-out samples, the solution {lim.sizes['test_sample']}"
        )
    if not len(np.intersect1d(sweep["step"].values, lim["step"].values)):
        raise ValueError("the sweep and the solution share no probe step")


def limit_verdicts(sweep: xr.Dataset, lim: xr.Dataset, setting: str = "") -> list[Verdict]:
    """The rows of the sweep's runs against the solution (module docstring): per quantity the three rate rows and
    the bias ratio (key "limit"), the outputs' seed-variance and squared-bias rows at every shared step after 0 (at
    step 0 the centred outputs are 0 in both), then P6's mean-square-distance row and bias ratio against the
    computed limit. ValueError (one line) when the two do not belong together (`check_pair`)."""
    sweep = measure.with_seed_dim(sweep)
    axis = measure.sweep_axis(sweep)
    check_pair(sweep, lim, axis)
    if not setting:
        try:
            setting = json.loads(sweep.attrs["config"])["param"]["name"]
        except (KeyError, TypeError, ValueError):
            setting = ""
    mine, theirs = quantities(sweep), quantities(lim)
    rows: list[Verdict] = []
    p6: list[Verdict] = []
    for name, da in mine.items():
        if name not in theirs:
            continue
        dist = limit_distances(da, theirs[name], axis)
        rows += rate_verdicts(dist, axis, name, setting)
        rows.append(bias_ratio_verdict(dist, axis, name, setting))
        if name == "outputs" and axis == "N":
            p6 = [
                v
                for v in rate_verdicts(dist, axis, "outputs vs computed limit", setting, key="P6")
                if v.row.startswith("msd")
            ]
            p6.append(bias_ratio_verdict(dist, axis, "outputs vs computed limit", setting, key="P6"))
    per_step = []
    steps = np.intersect1d(mine["outputs"]["step"].values, theirs["outputs"]["step"].values)
    for t in steps[steps > 0]:
        dist = limit_distances(mine["outputs"].sel(step=[t]), theirs["outputs"].sel(step=[t]), axis)
        per_step += [v for v in rate_verdicts(dist, axis, f"outputs @{int(t)}", setting) if not v.row.startswith("msd")]
    return rows + per_step + p6

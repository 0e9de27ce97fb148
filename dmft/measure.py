"""Measured quantities of a sweep dataset, as (sizes, values[size, seed]) ready for `dmft.fit`.

A sweep dataset has the swept axis (N, H or L) and `seed` as dimensions, then the run dims (`step`, `layer`,
`depth`, ...). "init" quantities are read at step 0, "trained" ones at the last probe step.
"""

from __future__ import annotations

import numpy as np
import xarray as xr


def sweep_axis(ds: xr.Dataset) -> str:
    """The swept axis of a sweep dataset (attrs 'sweep_axis', else the one of N, H, L that is a dimension)."""
    axis = ds.attrs.get("sweep_axis")
    if axis in ("N", "H", "L") and axis in ds.dims:
        return axis
    dims = [a for a in ("N", "H", "L") if a in ds.dims]
    if len(dims) != 1:
        raise ValueError("the dataset is not a sweep along one of N, H, L (run `dmft-probe sweep`)")
    return dims[0]


def with_seed_dim(ds: xr.Dataset) -> xr.Dataset:
    return ds if "seed" in ds.dims else ds.expand_dims("seed")


def _per_size_seed(da: xr.DataArray, axis: str) -> tuple[np.ndarray, np.ndarray]:
    da = da.transpose(axis, "seed")
    return da[axis].values.astype(float), da.values.astype(float)


def attn_var_init(ds: xr.Dataset, axis: str):
    """Var over heads of A at step 0, mean over layers."""
    return _per_size_seed(ds.attn_var_heads.isel(step=0).mean("layer"), axis)


def last_step(ds: xr.Dataset, name: str) -> xr.DataArray:
    return ds[name].isel(step=-1)


def trained_mean(name: str, **sel):
    def f(ds: xr.Dataset, axis: str):
        da = last_step(ds, name)
        if sel:
            da = da.sel(**sel)
        dims = [d for d in da.dims if d not in (axis, "seed")]
        return _per_size_seed(da.mean(dims), axis)

    return f


def stream_growth_init(ds: xr.Dataset, axis: str):
    """|h^L|^2/d - |h^0|^2/d at step 0 (RMS^2 over all coordinates), with L the size of each run."""
    h = ds.h_rms.isel(step=0)
    sizes = ds[axis].values
    vals = []
    for v in sizes:
        hv = h.sel({axis: v})
        L = int(v) if axis == "L" else int(np.asarray(ds["L"]).max())
        vals.append((hv.sel(depth=L) ** 2 - hv.sel(depth=0) ** 2).transpose("seed").values)
    return sizes.astype(float), np.asarray(vals, dtype=float)


def attn_raw_init(ds: xr.Dataset, axis: str) -> dict[float, np.ndarray]:
    """Per size: A(0) over heads at probe point 0, pooled over layers and seeds. Heads, layers and seeds are
    independent draws of the same law (given its inputs, each layer's A has the variance-gamma law whatever the
    input, because LN fixes |u|^2 = d); points of one head share weights, so only one point is used."""
    raw = ds.attn_raw.isel(step=0, point=0)
    out = {}
    for v in ds[axis].values:
        x = raw.sel({axis: v}).values.ravel()
        out[float(v)] = x[np.isfinite(x)]
    return out


def kernel_mse_init(ds: xr.Dataset, axis: str, limit: xr.Dataset):
    """Mean square deviation of the step-0 pooled and spatial kernels from `limit` (the solver's H -> oo
    kernels, same dims), per size and seed, over all depths and entries."""
    vals = []
    for name in ("kernel_pooled", "kernel_spatial"):
        diff = ds[name].isel(step=0) - limit[name]
        vals.append((diff**2).mean([d for d in diff.dims if d not in (axis, "seed")]))
    return _per_size_seed((vals[0] + vals[1]) / 2, axis)


def attn_raw_init_clusters(ds: xr.Dataset, axis: str) -> dict[float, np.ndarray]:
    """Per size: A(0) at every recorded point, shaped (seed, layer, head, point), NaN where a layer or head does
    not exist at that size. A (seed, layer, head) is a cluster: its points share W_Q, W_K, so only clusters are
    independent draws (P3's interval resamples clusters, pooled across sizes)."""
    raw = ds.attn_raw.isel(step=0).transpose(axis, "seed", "layer", "head", "point")
    return {float(v): raw.sel({axis: v}).values.astype(float) for v in ds[axis].values}


QUANTITIES = {
    "attn_var_init": attn_var_init,
    "stream_growth_init": stream_growth_init,
    "attn_var_trained": trained_mean("attn_var_heads"),
    "dA_var_trained": trained_mean("dA_var_heads"),
    "attn_prob_var_trained": trained_mean("attn_prob_var_heads"),
    "qk_movement": trained_mean("weight_movement", weight=["q", "k"]),
    "feature_update": trained_mean("coord_update_rms", site=["attn_out", "mlp_out"]),
}

"""Kernel heat maps (the paper's Fig. 6b-c / 7b-c)."""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.image import AxesImage

from ._style import KERNEL_LABELS, _sweep_axis_of


def _colour_scale(arrays: list[xr.DataArray], vmax: float | None) -> tuple[str, float, float]:
    """(cmap, vmin, vmax) of kernels drawn together: diverging and centred at 0 when an entry is below -vmax/10,
    else sequential from min(0, smallest entry)."""
    finite = np.concatenate([a.values[np.isfinite(a.values)].ravel() for a in arrays] + [np.zeros(1)])
    top = float(np.abs(finite).max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0
    if finite.min() < -0.1 * top:
        return "RdBu_r", -top, top
    return "rocket", min(0.0, float(finite.min())), top


def kernel_grid(
    kernels: Mapping[str, xr.DataArray],
    *,
    title: str = "",
    vmax: float | None = None,
    ncols: int | None = None,
    share: str = "all",
) -> Figure:
    """Heat maps of 2-D kernels (the paper's Fig. 6b-c / 7b-c), one square panel per entry, on one colour scale.

    kernels: {panel title: 2-D DataArray (or array)}, e.g. {"N=4, step 0": K, ...}; the name of the first
    DataArray (kernel_pooled, kernel_spatial, kernel_last_token) or the dims (sample/token) give the paper's
    axis labels. vmax: top of the colour scale (default the largest |entry|); kernels with an entry below
    -vmax/10 are drawn on a diverging map centred at 0 (-vmax..vmax), others on a sequential map from
    min(0, smallest entry). ncols: panels per row (default up to 4). share: "all" (one colour scale and one
    colour bar for the figure, the default), "row" (one per row of panels) or "panel". Returns the Figure.
    """
    if not kernels:
        raise ValueError("kernel_grid needs at least one kernel")
    if share not in ("all", "row", "panel"):
        raise ValueError(f"share must be 'all', 'row' or 'panel', got {share!r}")
    arrays = {k: (v if isinstance(v, xr.DataArray) else xr.DataArray(np.asarray(v))) for k, v in kernels.items()}
    for k, v in arrays.items():
        if v.ndim != 2:
            raise ValueError(f"kernel {k!r} has {v.ndim} dims, expected 2")
    n = len(arrays)
    ncols = max(1, min(ncols or 4, n))
    nrows = math.ceil(n / ncols)
    extra_w = {"all": 1.0, "row": 1.0, "panel": 0.9 * ncols}[share]
    with sns.axes_style("white"):
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(2.7 * ncols + extra_w, 3.0 * nrows + (0.5 if title else 0.2)),
            squeeze=False,
            layout="constrained",
        )
    axes = axes.ravel()
    for extra in axes[n:]:
        extra.remove()
    names, values = list(arrays), list(arrays.values())
    first = values[0]
    kind = (
        first.name
        if first.name in KERNEL_LABELS
        else ("kernel_spatial" if str(first.dims[0]).startswith("token") else "kernel_pooled")
    )
    cbar_label, ylabel, xlabel = KERNEL_LABELS[kind]
    groups = {
        "all": [list(range(n))],
        "row": [list(range(r * ncols, min(n, (r + 1) * ncols))) for r in range(nrows)],
        "panel": [[i] for i in range(n)],
    }[share]
    for group in groups:
        cmap, lo, hi = _colour_scale([values[i] for i in group], vmax)
        im: AxesImage | None = None
        for i in group:
            ax = axes[i]
            im = ax.imshow(values[i].values, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_aspect("equal")
            ax.set_title(names[i], fontsize="medium")
            ax.set_ylabel(ylabel if i % ncols == 0 else "")
            ax.set_xlabel(xlabel if i + ncols >= n else "")
        assert im is not None  # every group has a panel
        cbar = fig.colorbar(
            im,
            ax=[axes[i] for i in group],
            shrink=0.9 if share == "all" and nrows > 1 else 1.0,
            aspect=20 * (nrows if share == "all" else 1) ** 0.5,
        )
        cbar.set_label(cbar_label)
    if title:
        fig.suptitle(title)
    return fig


def _finite_depths(da: xr.DataArray) -> xr.DataArray:
    """Drop depths that are all NaN (the padding of shallower runs in an L sweep)."""
    keep = xr.apply_ufunc(np.isfinite, da).any([d for d in da.dims if d != "depth"]).values
    return da.isel(depth=np.flatnonzero(keep)) if keep.any() else da  # all NaN: a run diverged at step 0


def kernel_panels(ds: xr.Dataset, kind: str = "kernel_pooled", depth: int = -1) -> Figure:
    """Kernels `kind` (kernel_pooled, kernel_spatial, kernel_last_token) at depth index `depth` (-1: after the
    last block of each run) at the first and last probe step, drawn with `kernel_grid`.

    Sweep dataset (dims axis, seed, step, ...): rows = first and last probe step, columns = the sizes along the
    axis, seed 0; the sizes of a row share one colour scale (the comparison across sizes), each row has its own
    (kernels grow many-fold in training, so one scale for both steps would leave the step-0 row blank). Single
    run: two columns, first and last step, each on its own scale. A run that diverged (`dmft.divergence`) has
    no kernel at the steps after it diverged: its panel is left blank and its title says "diverged at step t".
    Returns the Figure.
    """
    from ..divergence import diverged_points

    if kind not in ds:
        raise ValueError(f"the dataset has no {kind} (probes not recorded?)")
    axis = _sweep_axis_of(ds)
    steps = ds.step.values
    step_idx = [0] if len(steps) == 1 else [0, len(steps) - 1]
    da = ds[kind]
    seed0 = int(ds["seed"][0]) if "seed" in ds.dims else None
    diverged = {p.size: p.step for p in diverged_points(ds, axis) if seed0 is None or p.seed == seed0}
    if "seed" in da.dims:
        da = da.isel(seed=0)

    def note(size, i: int) -> str:
        """' (diverged at step t)' for a panel of a diverged run without a kernel at that step."""
        at = diverged.get(size)
        if size not in diverged or (at is not None and 0 <= at and int(steps[i]) < at):
            return ""
        return f" (diverged at step {at})" if at is not None and at >= 0 else " (diverged)"

    kernels = {}
    depths = set()
    if axis is None:
        k = _finite_depths(da).isel(depth=depth)
        depths.add(int(k.depth))
        for i in step_idx:
            kernels[f"step {int(steps[i])}" + note(None, i)] = k.isel(step=i).rename(kind)
        ncols, share = len(step_idx), "panel"
    else:
        sizes = ds[axis].values
        for i in step_idx:
            for v in sizes:
                k = _finite_depths(da.sel({axis: v})).isel(depth=depth)
                depths.add(int(k.depth))
                kernels[f"{axis}={int(v)}, step {int(steps[i])}" + note(float(v), i)] = k.isel(step=i).rename(kind)
        ncols, share = len(sizes), "row"
    if len(depths) == 1:
        where = rf"$\ell = {depths.pop()}$"
    else:
        where = r"$\ell = L$" if depth == -1 else f"depth index {depth}"
    name = {
        "kernel_pooled": r"pooled kernel $\Phi^\ell(x, x') = h \cdot h'/d$ (tokens averaged)",
        "kernel_spatial": r"token kernel $\Phi^\ell(s, s') = h_s \cdot h_{s'}/d$ of sample 0",
        "kernel_last_token": r"last-token kernel $\Phi^\ell(x, x')$",
    }.get(kind, kind)
    title = f"{name} at {where}" + ("" if axis is None else ", seed 0")
    return kernel_grid(kernels, title=title, ncols=ncols, share=share)


# ---------------------------------------------------------------------------------------- attention density

"""Writing figures: save_figure and plot_dataset (every figure that applies to a dataset)."""
from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._style import FORMATS, _is_trained, _subplots, _sweep_axis_of
from .densities import attention_density
from .exponents import verdict_figure
from .kernels import kernel_panels
from .training import _coord_over_steps, coord_check_panels, loss_curves


def save_figure(fig: Figure | Axes, path) -> Path:
    """Write `fig` (a Figure, or the Figure of an Axes) to `path` as PNG or PDF (by suffix), dpi 150, tight
    bounding box; create the folder; close the figure. Returns the Path."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"{path}: figure format must be png or pdf, got {path.suffix or 'no suffix'!r}")
    if isinstance(fig, Axes):
        fig = fig.figure
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, format=fmt, dpi=150, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def _run_attention_figure(ds: xr.Dataset) -> Figure:
    """One run: A at step 0 pooled over layers, fixed points and heads, against the law at the run's N."""
    x = ds.attn_raw.isel(step=0).values.ravel()
    N = int(ds["N"])
    ax = attention_density(x, N, float(ds.attrs["alpha_A"]),
                           title=rf"$A(0)$ over heads, layers and points, $N = {N}$, "
                                 rf"$\alpha_A = {float(ds.attrs['alpha_A']):g}$")
    return ax.figure


def _sweep_attention_figure(ds: xr.Dataset, axis: str) -> Figure:
    """Sweep: A(0) over heads at probe point 0 (pooled over layers and seeds) for the smallest and largest size."""
    from ..check import run_attrs
    from ..measure import attn_raw_init, with_seed_dim

    samples = attn_raw_init(with_seed_dim(ds), axis)
    sizes = sorted(samples)
    chosen = [sizes[0], sizes[-1]] if len(sizes) > 1 else sizes
    fig, axes = _subplots(len(chosen), len(chosen), panel=(4.8, 3.7))
    a = run_attrs(ds)
    for ax, s in zip(axes, chosen):
        N = int(s) if axis == "N" else int(a["N"])
        attention_density(samples[s], N, float(a["alpha_A"]), ax=ax,
                          title=rf"${axis} = {int(s)}$" + ("" if axis == "N" else rf", $N = {N}$")
                                + rf", $\alpha_A = {float(a['alpha_A']):g}$")
    fig.suptitle(r"$A(0)$ over heads at one point (layers and seeds pooled)", fontsize="medium")
    return fig


def _run_coord_figure(ds: xr.Dataset) -> Figure:
    """One run: coordinate sizes and weight movement against step (2 x 2 panels)."""
    names = [q for q in ("h_rms", "coord_update_rms", "io_update_rms", "weight_movement") if q in ds]
    fig, axes = _subplots(len(names), 2, panel=(5.0, 3.5))
    for q, ax in zip(names, axes):
        _coord_over_steps(ds, q, ax)
        ax.set_title(q, fontsize="medium")
    return fig


def plot_dataset(ds: xr.Dataset, out_dir, fmt: str = "png") -> list[Path]:
    """Write every figure that applies to a run or sweep dataset into `out_dir` (created); returns the paths.

    Single run: loss.<fmt>, kernels.<fmt> (pooled) and kernels_spatial.<fmt>, attention_density.<fmt> (attn_raw
    at step 0, pooled), coord_check.<fmt> (coordinate sizes over steps). Sweep: verdicts.<fmt>
    (`verdict_figure`), kernels.<fmt>, kernels_spatial.<fmt>, loss.<fmt> and coord_check.<fmt> when trained,
    attention_density.<fmt> (smallest and largest size at step 0). Figures that need probes are skipped when the
    dataset has none; a figure that cannot be drawn is skipped with a warning naming the reason.
    """
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"--format must be png or pdf, got {fmt!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    axis = _sweep_axis_of(ds)
    probes = "kernel_pooled" in ds
    jobs = []
    if axis is None:
        jobs.append(("loss", lambda: loss_curves(ds)))
        if probes:
            jobs += [("kernels", lambda: kernel_panels(ds, "kernel_pooled")),
                     ("kernels_spatial", lambda: kernel_panels(ds, "kernel_spatial")),
                     ("attention_density", lambda: _run_attention_figure(ds)),
                     ("coord_check", lambda: _run_coord_figure(ds))]
    else:
        trained = _is_trained(ds)
        if probes:
            jobs.append(("verdicts", lambda: verdict_figure(ds)))
            jobs += [("kernels", lambda: kernel_panels(ds, "kernel_pooled")),
                     ("kernels_spatial", lambda: kernel_panels(ds, "kernel_spatial"))]
        if trained:
            jobs.append(("loss", lambda: loss_curves(ds, axis=axis)))
            if probes:
                jobs.append(("coord_check", lambda: coord_check_panels(ds, axis=axis)))
        if probes:
            jobs.append(("attention_density", lambda: _sweep_attention_figure(ds, axis)))
    written = []
    for name, make in jobs:
        before = set(plt.get_fignums())
        try:
            fig = make()
        except ValueError as e:
            warnings.warn(f"{name}: not drawn ({e})", stacklevel=2)
            for num in set(plt.get_fignums()) - before:
                plt.close(num)
            continue
        written.append(save_figure(fig, out_dir / f"{name}.{fmt}"))
    return written

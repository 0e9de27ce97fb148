"""Shared style of the figures: labels in the paper's symbols, log2 axes, legends, subplot grids."""

from __future__ import annotations

import math
import weakref
from fractions import Fraction
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties

AXES = ("N", "H", "L")
FORMATS = ("png", "pdf")
STYLE = "ticks"
# y labels of the measured quantities (dmft.measure.QUANTITIES and the P4 kernel MSE), paper symbols
QUANTITY_LABELS = {
    "attn_var_init": r"$\mathrm{Var}_h[A(0)]$",
    "stream_growth_init": r"$|h^L|^2/d - |h^0|^2/d$",
    "attn_var_trained": r"$\mathrm{Var}_h[A(t)]$",
    "dA_var_trained": r"$\mathrm{Var}_h[A(t) - A(0)]$",
    "attn_prob_var_trained": r"$\mathrm{Var}_h[\mathrm{softmax}(A)]$",
    "qk_movement": r"$\|W_{Q,K}(t) - W_{Q,K}(0)\|_F\,/\,\|W_{Q,K}(0)\|_F$",
    "feature_update": r"$\mathrm{RMS}[f^\ell(t) - f^\ell(0)]$",
    "kernel_mse_init": r"$\mathrm{MSE}[\Phi(0) - \Phi_{H\to\infty}]$",
}

# y labels of the coordinate-size variables (coord_check_panels)
COORD_LABELS = {
    "h_rms": r"$\mathrm{RMS}[h^\ell]$",
    "coord_rms": r"$\mathrm{RMS}[f^\ell]$",
    "coord_update_rms": r"$\mathrm{RMS}[f^\ell(t) - f^\ell(0)]$",
    "io_rms": r"$\mathrm{RMS}[h^0],\ \mathrm{RMS}[f]$",
    "io_update_rms": r"$\mathrm{RMS}[f(t) - f(0)]$",
    "weight_movement": r"$\|W(t) - W(0)\|_F\,/\,\|W(0)\|_F$",
    "io_movement": r"$\|W(t) - W(0)\|_F\,/\,\|W(0)\|_F$",
    "attn_var_heads": r"$\mathrm{Var}_h[A]$",
    "dA_var_heads": r"$\mathrm{Var}_h[A(t) - A(0)]$",
    "attn_prob_var_heads": r"$\mathrm{Var}_h[\mathrm{softmax}(A)]$",
}

# kernels: (colour-bar label, y label, x label)
KERNEL_LABELS = {
    "kernel_pooled": (r"$\Phi^\ell(x, x')$", r"sample $x$", r"sample $x'$"),
    "kernel_spatial": (r"$\Phi^\ell(s, s')$", r"token $s$", r"token $s'$"),
    "kernel_last_token": (r"$\Phi^\ell(x, x')$", r"sample $x$", r"sample $x'$"),
}


# ------------------------------------------------------------------------------------------------ helpers
def _sym(axis: str) -> str:
    """The mathtext symbol of a size axis (N, H, L) or any other name."""
    return f"${axis}$" if axis in AXES else axis


def _exponent_tex(e: float) -> str:
    """-1 -> '-1', 0.5 -> '1/2', -0.25 -> '-1/4', others with 2 decimals, +-inf -> '\\infty' (for a mathtext
    superscript; an exponent of a huge alpha overflows to inf)."""
    if not math.isfinite(float(e)):
        return r"\mathrm{nan}" if math.isnan(float(e)) else ("-" if e < 0 else "") + r"\infty"
    fr = Fraction(float(e)).limit_denominator(8)
    if abs(float(fr) - e) < 1e-9:
        return str(fr.numerator) if fr.denominator == 1 else f"{fr.numerator}/{fr.denominator}"
    return f"{e:.2f}"


def _power_tex(axis: str, e: float) -> str:
    return f"${axis}^{{{_exponent_tex(e)}}}$"


def _new_axes(ax: Axes | None, figsize=(5.0, 3.8)) -> Axes:
    if ax is not None:
        return ax
    with sns.axes_style(STYLE):
        _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _subplots(n: int, ncols: int, panel=(4.4, 3.5), **kw) -> tuple[Figure, np.ndarray]:
    """n panels on a grid of `ncols` columns; unused panels are removed. Returns (fig, flat array of axes)."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    with sns.axes_style(STYLE):
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False, layout="constrained", **kw
        )
    axes = axes.ravel()
    for extra in axes[n:]:
        extra.remove()
    return fig, axes[:n]


def _log2(ax: Axes, x: bool = True, y: bool = True) -> None:
    if x:
        ax.set_xscale("log", base=2)
    if y:
        ax.set_yscale("log", base=2)


def _tidy_log_y(ax: Axes) -> None:
    """A log y axis spanning less than three octaves gets plain-number ticks at 1, 2, 5 x 10^k (and finer when
    that leaves fewer than three), instead of one or two powers of two."""
    lo, hi = ax.get_ylim()
    if not (lo > 0 and hi > lo) or hi / lo >= 8:
        if isinstance(ax.yaxis.get_major_locator(), mticker.FixedLocator):  # set by an earlier call: undo
            ax.set_yscale("log", base=2)
        return
    for subs in ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), tuple(np.arange(1.0, 10.0, 0.5))):
        ticks = [
            m * 10.0**k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1) for m in subs
        ]
        ticks = [t for t in ticks if lo <= t <= hi]
        if len(ticks) >= 3:
            break
    ax.yaxis.set_major_locator(mticker.FixedLocator(ticks))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    ax.yaxis.set_minor_locator(mticker.NullLocator())
    ax.set_ylim(lo, hi)


def _size_ticks(ax: Axes, sizes) -> None:
    """Put x ticks exactly at the sizes (plain integers) on a log2 axis."""
    sizes = np.unique(np.asarray(sizes, dtype=float))
    ax.set_xticks(sizes)
    ax.set_xticklabels([f"{s:g}" for s in sizes])
    ax.xaxis.set_minor_locator(plt.NullLocator())


def _sweep_axis_of(ds: xr.Dataset) -> str | None:
    """The swept axis (N, H or L) of a sweep dataset, None for a single run."""
    if not any(a in ds.dims for a in AXES):
        return None
    from ..measure import sweep_axis

    return sweep_axis(ds)


def _resolve_axis(ds: xr.Dataset, axis: str | None) -> str | None:
    if axis is None:
        return _sweep_axis_of(ds)
    if axis not in ds.dims:
        raise ValueError(f"the dataset has no dimension {axis!r} (dims: {', '.join(map(str, ds.dims))})")
    return axis


def _is_trained(ds: xr.Dataset) -> bool:
    return ds.sizes.get("step", 1) > 1 and not int(ds.attrs.get("init_only", 0))


_AXES_STATE: weakref.WeakKeyDictionary[Axes, dict[str, Any]] = weakref.WeakKeyDictionary()


def _axes_state(ax: Axes) -> dict[str, Any]:
    """What the plot functions remember about `ax` between calls on it (how many rates are drawn on it, its y range,
    its quantities): a dict per Axes, dropped with the Axes."""
    return _AXES_STATE.setdefault(ax, {})


def _figure_of(ax: Axes) -> Figure:
    """The top-level Figure that `ax` is drawn in (`ax.figure` may be a SubFigure)."""
    fig = ax.figure
    if not isinstance(fig, Figure):  # a SubFigure: the Figure it is part of
        fig = fig.figure
    assert isinstance(fig, Figure), "the Axes belongs to no figure"
    return fig


def _legend(ax: Axes, outside: bool = False, below: bool = False, **kw) -> None:
    """A legend with a translucent frame; outside=True puts it to the right of the axes (many entries),
    below=True under the x label (never over the data)."""
    kw.setdefault("fontsize", "small")
    if outside:
        kw.update(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif below:  # clear the tick labels and the x label: ~34 points, in units of the legend's font size
        size = FontProperties(size=kw["fontsize"]).get_size_in_points()
        kw.update(loc="upper center", bbox_to_anchor=(0.5, 0.0), borderaxespad=34.0 / size, frameon=False)
    kw.setdefault("framealpha", 0.85)
    kw.setdefault("loc", "best")
    ax.legend(**kw)


# -------------------------------------------------------------------------------------------- exponent_plot

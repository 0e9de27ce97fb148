"""Figures of run and sweep datasets, in the paper's symbols (Bordelon, Chaudhry & Pehlevan, NeurIPS 2024).

Every public function draws with matplotlib/seaborn and returns the Figure or Axes it drew; nothing is shown
and no backend is chosen here (a headless machine falls back to Agg; the CLI forces it). Functions that take
`ax=None` draw on a new figure when no axes are given. Nothing here builds a model: the inputs are datasets
written by `probes.dataset` (one run) or `probes.sweep` (a grid along N, H or L and seeds) and the theory side
of `dmft` (fits, verdicts, the law of A).

    exponent_plot        log2-log2 scatter of a quantity vs size, with the fitted slope and predicted exponents
    verdict_figure       one exponent_plot per slope verdict of `dmft.check.check`
    kernel_grid          heat maps of kernels on one colour scale (the paper's Fig. 6b-c / 7b-c)
    kernel_panels        kernels at the first and last probe step, per size (sweep) or for one run
    attention_density    histogram of A over heads against the variance-gamma law and its Gaussian limit
    loss_curves          held-out loss vs step, one line per size
    lr_transfer          final loss vs eta0, one line per size (muP learning-rate transfer)
    coord_check_panels   muP coordinate check: coordinate sizes vs size, one panel per probe step
    save_figure          write PNG/PDF and close
    plot_dataset         every figure that applies to a dataset, written to a folder
"""
from __future__ import annotations

import itertools
import math
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Mapping

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
from matplotlib.font_manager import FontProperties
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

AXES = ("N", "H", "L")
FORMATS = ("png", "pdf")
STYLE = "ticks"
# Monte Carlo heads of the H -> oo kernel solver behind P4 panels (as `dmft-probe check`'s default).
P4_MC_HEADS = 8192


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
    "block_rms": r"$\mathrm{RMS}[f^\ell]$",
    "block_update_rms": r"$\mathrm{RMS}[f^\ell(t) - f^\ell(0)]$",
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
    """-1 -> '-1', 0.5 -> '1/2', -0.25 -> '-1/4', others with 2 decimals (for a mathtext superscript)."""
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
        fig, axes = plt.subplots(nrows, ncols, figsize=(panel[0] * ncols, panel[1] * nrows), squeeze=False,
                                 layout="constrained", **kw)
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
        if isinstance(ax.yaxis.get_major_locator(), mticker.FixedLocator):   # set by an earlier call: undo
            ax.set_yscale("log", base=2)
        return
    for subs in ((1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0), tuple(np.arange(1.0, 10.0, 0.5))):
        ticks = [m * 10.0 ** k for k in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for m in subs]
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
    from .measure import sweep_axis

    return sweep_axis(ds)


def _resolve_axis(ds: xr.Dataset, axis: str | None) -> str | None:
    if axis is None:
        return _sweep_axis_of(ds)
    if axis not in ds.dims:
        raise ValueError(f"the dataset has no dimension {axis!r} (dims: {', '.join(map(str, ds.dims))})")
    return axis


def _is_trained(ds: xr.Dataset) -> bool:
    return ds.sizes.get("step", 1) > 1 and not int(ds.attrs.get("init_only", 0))


def _legend(ax: Axes, outside: bool = False, below: bool = False, **kw) -> None:
    """A legend with a translucent frame; outside=True puts it to the right of the axes (many entries),
    below=True under the x label (never over the data)."""
    kw.setdefault("fontsize", "small")
    if outside:
        kw.update(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    elif below:   # clear the tick labels and the x label: ~34 points, in units of the legend's font size
        size = FontProperties(size=kw["fontsize"]).get_size_in_points()
        kw.update(loc="upper center", bbox_to_anchor=(0.5, 0.0), borderaxespad=34.0 / size, frameon=False)
    kw.setdefault("framealpha", 0.85)
    kw.setdefault("loc", "best")
    ax.legend(**kw)


# -------------------------------------------------------------------------------------------- exponent_plot
def exponent_plot(sizes, values, fit=None, predicted=None, *, axis: str = "N", ylabel: str = "", label=None,
                  ax: Axes | None = None) -> Axes:
    """Log-log (base 2) plot of a measured quantity against size, with its fitted and predicted exponents.

    sizes: (n_sizes,); values: (n_sizes, n_seeds) or (n_sizes,) (non-positive and NaN values are not drawn).
    Per-seed values are drawn light, seed means dark. fit: a `dmft.fit.SlopeFit` (e.g. `loglog_fit(sizes,
    values)`): its line c * size^slope and the bootstrap band (the lines of slope fit.lo and fit.hi through the
    point (mean log size, mean log value) the least-squares line passes through), with "fit: slope -0.98
    [-1.02, -0.95]" in the legend; None draws no fit. predicted: an exponent, or {name: exponent} for several
    hypotheses; each is a dashed line of that slope anchored at the first seed mean, labelled "predicted
    N^-1 (name)". axis: the size's symbol (N, H, L). label names the data in the legend (default "seed
    mean"). Calling it again on the same `ax` draws the next data in the next colour. Returns the Axes.
    """
    ax = _new_axes(ax)
    sizes = np.asarray(sizes, dtype=float).ravel()
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] != len(sizes):
        raise ValueError(f"values has {values.shape[0]} rows for {len(sizes)} sizes")
    k = getattr(ax, "_dmft_exponent_calls", 0)
    ax._dmft_exponent_calls = k + 1
    hue = (0, 2, 4, 5, 6, 9)[k % 6]                 # data hues; orange/red are kept for the predictions
    dark = sns.color_palette("dark")[hue]
    light = sns.color_palette("pastel")[hue]
    cb = sns.color_palette("colorblind")
    other = [cb[3], cb[4], cb[1], cb[7]]

    good = np.isfinite(values) & (values > 0)
    means = np.array([row[g].mean() if g.any() else np.nan for row, g in zip(values, good)])
    if values.shape[1] > 1:
        xs = np.repeat(sizes, values.shape[1]).reshape(values.shape)
        ax.scatter(xs[good], values[good], s=18, color=light, edgecolor="none", alpha=0.9, zorder=2,
                   label=f"{label}, per seed" if label else "per seed")
    ok = np.isfinite(means)
    ax.plot(sizes[ok], means[ok], "o", ms=6.5, color=dark, zorder=4, label=label or "seed mean")

    xs = np.geomspace(sizes.min(), sizes.max(), 64) if len(sizes) else np.array([])
    if fit is not None and ok.sum() >= 2:
        ax.plot(xs, fit.constant * xs ** fit.slope, "-", color=dark, lw=1.6, zorder=3,
                label=f"fit: slope {fit.slope:+.2f} [{fit.lo:+.2f}, {fit.hi:+.2f}]")
        lx, ly = np.log(sizes[ok]).mean(), np.log(means[ok]).mean()
        band = np.exp(ly + np.outer([fit.lo, fit.hi], np.log(xs) - lx))
        ax.fill_between(xs, band.min(axis=0), band.max(axis=0), color=dark, alpha=0.15, lw=0, zorder=1)
    if predicted is not None and ok.any():
        hyps = predicted if isinstance(predicted, Mapping) else {"": float(predicted)}
        i0 = int(np.argmax(ok))
        x0, y0 = sizes[i0], means[i0]
        styles = ["--", (0, (5, 2, 1, 2)), ":", (0, (3, 1, 1, 1, 1, 1))]
        for j, (name, e) in enumerate(hyps.items()):
            text = f"predicted {_power_tex(axis, e)}" + (f" ({name})" if name else "")
            colour = other[j % len(other)] if k == 0 else dark    # later data: predictions in their colour
            ax.plot(xs, y0 * (xs / x0) ** e, linestyle=styles[j % len(styles)], color=colour,
                    lw=1.5, alpha=1.0 if k == 0 else 0.75, zorder=3, label=text)
    _log2(ax)
    _tidy_log_y(ax)
    if len(sizes):
        _size_ticks(ax, sizes)
    ax.set_xlabel(_sym(axis))
    if ylabel:
        ax.set_ylabel(ylabel)
    _legend(ax, below=True)
    return ax


# ------------------------------------------------------------------------------------------- verdict_figure
def _short_hypothesis(name: str) -> str:
    """'CLT N^(1-2alpha_A)' -> 'CLT' (the exponent is already in the label)."""
    head, _, rest = name.partition(" ")
    return head if "^" in rest else name


def _predicted_for(verdict, preds) -> float | dict | None:
    for p in preds:
        if p.key == verdict.key and p.quantity == verdict.quantity:
            if p.kind == "hypotheses":
                return {_short_hypothesis(h): e for h, e in p.hypotheses.items()}
            if p.kind == "slope":
                return p.exponent
            return None
    try:
        return float(verdict.predicted)
    except (TypeError, ValueError):
        return None


def verdict_figure(ds: xr.Dataset, verdicts=None) -> Figure:
    """One `exponent_plot` panel per slope verdict of `dmft.check.check(ds)` for a sweep dataset.

    verdicts: the list `check(ds)` returned (computed here when None). Each panel shows the verdict's quantity
    (`dmft.measure.QUANTITIES`; for P4 the mean-square deviation of the initial kernels from the H -> oo solver,
    `measure.kernel_mse_init` against `check.kernel_limit`), its fit with the 95% seed-bootstrap band, and the
    predicted exponent(s); the title reads "P1 attn_var_init: consistent" (red when not consistent). P4 panels
    are drawn, not skipped: with verdicts=None the check's own H -> oo solver result is reused; with verdicts
    given the solver runs once here with `P4_MC_HEADS` heads (seeded, so the limit the check used at its
    default). That is the slow part: about 1.5 s per layer at 6 probe samples and 16 tokens, growing as
    samples^2 (tens of seconds per layer for the default 32-sample probe batch on 2 CPU cores). The density
    verdict (P3) has no slope: its result is written in the figure's title (see `attention_density`).
    """
    from . import measure
    from .check import check, kernel_limit, run_attrs
    from .fit import loglog_fit
    from .predictions import predictions

    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    a = run_attrs(ds)
    cache: dict = {}
    if axis == "H":                    # P4 applies: one solver run shared by the check and the panel
        cache["limit"] = kernel_limit(ds, a, P4_MC_HEADS)
    if verdicts is None:
        verdicts = check(ds, n_heads_mc=P4_MC_HEADS, limit=cache.get("limit"))
    preds = predictions(a["alpha_A"], a["alpha_L"], a["standard"], axis, a["trained"])
    slopes = [v for v in verdicts if v.quantity in measure.QUANTITIES or v.quantity == "kernel_mse_init"]
    others = [v for v in verdicts if v not in slopes]
    fig, axes = _subplots(max(len(slopes), 1), 3 if len(slopes) != 4 else 2, panel=(4.4, 4.5))
    for v, ax in zip(slopes, axes):
        if v.quantity == "kernel_mse_init":
            if "limit" not in cache:
                cache["limit"] = kernel_limit(ds, a, P4_MC_HEADS)
            sizes, values = measure.kernel_mse_init(ds, axis, cache["limit"])
        else:
            sizes, values = measure.QUANTITIES[v.quantity](ds, axis)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                fit = loglog_fit(sizes, values)
            fit = fit if np.isfinite([fit.slope, fit.lo, fit.hi]).all() else None
        except ValueError:            # fewer than 3 usable sizes: the points alone
            fit = None
        exponent_plot(sizes, values, fit, _predicted_for(v, preds), axis=axis,
                      ylabel=QUANTITY_LABELS.get(v.quantity, v.quantity), ax=ax)
        if fit is None:
            ax.text(0.03, 0.04, "no slope: fewer than 3 sizes with finite values", transform=ax.transAxes,
                    fontsize="small", color="firebrick")
        word = "consistent" if v.consistent else "NOT consistent"
        if v.supported and v.supported != "neither":
            word += f" ({_short_hypothesis(v.supported)})"
        ax.set_title(f"{v.key} {v.quantity}: {word}", fontsize="medium",
                     color="black" if v.consistent else "firebrick")
    if not slopes:
        axes[0].text(0.5, 0.5, "no slope predictions apply to this sweep", ha="center", va="center",
                     transform=axes[0].transAxes)
        axes[0].set_axis_off()
    title = (f"{a['name']} ($\\alpha_A$ = {a['alpha_A']:g}, $\\alpha_L$ = {a['alpha_L']:g}), "
             f"sweep over {_sym(axis)}, {'trained' if a['trained'] else 'at initialisation'}")
    for v in others:
        title += f"\n{v.key} {v.quantity}: {'consistent' if v.consistent else 'NOT consistent'} ({v.measured})"
    fig.suptitle(title, fontsize="medium")
    return fig


# ---------------------------------------------------------------------------------------------- kernels
def _colour_scale(arrays: list[xr.DataArray], vmax: float | None) -> tuple[str, float, float]:
    """(cmap, vmin, vmax) of kernels drawn together: diverging and centred at 0 when an entry is below -vmax/10,
    else sequential from min(0, smallest entry)."""
    finite = np.concatenate([a.values[np.isfinite(a.values)].ravel() for a in arrays] + [np.zeros(1)])
    top = float(np.abs(finite).max()) if vmax is None else float(vmax)
    top = top if top > 0 else 1.0
    if finite.min() < -0.1 * top:
        return "RdBu_r", -top, top
    return "rocket", min(0.0, float(finite.min())), top


def kernel_grid(kernels: Mapping[str, xr.DataArray], *, title: str = "", vmax: float | None = None,
                ncols: int | None = None, share: str = "all") -> Figure:
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
        fig, axes = plt.subplots(nrows, ncols, figsize=(2.7 * ncols + extra_w, 3.0 * nrows + (0.5 if title else 0.2)),
                                 squeeze=False, layout="constrained")
    axes = axes.ravel()
    for extra in axes[n:]:
        extra.remove()
    names, values = list(arrays), list(arrays.values())
    first = values[0]
    kind = first.name if first.name in KERNEL_LABELS else (
        "kernel_spatial" if str(first.dims[0]).startswith("token") else "kernel_pooled")
    cbar_label, ylabel, xlabel = KERNEL_LABELS[kind]
    groups = {"all": [list(range(n))], "row": [list(range(r * ncols, min(n, (r + 1) * ncols))) for r in range(nrows)],
              "panel": [[i] for i in range(n)]}[share]
    for group in groups:
        cmap, lo, hi = _colour_scale([values[i] for i in group], vmax)
        im = None
        for i in group:
            ax = axes[i]
            im = ax.imshow(values[i].values, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_aspect("equal")
            ax.set_title(names[i], fontsize="medium")
            ax.set_ylabel(ylabel if i % ncols == 0 else "")
            ax.set_xlabel(xlabel if i + ncols >= n else "")
        cbar = fig.colorbar(im, ax=[axes[i] for i in group], shrink=0.9 if share == "all" and nrows > 1 else 1.0,
                            aspect=20 * (nrows if share == "all" else 1) ** 0.5)
        cbar.set_label(cbar_label)
    if title:
        fig.suptitle(title)
    return fig


def _finite_depths(da: xr.DataArray) -> xr.DataArray:
    """Drop depths that are all NaN (the padding of shallower runs in an L sweep)."""
    keep = np.isfinite(da).any([d for d in da.dims if d != "depth"]).values
    return da.isel(depth=np.flatnonzero(keep))


def kernel_panels(ds: xr.Dataset, kind: str = "kernel_pooled", depth: int = -1) -> Figure:
    """Kernels `kind` (kernel_pooled, kernel_spatial, kernel_last_token) at depth index `depth` (-1: after the
    last block of each run) at the first and last probe step, drawn with `kernel_grid`.

    Sweep dataset (dims axis, seed, step, ...): rows = first and last probe step, columns = the sizes along the
    axis, seed 0; the sizes of a row share one colour scale (the comparison across sizes), each row has its own
    (kernels grow many-fold in training, so one scale for both steps would leave the step-0 row blank). Single
    run: two columns, first and last step, each on its own scale. Returns the Figure.
    """
    if kind not in ds:
        raise ValueError(f"the dataset has no {kind} (probes not recorded?)")
    axis = _sweep_axis_of(ds)
    steps = ds.step.values
    step_idx = [0] if len(steps) == 1 else [0, len(steps) - 1]
    da = ds[kind]
    if "seed" in da.dims:
        da = da.isel(seed=0)
    kernels = {}
    depths = set()
    if axis is None:
        k = _finite_depths(da).isel(depth=depth)
        depths.add(int(k.depth))
        for i in step_idx:
            kernels[f"step {int(steps[i])}"] = k.isel(step=i).rename(kind)
        ncols, share = len(step_idx), "panel"
    else:
        sizes = ds[axis].values
        for i in step_idx:
            for v in sizes:
                k = _finite_depths(da.sel({axis: v})).isel(depth=depth)
                depths.add(int(k.depth))
                kernels[f"{axis}={int(v)}, step {int(steps[i])}"] = k.isel(step=i).rename(kind)
        ncols, share = len(sizes), "row"
    if len(depths) == 1:
        where = rf"$\ell = {depths.pop()}$"
    else:
        where = r"$\ell = L$" if depth == -1 else f"depth index {depth}"
    name = {"kernel_pooled": r"pooled kernel $\Phi^\ell(x, x') = h \cdot h'/d$ (tokens averaged)",
            "kernel_spatial": r"token kernel $\Phi^\ell(s, s') = h_s \cdot h_{s'}/d$ of sample 0",
            "kernel_last_token": r"last-token kernel $\Phi^\ell(x, x')$"}.get(kind, kind)
    title = f"{name} at {where}" + ("" if axis is None else ", seed 0")
    return kernel_grid(kernels, title=title, ncols=ncols, share=share)


# ---------------------------------------------------------------------------------------- attention density
def attention_density(samples, N: int, alpha_A: float, *, ax: Axes | None = None, title: str | None = None) -> Axes:
    """Histogram (density) of attention variables A over heads against the exact law at init.

    samples: values of A = N^-alpha_A q.k (NaN dropped), e.g. `dmft.measure.attn_raw_init(ds, "N")[N]`.
    Draws the variance-gamma density of `dmft.solvers.attention_law(N, alpha_A)` and the Gaussian of the same
    variance (`gaussian_limit`, the N -> oo law), with the KS p-value of the samples against the variance-gamma
    law in the legend. Returns the Axes.
    """
    from .solvers import attention_law, gaussian_limit

    ax = _new_axes(ax)
    x = np.asarray(samples, dtype=float).ravel()
    x = x[np.isfinite(x)]
    law, gauss = attention_law(int(N), float(alpha_A)), gaussian_limit(int(N), float(alpha_A))
    std = law.std()
    lim = 1.05 * max(4 * std, float(np.abs(x).max()) if x.size else 0.0)
    heights = np.zeros(1)
    if x.size:
        bins = np.histogram_bin_edges(x, bins="auto")
        if len(bins) < 7 or len(bins) > 61:
            bins = np.linspace(x.min(), x.max(), int(np.clip(round(np.sqrt(x.size)), 6, 60)) + 1)
        heights, _, _ = ax.hist(x, bins=bins, density=True, color=sns.color_palette("pastel")[0],
                                edgecolor="white", lw=0.5, label=f"measured, {x.size} values")
    grid = np.linspace(-lim, lim, 400)                       # even count: 0 is not on the grid (N = 1 pole)
    vg = law.pdf(grid)
    pval = law.ks_test(x)[1] if x.size else float("nan")
    dark = sns.color_palette("dark")
    ax.plot(grid, vg, color=dark[0], lw=1.8, label=f"variance-gamma (KS p = {pval:.2g})")
    ax.plot(grid, gauss.pdf(grid), "--", color=dark[3], lw=1.4, label="Gaussian, same variance")
    if 0 < x.size < 50:               # few values: show each one as a rug tick too
        ax.plot(x, np.zeros_like(x), "|", ms=12, mew=1.2, color=dark[0], alpha=0.7, clip_on=False)
    top = max(float(np.max(heights)), float(gauss.pdf(0)), float(np.nanmax(vg[np.isfinite(vg)])) if N > 1 else 0.0)
    ax.set_ylim(0, 1.3 * top)
    ax.set_xlim(-lim, lim)
    ax.set_xlabel(r"$A = N^{-\alpha_A}\, q \cdot k$")
    ax.set_ylabel("density")
    ax.set_title(title if title is not None else rf"$N = {int(N)}$, $\alpha_A = {alpha_A:g}$", fontsize="medium")
    _legend(ax, loc="upper right", fontsize="x-small")
    return ax


# ------------------------------------------------------------------------------------------------- losses
def loss_curves(ds: xr.Dataset, *, axis: str | None = None) -> Figure:
    """Held-out loss against step. Sweep (axis given or found): one line per size, the seed mean with a band
    from the lowest to the highest seed, palette "rocket" (dark = small). Single run: the held-out loss, and
    the training loss on each incoming batch as a light line. Returns the Figure."""
    axis = _resolve_axis(ds, axis)
    ax = _new_axes(None, figsize=(5.6, 3.8))
    loss = ds.heldout_loss
    steps = ds.step.values
    if axis is None:
        if "train_loss" in ds and ds.sizes.get("train_step", 0):
            ax.plot(ds.train_step.values + 1, ds.train_loss.values, color=sns.color_palette("pastel")[0], lw=0.8,
                    label="training batch", zorder=1)
        ax.plot(steps, loss.values, "o-", ms=3, color=sns.color_palette("dark")[0], lw=1.6, label="held-out",
                zorder=2)
        sizes = {a: int(ds[a]) for a in AXES if a in ds.coords}
        ax.set_title(", ".join(f"${k} = {v}$" for k, v in sizes.items()), fontsize="medium")
        _legend(ax, loc="upper right")
    else:
        sizes = ds[axis].values
        colors = sns.color_palette("rocket", len(sizes) + 1)[: len(sizes)]   # skip the near-white end
        for v, c in zip(sizes, colors):
            lv = loss.sel({axis: v})
            if "seed" in lv.dims:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, lo, hi = lv.mean("seed").values, lv.min("seed").values, lv.max("seed").values
                if lv.sizes["seed"] > 1:
                    ax.fill_between(steps, lo, hi, color=c, alpha=0.2, lw=0)
            else:
                mean = lv.values
            ax.plot(steps, mean, "-", color=c, lw=1.6, label=f"{int(v)}")
        n_seeds = ds.sizes.get("seed", 1)
        ax.set_title(f"seed mean" + (f", band: min-max over {n_seeds} seeds" if n_seeds > 1 else ""),
                     fontsize="medium")
        _legend(ax, title=_sym(axis), loc="upper right", ncols=2 if len(sizes) > 5 else 1)
    ax.set_xlabel("step $t$")
    ax.set_ylabel(r"held-out loss $\mathcal{L}$ (nats)")
    return ax.figure


def lr_transfer(losses: xr.DataArray, *, axis: str = "N") -> Axes:
    """muP learning-rate transfer: final loss against eta0 (log x), one line per size (palette "rocket").

    losses: dims (eta0, axis) and optionally seed (averaged; a seed that diverged makes the point diverged) and
    step (the last is used). The best eta0 of each size is marked with a star; diverged (NaN/inf) points are
    skipped. Returns the Axes."""
    if "eta0" not in losses.dims or axis not in losses.dims:
        raise ValueError(f"lr_transfer needs dims (eta0, {axis}), got {losses.dims}")
    da = losses
    if "step" in da.dims:
        da = da.isel(step=-1)
    if "seed" in da.dims:
        da = da.mean("seed")             # NaN/inf in any seed propagates: the point counts as diverged
    extra = [d for d in da.dims if d not in ("eta0", axis)]
    if extra:
        raise ValueError(f"lr_transfer: unexpected dims {extra} (select or average them first)")
    da = da.transpose(axis, "eta0")
    eta = da.eta0.values.astype(float)
    ax = _new_axes(None, figsize=(5.4, 3.8))
    sizes = da[axis].values
    colors = sns.color_palette("rocket", len(sizes) + 1)[: len(sizes)]
    for v, c, row in zip(sizes, colors, da.values.astype(float)):
        ok = np.isfinite(row)
        if not ok.any():
            continue
        order = np.argsort(eta[ok])
        ax.plot(eta[ok][order], row[ok][order], "o-", ms=4, color=c, lw=1.5, label=f"{v:g}")
        best = np.flatnonzero(ok)[np.argmin(row[ok])]
        ax.plot(eta[best], row[best], "*", ms=15, color=c, markeredgecolor="black", markeredgewidth=0.6, zorder=5)
    ax.plot([], [], "*", ms=11, color="grey", markeredgecolor="black", markeredgewidth=0.6, label=r"best $\eta_0$")
    ax.set_xscale("log")
    etas = np.asarray(losses["eta0"].values, dtype=float)
    ax.xaxis.set_major_locator(mticker.FixedLocator(etas))          # one tick per grid value
    ax.xaxis.set_major_formatter(mticker.FixedFormatter([f"{e:g}" for e in etas]))
    ax.xaxis.set_minor_locator(mticker.NullLocator())
    ax.set_xlabel(r"base learning rate $\eta_0$")
    ax.set_ylabel(r"final loss $\mathcal{L}$")
    _legend(ax, title=_sym(axis))
    return ax


# --------------------------------------------------------------------------------------------- coord check
def _palette(n: int) -> list:
    """n distinct colours: seaborn's colour-blind palette up to 10, evenly spaced husl hues beyond."""
    return sns.color_palette("colorblind" if n <= 10 else "husl", n)


def _hue_series(da: xr.DataArray, keep: tuple[str, ...]) -> tuple[list[tuple[str, xr.DataArray]], str]:
    """Split `da` over every dim not in `keep` into (label, sub-array) pairs ('layer 0, attn_out'), all-NaN ones
    dropped. With more than 12 combinations the first such dim (layer/depth) is averaged out; the second value
    then says so ('mean over layer'), else it is ''."""
    rest = [d for d in da.dims if d not in keep]
    n = int(np.prod([da.sizes[d] for d in rest])) if rest else 1
    note = ""
    if n > 12 and rest:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            da = da.mean(rest[0])
        note = f"mean over {rest[0]}"
        rest = rest[1:]
    out = []
    for combo in itertools.product(*[da[d].values for d in rest]):
        sub = da.sel(dict(zip(rest, combo))) if rest else da
        label = ", ".join(f"{d} {c}" if d in ("layer", "depth") else f"{c}" for d, c in zip(rest, combo))
        if not np.isfinite(sub.values).any():
            continue
        out.append((label or str(da.name or "value"), sub))
    return out, note


def _coord_over_steps(ds: xr.Dataset, quantity: str, ax: Axes) -> Axes:
    """One run: `quantity` against step, one line per layer/site."""
    da = ds[quantity]
    series, note = _hue_series(da, ("step",))
    colors = _palette(len(series))
    steps = ds.step.values
    for (label, sub), c in zip(series, colors):
        y = sub.values.astype(float)
        ok = np.isfinite(y) & (y > 0)
        ax.plot(steps[ok], y[ok], "o-", ms=3, color=c, lw=1.4, label=label)
    ax.set_yscale("log", base=2)
    _tidy_log_y(ax)
    ax.set_xlabel("step $t$")
    ax.set_ylabel(COORD_LABELS.get(quantity, quantity))
    _legend(ax, outside=len(series) > 6, fontsize="x-small", title=note or None, title_fontsize="x-small")
    return ax


def coord_check_panels(ds: xr.Dataset, *, axis: str | None = None, quantity: str = "block_update_rms") -> Figure:
    """muP-style coordinate check: `quantity` (block_update_rms, block_rms, h_rms, weight_movement, ...) against
    size (log2 x, log2 y), one panel per probe step (at most 4, spread over the steps that have positive
    values; step 0 of an update quantity is all zero and is skipped), one line per layer/site (seed mean,
    per-seed points light), with the log-log slope of each line in the legend. Under muP the lines are flat.
    A single run (no size dimension) gets one panel of the quantity against step instead. Returns the Figure."""
    if quantity not in ds:
        raise ValueError(f"the dataset has no {quantity} (probes not recorded?)")
    axis = _resolve_axis(ds, axis)
    if axis is None:
        fig, axes = _subplots(1, 1, panel=(5.6, 3.8))
        _coord_over_steps(ds, quantity, axes[0])
        return fig
    da = ds[quantity]
    if "seed" not in da.dims:
        da = da.expand_dims("seed")
    positive = ((da > 0) & np.isfinite(da)).any([d for d in da.dims if d != "step"]).values
    valid = np.flatnonzero(positive)
    if valid.size == 0:
        raise ValueError(f"{quantity} has no positive values to draw on a log scale")
    pick = valid[np.unique(np.round(np.linspace(0, valid.size - 1, min(4, valid.size))).astype(int))]
    fig, axes = _subplots(len(pick), len(pick), panel=(3.9, 3.6), sharey=True)
    sizes = ds[axis].values.astype(float)
    for ax, i in zip(axes, pick):
        step_da = da.isel(step=i)
        series, note = _hue_series(step_da, (axis, "seed"))
        colors = _palette(len(series))
        for (label, sub), c in zip(series, colors):
            vals = sub.transpose(axis, "seed").values.astype(float)
            good = np.isfinite(vals) & (vals > 0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.array([r[g].mean() if g.any() else np.nan for r, g in zip(vals, good)])
            ok = np.isfinite(mean)
            if vals.shape[1] > 1:
                xs = np.repeat(sizes, vals.shape[1]).reshape(vals.shape)
                ax.scatter(xs[good], vals[good], s=10, color=c, alpha=0.3, edgecolor="none")
            slope = np.polyfit(np.log(sizes[ok]), np.log(mean[ok]), 1)[0] if ok.sum() >= 2 else np.nan
            ax.plot(sizes[ok], mean[ok], "o-", ms=4, color=c, lw=1.5, label=f"{label} (slope {slope:+.2f})")
        _log2(ax)
        _size_ticks(ax, sizes)
        ax.set_xlabel(_sym(axis))
        ax.set_title(f"step $t = {int(ds.step.values[i])}$", fontsize="medium")
    _tidy_log_y(axes[0])
    for ax in axes:
        _legend(ax, below=True, fontsize="x-small")
    axes[0].set_ylabel(COORD_LABELS.get(quantity, quantity))
    flat = quantity in ("h_rms", "block_rms", "block_update_rms") and axis in ("N", "H")
    fig.suptitle(f"coordinate check: {quantity} vs {_sym(axis)}" + (" (muP: flat)" if flat else "")
                 + f", seed mean{', ' + note if note else ''}", fontsize="medium")
    return fig


# ------------------------------------------------------------------------------------------------- output
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
    from .check import run_attrs
    from .measure import attn_raw_init, with_seed_dim

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
    names = [q for q in ("h_rms", "block_rms", "block_update_rms", "weight_movement") if q in ds]
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

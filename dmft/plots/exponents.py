"""Exponent plots: a quantity against size with its fitted slope, its interval's band and predicted exponents."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

# Monte Carlo heads of the H -> oo kernel solver behind P4 panels: `dmft-probe check`'s default, read from it (a
# copy of the number drifted to 8192 while check used 2048, and the plot's P4 verdict was another row's)
from ..check import MC_HEADS as P4_MC_HEADS
from ._style import (
    QUANTITY_LABELS,
    _axes_state,
    _legend,
    _log2,
    _new_axes,
    _power_tex,
    _size_ticks,
    _subplots,
    _sym,
    _tidy_log_y,
)


def exponent_plot(
    sizes,
    values,
    fit=None,
    predicted=None,
    *,
    axis: str = "N",
    ylabel: str = "",
    label=None,
    ax: Axes | None = None,
    diverged=None,
) -> Axes:
    """Log-log (base 2) plot of a measured quantity against size, with its fitted and predicted exponents.

    sizes: (n_sizes,); values: (n_sizes, n_seeds) or (n_sizes,) (non-positive and NaN values are not drawn).
    Per-seed values are drawn light, seed means dark. fit: a `dmft.fit.SlopeFit` (e.g. `slope_fit(sizes,
    values)`): its line c * size^slope and the interval's band (the lines of slope fit.lo and fit.hi through the
    point (mean log size, mean log value) the least-squares line passes through), with "fit: slope -0.98
    [-1.02, -0.95]" in the legend; None draws no fit. predicted: an exponent, or {name: exponent} for several
    hypotheses; each is a dashed line of that slope anchored at the first seed mean, labelled "predicted
    N^-1 (name)". axis: the size's symbol (N, H, L). label names the data in the legend (default "seed
    mean"). Calling it again on the same `ax` draws the next data in the next colour. diverged: the sizes of
    points that diverged and are not drawn (one entry per (size, seed) point, `dmft.divergence`): each size is
    marked with an x on the bottom edge, and the legend says "diverged, not drawn: N=32 (4 seeds)". Returns the
    Axes.
    """
    ax = _new_axes(ax)
    sizes = np.asarray(sizes, dtype=float).ravel()
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] != len(sizes):
        raise ValueError(f"values has {values.shape[0]} rows for {len(sizes)} sizes")
    state = _axes_state(ax)
    k = state["exponent_calls"] = state.get("exponent_calls", -1) + 1
    hue = (0, 2, 4, 5, 6, 9)[k % 6]  # data hues; orange/red are kept for the predictions
    dark = sns.color_palette("dark")[hue]
    light = sns.color_palette("pastel")[hue]
    cb = sns.color_palette("colorblind")
    other = [cb[3], cb[4], cb[1], cb[7]]

    good = np.isfinite(values) & (values > 0)
    means = np.array([row[g].mean() if g.any() else np.nan for row, g in zip(values, good)])
    if values.shape[1] > 1:
        xs = np.repeat(sizes, values.shape[1]).reshape(values.shape)
        ax.scatter(
            xs[good],
            values[good],
            s=18,
            color=light,
            edgecolor="none",
            alpha=0.9,
            zorder=2,
            label=f"{label}, per seed" if label else "per seed",
        )
    ok = np.isfinite(means)
    ax.plot(sizes[ok], means[ok], "o", ms=6.5, color=dark, zorder=4, label=label or "seed mean")

    xs = np.geomspace(sizes.min(), sizes.max(), 64) if len(sizes) else np.array([])
    if fit is not None and ok.sum() >= 2:
        bounded = bool(np.isfinite([fit.lo, fit.hi]).all())  # no interval with one seed (or unbounded)
        ci = f" [{fit.lo:+.2f}, {fit.hi:+.2f}]" if bounded else " (no interval)"
        ax.plot(
            xs,
            fit.constant * xs**fit.slope,
            "-",
            color=dark,
            lw=1.6,
            zorder=3,
            label=f"fit: slope {fit.slope:+.2f}{ci}",
        )
        if bounded:
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
            colour = other[j % len(other)] if k == 0 else dark  # later data: predictions in their colour
            ax.plot(
                xs,
                y0 * (xs / x0) ** e,
                linestyle=styles[j % len(styles)],
                color=colour,
                lw=1.5,
                alpha=1.0 if k == 0 else 0.75,
                zorder=3,
                label=text,
            )
    if diverged is not None and len(diverged):
        at, counts = np.unique(np.asarray(diverged, dtype=float), return_counts=True)
        text = ", ".join(f"{s:g} ({c} seed{'s' if c > 1 else ''})" for s, c in zip(at, counts))
        ax.plot(
            at,
            np.full(len(at), 0.02),
            "x",
            ms=7,
            mew=1.6,
            color="firebrick",
            zorder=5,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label=f"diverged, not drawn: {axis}={text}",
        )
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


def _predicted_for(verdict) -> float | dict | None:
    """The exponents to draw for a `dmft.verdict.Verdict`: {prediction: value, point alternatives: value} (P2 draws
    its CLT exponent and the caption's), or None when the prediction is not a point."""
    import math

    def centre(r):
        return None if math.isinf(r.lo) or math.isinf(r.hi) else (r.lo + r.hi) / 2

    pred = centre(verdict.prediction)
    if pred is None:
        return None
    if verdict.key == "P2":
        return {
            _short_hypothesis(r.name): centre(r)
            for r in (verdict.prediction, *verdict.alternatives)
            if centre(r) is not None
        }
    return pred


def verdict_figure(ds: xr.Dataset, verdicts=None, n_heads_mc: int = P4_MC_HEADS, limit=None) -> Figure:
    """One `exponent_plot` panel per registry slope row of a sweep dataset, among its rows
    (`dmft.rows.dataset_verdicts`).

    verdicts: the rows `dataset_verdicts(ds)` (or `dmft.check.check(ds)`) returned (computed here when None: the
    same rows and verdicts `dmft-probe check` prints). Each panel shows the row's quantity
    (`dmft.measure.QUANTITIES`; for P4 the mean-square deviation of the initial kernels from the H -> oo solver,
    `measure.kernel_mse_init` against `check.kernel_limit`), its fit with its 95% joint-jackknife band, and the
    predicted exponent(s); the title reads "P1 attn_var_init: ✓ consistent" and, below, the row's measured value
    with its interval, coloured by the outcome. limit: the solver's H -> oo kernels when already computed; else
    the solver runs here once with `n_heads_mc` heads (check's default, seeded: the limit the check used). That is
    the slow part: about 1.5 s per layer at 6 probe samples and 16 tokens, growing as samples^2. The rows without
    a panel (P3's log-likelihood ratio, the trained rates, rows not measured) are listed in the figure's title
    with their verdicts; the coordinate check's site rows are counted there (every row is drawn by
    `dmft.plots.verdicts.verdict_rows_figure`)."""
    from .. import divergence, measure
    from ..check import kernel_limit, read_run_attrs, stable_values
    from ..coord import is_site_row
    from ..fit import slope_fit
    from ..rows import dataset_verdicts
    from .verdicts import OUTCOME_COLOURS

    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    a = read_run_attrs(ds)
    cache: dict = {} if limit is None else {"limit": limit}
    if axis == "H" and "limit" not in cache:  # P4 applies: one solver run shared by the rows and the panel
        cache["limit"] = kernel_limit(ds, a, n_heads_mc)
    if verdicts is None:
        verdicts = dataset_verdicts(ds, n_heads_mc=n_heads_mc, kernel_limit=cache.get("limit"))
    points = divergence.diverged_points(ds, axis)
    sites = [v for v in verdicts if is_site_row(v)]
    slopes = [
        v
        for v in verdicts
        if not is_site_row(v) and (v.quantity in measure.QUANTITIES or v.quantity == "kernel_mse_init")
    ]
    others = [v for v in verdicts if v not in slopes and v not in sites]
    fig, axes = _subplots(max(len(slopes), 1), 3 if len(slopes) != 4 else 2, panel=(4.4, 4.5))
    for v, ax in zip(slopes, axes):
        if v.quantity == "kernel_mse_init":
            if "limit" not in cache:
                cache["limit"] = kernel_limit(ds, a, n_heads_mc)
            sizes, values = measure.kernel_mse_init(ds, axis, cache["limit"])
        else:
            sizes, values = measure.QUANTITIES[v.quantity](ds, axis)
        values, left_out = stable_values(not v.quantity.endswith("_init"), sizes, values, points, ds["seed"].values)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                found = slope_fit(sizes, values)
            fit = found if np.isfinite(found.slope) else None
        except ValueError:  # fewer than 3 usable sizes: the points alone
            fit = None
        exponent_plot(
            sizes,
            values,
            fit,
            _predicted_for(v),
            axis=axis,
            ylabel=QUANTITY_LABELS.get(v.quantity, v.quantity),
            ax=ax,
            diverged=[p.size for p in left_out],
        )
        if fit is None:
            why = "fewer than 3 sizes with finite values"
            if left_out:
                why = f"fewer than 3 sizes left, {divergence.describe(left_out, axis)}"
            ax.text(
                0.03, 0.06, f"no slope: {why}", transform=ax.transAxes, fontsize="small", color="firebrick", wrap=True
            )
        ax.set_title(
            f"{v.key} {v.quantity}: {v.mark} {v.outcome}\n{v.row}: {v.measured()}",
            fontsize="medium",
            color=OUTCOME_COLOURS[v.outcome],
        )
    if not slopes:
        axes[0].text(
            0.5, 0.5, "no slope predictions apply to this sweep", ha="center", va="center", transform=axes[0].transAxes
        )
        axes[0].set_axis_off()
    title = (
        f"{a['name']} ($\\alpha_A$ = {a['alpha_A']:g}, $\\alpha_L$ = {a['alpha_L']:g}), "
        f"sweep over {_sym(axis)}, {'trained' if a['trained'] else 'at initialisation'}"
    )
    for v in others:
        title += f"\n{v.key} {v.quantity}: {v.mark} {v.outcome} ({v.row}: {v.measured()})"
    if sites:
        counts = ", ".join(f"{sum(v.outcome == o for v in sites)} {o}" for o in OUTCOME_COLOURS)
        title += f"\ncoordinate check, {len(sites)} site rows: {counts} (every row: the verdicts figure)"
    fig.suptitle(title, fontsize="medium")
    return fig


# ---------------------------------------------------------------------------------------------- kernels

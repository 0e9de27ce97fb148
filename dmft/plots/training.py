"""Training figures: loss curves, learning-rate transfer, muP-style coordinate checks."""

from __future__ import annotations

import itertools
import warnings

import matplotlib.ticker as mticker
import numpy as np
import seaborn as sns
import xarray as xr
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._style import (
    AXES,
    COORD_LABELS,
    _figure_of,
    _legend,
    _log2,
    _new_axes,
    _resolve_axis,
    _size_ticks,
    _subplots,
    _sym,
    _tidy_log_y,
)


def _mark_diverged_note(ax: Axes, label: str) -> None:
    """A legend entry for the x markers of diverged runs."""
    ax.plot([], [], "x", ms=7, mew=1.6, color="firebrick", label=label)


def loss_curves(ds: xr.Dataset, *, axis: str | None = None) -> Figure:
    """Held-out loss against step. Sweep (axis given or found): one line per size, the seed mean with a band
    from the lowest to the highest seed, palette "rocket" (dark = small). Single run: the held-out loss, and
    the training loss on each incoming batch as a light line. Diverged runs (`dmft.divergence`) are drawn
    explicitly: in a sweep they are left out of the mean and band and drawn dashed up to their last logged
    loss, marked with an x (the size's legend entry counts them); a diverged single run gets an x at its last
    logged loss. Returns the Figure."""
    from ..divergence import diverged_mask, diverged_points

    axis = _resolve_axis(ds, axis)
    ax = _new_axes(None, figsize=(5.6, 3.8))
    loss = ds.heldout_loss
    steps = ds.step.values
    mask = diverged_mask(ds)
    if axis is None:
        if "train_loss" in ds and ds.sizes.get("train_step", 0):
            ax.plot(
                ds.train_step.values + 1,
                ds.train_loss.values,
                color=sns.color_palette("pastel")[0],
                lw=0.8,
                label="training batch",
                zorder=1,
            )
        ax.plot(steps, loss.values, "o-", ms=3, color=sns.color_palette("dark")[0], lw=1.6, label="held-out", zorder=2)
        pts = diverged_points(ds)
        if pts:
            y = loss.values.astype(float)
            ok = np.isfinite(y)
            if ok.any():
                last = np.flatnonzero(ok)[-1]
                ax.plot(steps[last], y[last], "x", ms=9, mew=2, color="firebrick", zorder=4)
            _mark_diverged_note(ax, f"diverged at step {pts[0].step}" if pts[0].step >= 0 else "diverged")
        at = {a: int(ds[a]) for a in AXES if a in ds.coords}
        ax.set_title(", ".join(f"${k} = {v}$" for k, v in at.items()), fontsize="medium")
        _legend(ax, loc="upper right")
    else:
        sizes = ds[axis].values
        colors = sns.color_palette("rocket", len(sizes) + 1)[: len(sizes)]  # skip the near-white end
        any_diverged = False
        for v, c in zip(sizes, colors):
            lv = loss.sel({axis: v})
            label = f"{int(v)}"
            if "seed" in lv.dims:
                bad = np.zeros(lv.sizes["seed"], dtype=bool)
                if mask is not None and "seed" in mask.dims:
                    bad = (
                        mask.sel({axis: v}).transpose("seed").values.astype(bool)
                        if axis in mask.dims
                        else mask.transpose("seed").values.astype(bool)
                    )
                for j in np.flatnonzero(bad):  # diverged seeds: dashed, x at the last logged loss
                    y = lv.isel(seed=j).values.astype(float)
                    ok = np.isfinite(y)
                    if ok.any():
                        ax.plot(steps[ok], y[ok], "--", color=c, lw=0.9, alpha=0.8)
                        ax.plot(steps[ok][-1], y[ok][-1], "x", ms=7, mew=1.6, color="firebrick", zorder=4)
                if bad.any():
                    any_diverged = True
                    label += f" ({int(bad.sum())} of {len(bad)} diverged)"
                stable = lv.isel(seed=np.flatnonzero(~bad))
                if stable.sizes["seed"] == 0:
                    ax.plot([], [], "--", color=c, lw=1.6, label=label)
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, lo, hi = stable.mean("seed").values, stable.min("seed").values, stable.max("seed").values
                if stable.sizes["seed"] > 1:
                    ax.fill_between(steps, lo, hi, color=c, alpha=0.2, lw=0)
            else:
                mean = lv.values
            ax.plot(steps, mean, "-", color=c, lw=1.6, label=label)
        if any_diverged:
            _mark_diverged_note(ax, "diverged run (dashed; x: last logged loss), not in the mean")
        n_seeds = ds.sizes.get("seed", 1)
        ax.set_title(
            "seed mean"
            + (f", band: min-max over {n_seeds} seeds" if n_seeds > 1 else "")
            + (" that did not diverge" if any_diverged else ""),
            fontsize="medium",
        )
        _legend(ax, title=_sym(axis), loc="upper right", ncols=2 if len(sizes) > 5 else 1)
    ax.set_xlabel("step $t$")
    ax.set_ylabel(r"held-out loss $\mathcal{L}$ (nats)")
    return _figure_of(ax)


def lr_transfer(losses: xr.DataArray, *, axis: str = "N") -> Axes:
    """muP learning-rate transfer: final loss against eta0 (log x), one line per size (palette "rocket").

    losses: dims (eta0, axis) and optionally seed (averaged; a seed that diverged makes the point diverged) and
    step (the last is used). The best eta0 of each size is marked with a star; diverged (NaN/inf) points are
    not drawn on the curve but marked with an x on the top edge, in the size's colour, with a legend note.
    Returns the Axes."""
    if "eta0" not in losses.dims or axis not in losses.dims:
        raise ValueError(f"lr_transfer needs dims (eta0, {axis}), got {losses.dims}")
    da = losses
    if "step" in da.dims:
        da = da.isel(step=-1)
    if "seed" in da.dims:
        da = da.mean("seed")  # NaN/inf in any seed propagates: the point counts as diverged
    extra = [d for d in da.dims if d not in ("eta0", axis)]
    if extra:
        raise ValueError(f"lr_transfer: unexpected dims {extra} (select or average them first)")
    da = da.transpose(axis, "eta0")
    eta = da.eta0.values.astype(float)
    ax = _new_axes(None, figsize=(5.4, 3.8))
    sizes = da[axis].values
    colors = sns.color_palette("rocket", len(sizes) + 1)[: len(sizes)]
    any_diverged = False
    for v, c, row in zip(sizes, colors, da.values.astype(float)):
        ok = np.isfinite(row)
        if (~ok).any():
            any_diverged = True
            ax.plot(
                eta[~ok],
                np.full(int((~ok).sum()), 0.97),
                "x",
                ms=7,
                mew=1.6,
                color=c,
                zorder=5,
                transform=ax.get_xaxis_transform(),
                clip_on=False,
            )
        if not ok.any():
            ax.plot([], [], "-", color=c, lw=1.5, label=f"{v:g} (every eta0 diverged)")
            continue
        order = np.argsort(eta[ok])
        ax.plot(eta[ok][order], row[ok][order], "o-", ms=4, color=c, lw=1.5, label=f"{v:g}")
        best = np.flatnonzero(ok)[np.argmin(row[ok])]
        ax.plot(eta[best], row[best], "*", ms=15, color=c, markeredgecolor="black", markeredgewidth=0.6, zorder=5)
    ax.plot([], [], "*", ms=11, color="grey", markeredgecolor="black", markeredgewidth=0.6, label=r"best $\eta_0$")
    if any_diverged:
        ax.plot([], [], "x", ms=7, mew=1.6, color="grey", label="diverged (top edge)")
    ax.set_xscale("log")
    etas = np.asarray(losses["eta0"].values, dtype=float)
    ax.xaxis.set_major_locator(mticker.FixedLocator(etas.tolist()))  # one tick per grid value
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
            da = da.mean([rest[0]])
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


_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h")  # one per site, with the colour


def coord_check_panels(ds: xr.Dataset, *, axis: str | None = None, max_steps: int = 5) -> Figure:
    """muP-style coordinate check (microsoft/mup's plot_coord_data, on N, H or L): the RMS of every site
    (`dmft.coord.site_rms`: embedding, q, k, v, A, softmax(A), branch outputs, MLP hidden, h, logits) against
    size on log2-log2 axes, one panel per probe step (at most `max_steps`, spread over the steps), one line per
    site (seed mean, per-seed points light), the fitted slope in the legend. Top row: the value; bottom row: the
    change since step 0 (absent at step 0). Under a correct parametrization the lines are flat, except where
    `dmft-probe coord` states another exponent. A single run gets the sites against step instead. Returns the
    Figure."""
    from ..coord import site_rms
    from ..fit import slope_fit

    axis = _resolve_axis(ds, axis)
    rows = [("value", site_rms(ds, change=False)), ("change since step 0", site_rms(ds, change=True))]
    if axis is None:
        fig, axes = _subplots(2, 2, panel=(5.4, 3.8))
        for ax, (title, da) in zip(axes, rows):
            _sites_over_steps(ds.step.values, da, ax)
            ax.set_title(title, fontsize="medium")
        return fig
    steps = ds.step.values
    pick = np.unique(np.round(np.linspace(0, len(steps) - 1, min(max_steps, len(steps)))).astype(int))
    fig, axes = _subplots(2 * len(pick), len(pick), panel=(3.6, 3.3))
    axes = np.asarray(axes).reshape(2, len(pick))
    sizes = ds[axis].values.astype(float)
    for r, (title, da) in enumerate(rows):
        if "seed" not in da.dims:
            da = da.expand_dims("seed")
        colors = _palette(da.sizes["site"])
        for ax, i in zip(axes[r], pick):
            for site, c, mk in zip(da.site.values, colors, itertools.cycle(_MARKERS)):
                vals = da.sel(site=site).isel(step=i).transpose(axis, "seed").values.astype(float)
                good = np.isfinite(vals) & (vals > 0)
                if good.sum(axis=1).min() == 0:
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.array([row[g].mean() for row, g in zip(vals, good)])
                    try:
                        slope = slope_fit(sizes, np.where(good, vals, np.nan)).slope
                    except ValueError:  # fewer than 3 sizes with data
                        slope = np.nan
                if vals.shape[1] > 1:
                    xs = np.repeat(sizes, vals.shape[1]).reshape(vals.shape)
                    ax.scatter(xs[good], vals[good], s=8, color=c, alpha=0.3, edgecolor="none")
                ax.plot(sizes, mean, "-", marker=mk, ms=4, color=c, lw=1.3, label=f"{site} ({slope:+.2f})")
            if not ax.lines:
                ax.set_axis_off()
                continue
            _log2(ax)
            _size_ticks(ax, sizes)
            _tidy_log_y(ax)
            ax.set_xlabel(_sym(axis))
            ax.set_title(f"{title}, step $t = {int(steps[i])}$", fontsize="small")
            _legend(ax, below=True, fontsize="xx-small", ncols=2)
        shown = [ax for ax in axes[r] if ax.axison]
        if shown:
            shown[0].set_ylabel("RMS" if r == 0 else "RMS of the change")
    title = f"coordinate check vs {_sym(axis)} (seed mean; slope in the legend)"
    from ..divergence import describe, diverged_points

    pts = diverged_points(ds, axis)
    if pts:
        title += f"\n{describe(pts, axis)}: not drawn from the step they diverged at"
    fig.suptitle(title, fontsize="medium")
    return fig


def _sites_over_steps(steps: np.ndarray, da: xr.DataArray, ax: Axes) -> Axes:
    """One run: every site's RMS against step (log2 y)."""
    colors = _palette(da.sizes["site"])
    for site, c, mk in zip(da.site.values, colors, itertools.cycle(_MARKERS)):
        y = da.sel(site=site).values.astype(float)
        ok = np.isfinite(y) & (y > 0)
        ax.plot(steps[ok], y[ok], "-", marker=mk, ms=3, color=c, lw=1.3, label=str(site))
    ax.set_yscale("log", base=2)
    _tidy_log_y(ax)
    ax.set_xlabel("step $t$")
    _legend(ax, outside=True, fontsize="x-small")
    return ax


# ------------------------------------------------------------------------------------------------- output

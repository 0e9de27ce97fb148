"""Figures of the trained convergence rates of `dmft.convergence`: how fast a trained model approaches its N, H or
L -> oo limit (docs/predictions.md, P5, P6 and the finite-size rates).

    convergence_plot     mean-square distance from the limit vs size: seeds, seed mean, fit with its CI, prediction
    rate_by_step_plot    the fitted slope and its CI at every probe step, the prediction as a horizontal line
    seed_variance_plot   seed-to-seed variance vs size, with its fit and the prediction

Each takes the result object (`ConvergenceRate` or `SeedVarianceRate`), draws on `ax` (a new figure when None)
and returns the Axes. `predicted` is an exponent, {name: exponent} for several hypotheses, or anything with an
`exponent` attribute (a `dmft.predictions.Prediction`, e.g. `trained_rate(...)`); None draws no prediction.
Calling a function again on the same Axes draws the next rate in the next colour (e.g. "largest" and
"richardson" on one panel).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes

from ._style import _axes_state, _legend, _log2, _new_axes, _power_tex, _size_ticks, _sym, _tidy_log_y

__all__ = ["QUANTITY_SYMBOLS", "convergence_plot", "rate_by_step_plot", "seed_variance_plot"]

# the symbol of each `dmft.convergence.CONVERGENCE_QUANTITIES` entry, for axis labels
QUANTITY_SYMBOLS = {
    "kernel_pooled": r"\Phi^\ell(x, x')",
    "kernel_last_token": r"\Phi^\ell_{\mathrm{last}}(x, x')",
    "kernel_spatial": r"\Phi^\ell(s, s')",
    "heldout_loss": r"\mathcal{L}",  # on the fixed held-out batch
    "probe_outputs": r"\Delta f",  # f(theta_t) - f(theta_0) on the probe batch
    "attn_prob_mean_heads": r"\mathrm{E}_h[\mathrm{softmax}(A)]",
    "attn_prob_var_heads": r"\mathrm{Var}_h[\mathrm{softmax}(A)]",
    "attn_var_heads": r"\mathrm{Var}_h[A]",
    "attn_mean_heads": r"\mathrm{E}_h[A]",
}
_STYLES = ["--", (0, (5, 2, 1, 2)), ":", (0, (3, 1, 1, 1, 1, 1))]


def _symbol(quantity: str) -> str:
    return QUANTITY_SYMBOLS.get(quantity, r"\mathrm{" + quantity.replace("_", r"\_") + "}")


def _hypotheses(predicted) -> dict[str, float]:
    """predicted (None, a number, {name: exponent} or an object with .exponent) as {name: exponent}."""
    if predicted is None:
        return {}
    if isinstance(predicted, Mapping):
        return {str(k): float(v) for k, v in predicted.items()}
    exponent = getattr(predicted, "exponent", predicted)
    if exponent is None:
        return {}
    return {"": float(exponent)}


def _colours(ax: Axes):
    """(dark, light, prediction colours, k) for the k-th rate drawn on `ax` (hues as `exponent_plot`'s)."""
    state = _axes_state(ax)
    k = state["convergence_calls"] = state.get("convergence_calls", -1) + 1
    hue = (0, 2, 4, 5, 6, 9)[k % 6]  # orange/red are kept for the predictions
    cb = sns.color_palette("colorblind")
    return sns.color_palette("dark")[hue], sns.color_palette("pastel")[hue], [cb[3], cb[4], cb[1], cb[7]], k


def _fmt(x: float) -> str:
    return f"{x:+.2f}" if np.isfinite(x) else ("-inf" if x < 0 else "+inf" if x > 0 else "nan")


def _fit_text(slope: float, lo: float, hi: float, level: float) -> str:
    if np.isnan(lo) or np.isnan(hi):
        return f"fit: slope {_fmt(slope)} (interval not resolved)"
    return f"fit: slope {_fmt(slope)} [{_fmt(lo)}, {_fmt(hi)}] ({level:.0%} CI)"


def _draw_fit(
    ax: Axes, sizes: np.ndarray, y: np.ndarray, rate, predicted, axis: str, dark, other, k: int, name: str
) -> None:
    """The fitted line c n^slope with its band (the lines of slope lo and hi through the point (mean log size,
    mean log y) the least-squares line passes through; an unbounded side stops at the fitted line), and each
    predicted exponent as a dashed guide through that same point; or the reason the rate is not fitted."""
    ok = np.isfinite(y) & (y > 0)
    xs = np.geomspace(sizes.min(), sizes.max(), 64) if len(sizes) else np.array([])
    fitted = np.isfinite(rate.slope) and np.isfinite(rate.intercept)
    if fitted and ok.sum() >= 2:
        prefix = f"{name}: " if name else ""
        ax.plot(
            xs,
            np.exp(rate.intercept) * xs**rate.slope,
            "-",
            color=dark,
            lw=1.6,
            zorder=3,
            label=prefix + _fit_text(rate.slope, rate.lo, rate.hi, rate.level),
        )
        lx = np.log(sizes[ok]).mean()
        ly = rate.intercept + rate.slope * lx
        edges = [s if np.isfinite(s) else rate.slope for s in (rate.lo, rate.hi)]
        band = np.exp(ly + np.outer(edges, np.log(xs) - lx))
        ax.fill_between(xs, band.min(axis=0), band.max(axis=0), color=dark, alpha=0.15, lw=0, zorder=1)
    elif not fitted:
        ax.text(
            0.03,
            0.06,
            f"not fitted: {rate.reason}",
            transform=ax.transAxes,
            fontsize="small",
            color="firebrick",
            wrap=True,
        )
    if ok.any():
        if fitted:  # through the fitted line's centre: the two slopes cross there
            lx = np.log(sizes[ok]).mean()
            x0, y0 = np.exp(lx), np.exp(rate.intercept + rate.slope * lx)
        else:  # through the geometric mean of the points
            x0, y0 = np.exp(np.log(sizes[ok]).mean()), np.exp(np.log(y[ok]).mean())
        for j, (hname, e) in enumerate(_hypotheses(predicted).items()):
            text = f"predicted {_power_tex(axis, e)}" + (f" ({hname})" if hname else "")
            ax.plot(
                xs,
                y0 * (xs / x0) ** e,
                linestyle=_STYLES[j % len(_STYLES)],
                color=other[j % len(other)] if k == 0 else dark,
                lw=1.5,
                alpha=1.0 if k == 0 else 0.75,
                zorder=3,
                label=text,
            )


def _finish_loglog(ax: Axes, sizes, axis: str, ylabel: str) -> None:
    drawn = any(np.any(np.asarray(line.get_ydata(), dtype=float) > 0) for line in ax.lines)
    _log2(ax, y=drawn)  # nothing positive drawn (a step that is not fitted): no log y axis to draw
    if drawn:
        _tidy_log_y(ax)
    else:
        ax.set_yticks([])
    if len(sizes):
        _size_ticks(ax, sizes)
    ax.set_xlabel(_sym(axis))
    ax.set_ylabel(ylabel)
    _legend(ax, below=True)


def convergence_plot(rate, *, ax: Axes | None = None, predicted=None, label: str | None = None) -> Axes:
    """Log-log (base 2) plot of a `dmft.convergence.ConvergenceRate` at its chosen step: the mean-square distance
    of the trained quantity from its size -> oo limit against size.

    Drawn at the fitted sizes (`rate.fit_sizes`; with method "largest" the largest size is the limit itself and
    is not drawn): each seed's distance from the limit estimate (light dots), their seed mean (open circles), and,
    when the fit is floor-corrected (`corrected=True`, the default of `convergence_rate`), the seed mean minus the
    noise floor of the limit estimate (filled dots): what the slope is fitted to. Then the fitted line with its
    seed-bootstrap band and "fit: slope -0.98 [-1.40, -0.61] (95% CI)" in the legend (an unbounded side prints
    as -inf/+inf and the band stops at the fitted line on that side; an interval that is not resolved reads
    "interval not resolved" and has no band), and `predicted` as a dashed line through the fitted line's centre. A step that was not fitted
    shows its reason. Values <= 0 (a corrected distance below the noise) cannot be drawn on the log axis and are
    left out. label: a name for this rate in the legend (default: its method). Returns the Axes.
    """
    ax = _new_axes(ax)
    dark, light, other, k = _colours(ax)
    axis, step = rate.axis, rate.step
    name = label if label is not None else rate.method + ("" if rate.corrected else ", uncorrected")
    sizes = np.asarray(rate.fit_sizes, dtype=float)
    at = {axis: sizes}
    per_seed = rate.distance.sel(step=step).sel(at).transpose(axis, "seed").values.astype(float)
    mean = rate.mean_distance.sel(step=step).sel(at).values.astype(float)
    fitted = rate.fitted_distance.sel(step=step).sel(at).values.astype(float)
    good = np.isfinite(per_seed) & (per_seed > 0)
    xs = np.repeat(sizes, per_seed.shape[1]).reshape(per_seed.shape)
    ax.scatter(
        xs[good], per_seed[good], s=18, color=light, edgecolor="none", alpha=0.9, zorder=2, label=f"{name}: per seed"
    )
    floor = rate.floor.sel(step=step).sel(at).values.astype(float)
    corrected = rate.corrected and np.any(np.abs(floor) > 0)
    ok = np.isfinite(mean) & (mean > 0)
    ax.plot(
        sizes[ok],
        mean[ok],
        "o",
        ms=6.5,
        color=dark,
        zorder=4,
        mfc="none" if corrected else dark,
        label=f"{name}: seed mean",
    )
    if corrected:
        okf = np.isfinite(fitted) & (fitted > 0)
        ax.plot(sizes[okf], fitted[okf], "o", ms=5.5, color=dark, zorder=5, label=f"{name}: seed mean - floor")
    y = fitted if rate.corrected else mean
    _draw_fit(ax, sizes, y, rate, predicted, axis, dark, other, k, "")
    limit = (
        f"largest size ({axis} = {rate.sizes.max():g})"
        if rate.method == "largest"
        else f"Richardson (order {rate.order:g})"
    )
    if k == 0:
        ax.set_title(f"{rate.quantity} ({rate.selection}), step {step}\nlimit: {limit}", fontsize="medium")
    sym = _symbol(rate.quantity)
    _finish_loglog(
        ax, rate.sizes, axis, rf"$\langle ({{{sym}}} - {{{sym}}}_{{{axis}\to\infty}})^2 \rangle$" + f"\n{rate.quantity}"
    )
    return ax


def seed_variance_plot(rate, *, ax: Axes | None = None, predicted=None, label: str | None = None) -> Axes:
    """Log-log (base 2) plot of a `dmft.convergence.SeedVarianceRate` at its chosen step: the unbiased variance
    over seeds (averaged over the quantity's entries) against size, the fitted line with its seed-bootstrap band
    and "fit: slope ... [lo, hi] (95% CI)" in the legend, and `predicted` as a dashed line through the fitted
    line's centre. label names this rate's points in the legend (default "seed variance"). Returns the Axes."""
    ax = _new_axes(ax)
    dark, _, other, k = _colours(ax)
    axis, step = rate.axis, rate.step
    sizes = np.asarray(rate.sizes, dtype=float)
    var = rate.variance.sel(step=step).sel({axis: sizes}).values.astype(float)
    ok = np.isfinite(var) & (var > 0)
    n = np.asarray(rate.n_seeds)
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    ax.plot(sizes[ok], var[ok], "o", ms=6.5, color=dark, zorder=4, label=f"{label or 'seed variance'} ({seeds} seeds)")
    _draw_fit(ax, sizes, var, rate, predicted, axis, dark, other, k, label or "")
    if k == 0:
        ax.set_title(f"{rate.quantity}: seed-to-seed variance, step {step}", fontsize="medium")
    _finish_loglog(
        ax, sizes, axis, rf"$\mathrm{{Var}}_{{\mathrm{{seed}}}}[{_symbol(rate.quantity)}]$" + f"\n{rate.quantity}"
    )
    return ax


def rate_by_step_plot(rate, *, ax: Axes | None = None, predicted=None, label: str | None = None) -> Axes:
    """The fitted log-log slope of a `ConvergenceRate` or `SeedVarianceRate` at every probe step: a dot per
    fitted step with its seed-bootstrap interval as a vertical bar (an unbounded side is drawn to the edge of the
    panel and marked with an arrow head), and each predicted exponent as a horizontal dashed line. Steps that
    were not fitted (e.g. step 0 of `probe_outputs`, identically 0) are left out. label: this rate in the
    legend (default: its method, or "seed variance"). Calling it again on the same Axes draws the next rate
    beside it. Returns the Axes."""
    ax = _new_axes(ax, figsize=(5.0, 3.4))
    dark, _, other, k = _colours(ax)
    name = label or getattr(rate, "method", "seed variance")
    steps = np.asarray(rate.steps, dtype=float)
    slope = rate.slope_by_step.values.astype(float)
    lo, hi = rate.lo_by_step.values.astype(float), rate.hi_by_step.values.astype(float)
    ok = np.isfinite(slope)
    span = np.ptp(steps) if len(steps) > 1 else 1.0
    x = steps + (k * 0.012 * span)  # a later rate sits just beside the earlier ones
    hyps = _hypotheses(predicted)
    finite = np.concatenate([slope[ok], lo[ok & np.isfinite(lo)], hi[ok & np.isfinite(hi)], list(hyps.values())])
    if finite.size:
        pad = 0.15 * max(np.ptp(finite), 0.5)
        bottom, top = finite.min() - pad, finite.max() + pad
        prev = _axes_state(ax).get("rate_ylim")
        if prev is not None:
            bottom, top = min(bottom, prev[0]), max(top, prev[1])
        _axes_state(ax)["rate_ylim"] = (bottom, top)
        ax.set_ylim(bottom, top)
    else:
        bottom, top = -2.0, 1.0
    bars = ok & ~np.isnan(lo) & ~np.isnan(hi)  # NaN interval: not resolved, the dot alone
    if bars.any():
        ax.vlines(x[bars], np.maximum(lo[bars], bottom), np.minimum(hi[bars], top), color=dark, lw=1.6, zorder=2)
    for side, edge, marker in ((lo, bottom, "v"), (hi, top, "^")):
        unbounded = bars & np.isinf(side)
        if unbounded.any():
            ax.plot(
                x[unbounded],
                np.full(unbounded.sum(), edge),
                marker,
                color=dark,
                ms=6,
                zorder=3,
                clip_on=False,
                label="_unbounded",
            )
    level = getattr(rate, "level", 0.95)
    ax.plot(x[ok], slope[ok], "o-", color=dark, ms=6, lw=1.0, zorder=4, label=f"{name} ({level:.0%} CI)")
    if k == 0:
        for j, (hname, e) in enumerate(hyps.items()):
            ax.axhline(
                e,
                linestyle=_STYLES[j % len(_STYLES)],
                color=other[j % len(other)],
                lw=1.5,
                zorder=1,
                label=f"predicted {_power_tex(rate.axis, e)}" + (f" ({hname})" if hname else ""),
            )
        what = "distance from the limit" if hasattr(rate, "method") else "seed variance"
        ax.set_title(f"{rate.quantity}: slope of the {what}", fontsize="medium")
    quantities = _axes_state(ax).get("rate_quantities", [])
    _axes_state(ax)["rate_quantities"] = quantities = list(dict.fromkeys([*quantities, rate.quantity]))
    ax.set_xlabel("probe step")
    ax.set_ylabel(f"log-log slope against {_sym(rate.axis)}\n{', '.join(quantities)}")
    if not ok.any() and k == 0:
        reason = next((r for r in rate.reasons if r), "no step fitted")
        ax.text(
            0.03, 0.06, f"not fitted: {reason}", transform=ax.transAxes, fontsize="small", color="firebrick", wrap=True
        )
    _legend(ax, below=True)
    return ax

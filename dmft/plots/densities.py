"""Densities of A over heads against the variance-gamma law and its Gaussian limit (Fig. 3b-c)."""

from __future__ import annotations

import numpy as np
import seaborn as sns
from matplotlib.axes import Axes

from ._style import _legend, _new_axes


def attention_density(
    samples, N: int, alpha_A: float, *, ax: Axes | None = None, title: str | None = None, pvalue: float | None = None
) -> Axes:
    """Histogram (density) of attention variables A over heads against the exact law at init.

    samples: values of A = N^-alpha_A q.k (NaN dropped), e.g. `dmft.measure.attn_raw_init(ds, "N")[N]`.
    Draws the variance-gamma density of `dmft.solvers.attention_law(N, alpha_A)` and the Gaussian of the same
    variance (`gaussian_limit`, the N -> oo law), with the KS p-value of the samples against the variance-gamma
    law in the legend: `pvalue` when given (a sweep's figure passes P3's, `dmft.check.p3_ks_pvalues`, computed on
    these same samples), else computed here. Returns the Axes.
    """
    from ..solvers import attention_law, gaussian_limit

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
        heights = np.asarray(
            ax.hist(
                x,
                bins=bins.tolist(),
                density=True,
                color=sns.color_palette("pastel")[0],
                edgecolor="white",
                lw=0.5,
                label=f"measured, {x.size} values",
            )[0]
        )
    grid = np.linspace(-lim, lim, 400)  # even count: 0 is not on the grid (N = 1 pole)
    vg = law.pdf(grid)
    pval = pvalue if pvalue is not None else law.ks_test(x)[1] if x.size else float("nan")
    dark = sns.color_palette("dark")
    ax.plot(grid, vg, color=dark[0], lw=1.8, label=f"variance-gamma (KS p = {pval:.2g})")
    ax.plot(grid, gauss.pdf(grid), "--", color=dark[3], lw=1.4, label="Gaussian, same variance")
    if 0 < x.size < 50:  # few values: show each one as a rug tick too
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

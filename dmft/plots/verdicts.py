"""The verdict figure: every row of a dataset (`dmft.rows.dataset_verdicts`) on one panel, failures and rows that
were not measured included, each with the verdict `dmft-probe check` and `dmft-probe coord` print for it."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from ._style import _subplots

__all__ = ["OUTCOME_COLOURS", "verdict_rows_figure"]

OUTCOME_COLOURS = {
    "consistent": "#1b7837",
    "refuted": "firebrick",
    "underpowered": "#b8860b",
    "not measured": "dimgrey",
}


def _limits(rows) -> tuple[float, float]:
    """x limits holding every finite estimate, interval end and finite prediction edge (with a margin)."""
    xs = [x for v in rows for x in (v.estimate, v.lo, v.hi, v.prediction.lo, v.prediction.hi) if np.isfinite(x)]
    if not xs:
        return -1.0, 1.0
    lo, hi = min(xs), max(xs)
    pad = 0.08 * max(hi - lo, 0.5)
    return lo - pad, hi + pad


def verdict_rows_figure(rows, title: str = "") -> Figure:
    """One line per `dmft.verdict.Verdict` row, top to bottom in the order given: the prediction's region as a
    light bar, the estimate as a dot with its interval (an unbounded end drawn to the panel's edge), coloured by
    the outcome; a row without an estimate reads "not measured" in place of the dot. The y tick label of a row is
    "`dmft.rows.row_label`: <mark> <outcome>" (the same verdict every command shows), and the measured value with
    its interval is written on the right. Estimates are in each row's own units (exponents for slope rows, nats for
    P3's log-likelihood ratio). Returns the Figure."""
    from ..rows import row_label

    rows = list(rows)
    if not rows:
        raise ValueError("no verdict rows to draw")
    n = len(rows)
    fig, axes = _subplots(1, 1, panel=(7.5, 0.9 + 0.3 * n))
    ax = axes[0]
    left, right = _limits(rows)
    labels = []
    for i, v in enumerate(rows):
        y = n - 1 - i
        colour = OUTCOME_COLOURS[v.outcome]
        p_lo, p_hi = (float(np.clip(e, left, right)) for e in (v.prediction.lo, v.prediction.hi))
        ax.plot([p_lo, p_hi], [y, y], "-", lw=7, color="0.85", solid_capstyle="butt", zorder=1)
        if np.isfinite(v.estimate):
            if v.lo <= v.hi:
                ax.plot([max(v.lo, left), min(v.hi, right)], [y, y], "-", lw=1.8, color=colour, zorder=2)
            ax.plot([v.estimate], [y], "o", ms=5, color=colour, zorder=3)
        else:
            ax.text(
                (left + right) / 2,
                y,
                "not measured",
                ha="center",
                va="center",
                fontsize="x-small",
                color=colour,
                zorder=3,
            )
        ax.annotate(
            v.measured(), (1.01, y), xycoords=("axes fraction", "data"), va="center", fontsize="x-small", color=colour
        )
        labels.append(f"{row_label(v)}: {v.mark} {v.outcome}")
    ax.set_yticks(range(n - 1, -1, -1), labels, fontsize="x-small")
    for tick, v in zip(ax.get_yticklabels(), rows):
        tick.set_color(OUTCOME_COLOURS[v.outcome])
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlim(left, right)
    ax.set_xlabel("estimate with its 95% interval (each row's own units); grey bar: the prediction's region")
    counts = ", ".join(f"{sum(v.outcome == o for v in rows)} {o}" for o in OUTCOME_COLOURS)
    ax.set_title((title + "\n" if title else "") + f"every row ({n}): {counts}", fontsize="medium")
    ax.grid(axis="x", alpha=0.3)
    return fig

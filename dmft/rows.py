"""Every verdict row of one sweep dataset, from one function: what `dmft-probe coord`, `dmft-probe check` and
`dmft-probe plot` print or draw, so a row has one verdict whichever command shows it (docs/predictions.md, "The
verdict rule").

The rows, in order: the registry's rows of the sweep (`dmft.check.check`: P1-P4, P8, P10, the coordinate check's
feature update), the trained-regime rows (`dmft.report.trained_verdicts`: P5, P6, conv-L, P11), and the
coordinate check's site rows (`dmft.coord.coord_verdicts`) when the dataset has the recorder's coordinate sizes.
"""

from __future__ import annotations

import xarray as xr

from .check import MC_HEADS, check
from .verdict import Verdict

__all__ = ["dataset_verdicts", "row_label"]


def dataset_verdicts(
    ds: xr.Dataset, n_heads_mc: int = MC_HEADS, kernel_limit: xr.Dataset | None = None
) -> list[Verdict]:
    """Every `dmft.verdict.Verdict` row of a sweep dataset (module docstring). n_heads_mc: Monte Carlo heads of
    the H -> oo solver (P4, H sweeps); kernel_limit: its result when already computed (`dmft.check.kernel_limit`).
    ValueError when the dataset is not a sweep the rows can be measured on (fewer than 3 sizes, no config)."""
    from .coord import coord_verdicts
    from .report import trained_verdicts

    rows = check(ds, n_heads_mc=n_heads_mc, limit=kernel_limit) + trained_verdicts(ds)
    if "coord_rms" in ds and "io_rms" in ds:
        rows += coord_verdicts(ds)
    return rows


def row_label(v: Verdict) -> str:
    """ "*P1 Var_h A(0) (mup, N)": the row as the tables and the verdict figure name it (primary rows marked *)."""
    return f"{'*' if v.primary else ''}{v.key} {v.row} ({v.setting}, {v.axis})"

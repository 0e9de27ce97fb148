"""The variant table: one verdict per (block variant, axis, optimizer) coordinate-check dataset, as a markdown table.

Input: the folder `dmft-probe variants` writes (`probes.variant_table`), one sweep dataset per cell
(`coord-<variant>-<optimizer>-<axis>.nc`); this module only reads datasets. Each dataset's rows come from the
coordinate check (`dmft.coord.coord_verdicts`: every site, the logits included, at init and its change since
step 0 at every probe step, against `dmft.predictions.coord_expectation`, allowing `dmft.coord.TOL` beyond the
95% seed-bootstrap CI). A cell is "scale-invariant" when every judged row is consistent, "not scale-invariant"
when a judged row misses its expectation, "inconclusive" when the dataset cannot decide (see `variant_verdict`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from . import divergence, measure
from .coord import TOL, CoordRow, coord_verdicts

SCALE_INVARIANT = "scale-invariant"
NOT_SCALE_INVARIANT = "not scale-invariant"
INCONCLUSIVE = "inconclusive"
# The variables the coordinate check reads (dmft.coord.site_rms and the W_Q, W_K movement).
COORD_VARS = ("coord_rms", "coord_update_rms", "io_rms", "io_update_rms", "weight_movement")
# Change rows from this probe step on are judged; earlier ones are reported only (see variant_verdict).
JUDGED_FROM_STEP = 10
LEGEND = (f"{SCALE_INVARIANT}: every init coordinate and every feature/logit change at step >= {JUDGED_FROM_STEP} "
          f"has the predicted exponent within the coordinate check's tolerance {TOL:g} beyond the 95% seed CI "
          f"(dmft.coord.TOL); changes at steps < {JUDGED_FROM_STEP} that deviate are listed, not judged.")


@dataclass(frozen=True)
class VariantVerdict:
    """The verdict of one cell. failing: the judged rows that miss their expectation (site, kind, step, slope, CI,
    expected in each CoordRow); judged: how many rows were judged; early: change rows at steps < 10 that deviate
    (reported, not judged); worst: the judged row farthest from its expectation (a failing one if any; None when
    nothing was fitted); note: why a cell is inconclusive, or what else it holds (diverged points); dataset:
    the file it was read from."""

    variant: str
    axis: str
    optimizer: str
    verdict: str
    failing: tuple[CoordRow, ...]
    judged: int
    early: tuple[CoordRow, ...]
    worst: CoordRow | None = None
    note: str = ""
    dataset: str = ""


def _identity(ds: xr.Dataset) -> tuple[str, str, str]:
    """(variant, axis, optimizer) of a sweep dataset, from its run config (as `dmft.check.run_attrs` reads it)."""
    try:
        cfg = json.loads(ds.attrs["config"])
        variant = str(cfg["model"].get("variant") or "paper")      # datasets from before the variants: the paper's
        optimizer = str(cfg["optim"]["name"])
    except (KeyError, ValueError, TypeError):
        raise ValueError("dataset has no readable 'config' attribute with 'model' and 'optim' tables; "
                         "is it a dmft-probe dataset?") from None
    return variant, measure.sweep_axis(ds), optimizer


def _off_by(r: CoordRow) -> float:
    """How far a row's slope is from its expectation (NaN-slope rows: 0 when consistent, inf otherwise)."""
    if not np.isfinite(r.slope):
        return 0.0 if r.consistent else np.inf
    return abs(r.slope - r.expected)


def variant_verdict(ds: xr.Dataset, dataset: str = "") -> VariantVerdict:
    """The verdict of one coordinate-check sweep dataset.

    Judged rows: every "init" row (each site's RMS at step 0) and every "change" row (the RMS of a site's change
    since step 0, the logits included, and along L the relative movement of W_Q, W_K) at probe steps >= 10. Change
    rows at steps 1..9 that deviate are listed in `early` but do not decide the verdict. The reason: at the first
    steps, the change of the features on the held-out probe batch is proportional to the train-probe kernel at
    initialisation. For blocks without learned positions and with odd-symmetric MLPs (RoPE + SwiGLU: openelm,
    ngpt) that kernel's infinite-width limit is ~0, so their first-step changes are finite-size noise ~ d^-1/2
    (measured: the off-diagonal pooled kernel at init is 0.009, 0.005, 0.004 at N = 4, 16, 64 for openelm, against
    ~0.05, flat, for paper); their early slopes read as "shrinks" although nothing is wrong with the
    parametrization. Once the features have learned shared structure (step >= 10) the change is O(1) and its
    exponent is the parametrization's.

    Verdict: "not scale-invariant" when a judged row with a fitted slope misses its expectation by more than TOL
    beyond its 95% seed CI; "inconclusive" when there is nothing to judge the trained regime on (no probe step >=
    10), when the sizes left after divergence are too few for a slope, when a judged row could not be fitted
    (partly zero), or when points diverged (their sizes are then named in `note`, and the rows are fitted on the
    points that did not diverge); "scale-invariant" otherwise.
    """
    variant, axis, optimizer = _identity(ds)
    ds = measure.with_seed_dim(ds)
    notes = []
    points = divergence.diverged_points(ds, axis)
    if points:
        notes.append(divergence.describe(points, axis))
        keep = ~divergence.diverged_mask(ds)     # fit on the points that did not diverge
        ds = ds.assign({name: ds[name].where(keep) for name in COORD_VARS if name in ds})
    try:
        rows = coord_verdicts(ds)
    except ValueError as e:
        notes.append(str(e).splitlines()[0])
        return VariantVerdict(variant, axis, optimizer, INCONCLUSIVE, (), 0, (), None, "; ".join(notes), dataset)
    judged = [r for r in rows if r.kind == "init" or r.step >= JUDGED_FROM_STEP]
    early = tuple(r for r in rows if r.kind == "change" and r.step < JUDGED_FROM_STEP and not r.consistent)
    failing = tuple(r for r in judged if not r.consistent)
    fitted_failing = [r for r in failing if np.isfinite(r.slope)]
    worst = max(failing or judged, key=_off_by) if judged else None
    if fitted_failing:
        verdict = NOT_SCALE_INVARIANT
    elif not any(r.kind == "change" for r in judged):
        verdict = INCONCLUSIVE
        notes.append(f"no probe step >= {JUDGED_FROM_STEP}: the feature changes were not judged")
    elif failing:
        verdict = INCONCLUSIVE
        notes.append("no slope for " + ", ".join(_label(r) for r in failing) + " (partly zero)")
    elif points:
        verdict = INCONCLUSIVE
    else:
        verdict = SCALE_INVARIANT
    return VariantVerdict(variant, axis, optimizer, verdict, failing, len(judged), early, worst, "; ".join(notes),
                          dataset)


def _label(r: CoordRow) -> str:
    return r.site if r.kind == "init" else f"{r.site}@{r.step}"


def _kind_label(r: CoordRow) -> str:
    return f"{r.site} init" if r.kind == "init" else f"{r.site} change@{r.step}"


def _worst_cell(v: VariantVerdict) -> str:
    r = v.worst
    if r is None:
        return "-"
    if not np.isfinite(r.slope):
        text = f"{_kind_label(r)}: {'zero' if r.consistent else 'no slope'} vs {r.expected:+g}"
    else:
        text = f"{_kind_label(r)}: {r.slope:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}] vs {r.expected:+g}"
    if v.failing:
        text += f" ({len(v.failing)} of {v.judged} rows off)"
    return text


def _early_cell(v: VariantVerdict, most: int = 4) -> str:
    if not v.early:
        return "none"
    rows = sorted(v.early, key=_off_by, reverse=True)
    parts = [f"{_label(r)} {r.slope:+.2f}" if np.isfinite(r.slope) else f"{_label(r)} no slope" for r in rows[:most]]
    return ", ".join(parts) + (f" (+{len(rows) - most} more)" if len(rows) > most else "")


def _order(values: list[str], known: tuple[str, ...]) -> dict[str, int]:
    return {v: (known.index(v) if v in known else len(known)) for v in values}


def variant_table_markdown(verdicts: list[VariantVerdict]) -> str:
    """A markdown table, one row per cell sorted by variant, axis, optimizer (the variants and axes in their
    usual order, then by name): variant | axis | optimizer | verdict | worst judged row (site, slope [95% CI] vs
    expected) | early-step deviations; then the legend and the notes of inconclusive cells."""
    from parametrizations.variants import VARIANTS

    vo = _order([v.variant for v in verdicts], VARIANTS)
    ao = _order([v.axis for v in verdicts], ("N", "H", "L"))
    ordered = sorted(verdicts, key=lambda v: (vo[v.variant], v.variant, ao[v.axis], v.axis, v.optimizer))
    lines = [("| variant | axis | optimizer | verdict | worst judged row (slope [95% CI] vs expected) | "
              "early-step deviations (not judged) |"),
             "|---|---|---|---|---|---|"]
    for v in ordered:
        cells = [v.variant, v.axis, v.optimizer, v.verdict, _worst_cell(v), _early_cell(v)]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    lines += ["", LEGEND]
    notes = [f"- {v.variant} / {v.axis} / {v.optimizer}: {v.note}" for v in ordered if v.note]
    if notes:
        lines += ["", "Notes:", *notes]
    return "\n".join(lines) + "\n"


def variant_table_from_folder(folder: Path) -> list[VariantVerdict]:
    """The verdict of every coordinate-check dataset `coord-*.nc` in `folder` (sweep-store part folders are not
    read). ValueError naming the folder when it holds none, or naming the file a verdict cannot be read from."""
    from probes.dataset import load

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    files = sorted(p for p in folder.glob("coord-*.nc") if p.is_file())
    if not files:
        raise ValueError(f"{folder}: holds no coordinate-check dataset (coord-*.nc); run `dmft-probe variants` first")
    out = []
    for path in files:
        ds = load(path)
        try:
            out.append(variant_verdict(ds, str(path)))
        except ValueError as e:
            raise ValueError(f"{path}: {str(e).splitlines()[0]}") from None
    return out

"""The coordinate check (muP practice, on all three axes): slopes of every site's RMS against size, as
`dmft.verdict.Verdict` rows decided by the one rule (`dmft.verdict.decide`; docs/predictions.md, "The verdict
rule" and "Coordinate check").

Input: a sweep dataset written by `dmft-probe coord` (or `sweep`), with the swept axis (N, H or L) and `seed` as
dims and the recorder's `coord_rms` / `coord_update_rms` (per block and site), `io_rms` / `io_update_rms`
(embedding output and logits) and `weight_movement`. Along N and H each block site is averaged over layers;
along L it is read at the last block of each model (the same relative depth), so a row is one site at one step.

A row is "init" (the site's RMS at step 0) or "change" (the RMS of its change since step 0, at a step > 0). Its
slope is `dmft.fit.slope_fit`'s: log(seed mean) against log(size), the 95% joint-jackknife interval over seeds
(t quantile) and the local slopes between adjacent sizes. Its band covers the next-order term c/n
(`dmft.fit.band_with_correction`): the local slopes' largest distance from the global slope, plus the distance
of the global slope from the two-term model's exponent (log RMS = a + e log n + c/n) where that exponent lies
closer to the expected one (the correction explains part of the gap; a blow-up gets no credit). An O(1) site that approaches its limit as 1 + c/n (the softmax at init, tending to uniform) has
local slopes of one sign that halve per doubling, and a global slope of -0.04 over n = 4..32 that lies outside
their spread: with the spread alone as band, a correct parametrization read as refuted (docs/predictions.md,
"Coordinate check"). The hypotheses are the registry's
(`dmft.predictions.coord_hypotheses`): the expected exponent e of `dmft.predictions.coord_expectation` (what a
parametrization with a well-defined limit must show; SP, the negative control, is held to the same) against
e - 1/2 and e + 1/2, each widened by the band. A row is consistent, refuted (a deviation), underpowered (with
the seeds that would decide it) or not measured (the site is zero at some size: no log-log slope).

The trend word is read off the interval against the band, never against a constant: "flat" when the interval
lies inside [-band, band], "grows" when it lies above +band, "shrinks" when it lies below -band, "unresolved"
otherwise.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import xarray as xr

from . import measure
from .check import read_run_attrs
from .fit import slope_fit
from .predictions import COORD_CORRECTION, CoordExpectation, coord_expectation, coord_hypotheses
from .verdict import MARKS, NOT_MEASURED, OUTCOMES, REFUTED, Verdict, lines, to_dataset

__all__ = [
    "COORD_KEY",
    "DEFAULT_SEEDS",
    "IDENTICALLY_ZERO",
    "coord_dataset",
    "coord_lines",
    "coord_row",
    "coord_verdicts",
    "is_site_row",
    "kind_of",
    "refuted",
    "site_of",
    "site_rms",
    "step_of",
    "summary_line",
    "trend",
]

COORD_KEY = "coord"
# Seeds per size of `dmft-probe coord` by default. With 3 seeds the jackknife-t interval carries t = 4.30 (2
# degrees of freedom) and a +1/2 deviation of the logits went unseen; 8 seeds give t = 2.36 and sqrt(8/3) smaller
# standard errors: the interval is about 3 times narrower (measurements: docs/predictions.md, "Coordinate check").
DEFAULT_SEEDS = 8
IDENTICALLY_ZERO = "identically zero at every size (e.g. a zero-initialised readout at init): nothing to fit"
PARTLY_ZERO = "zero at some sizes and not at others: no log-log slope"
ESTIMATOR = "slope of log seed-mean RMS against log size (joint jackknife over seeds)"
# The slope of a site whose RMS is fixed by construction (a normalised nGPT branch, an RMS-normalised stream) is
# float32 rounding: its local slopes agree to ~1e-7, so the derived band is ~0 and any interval that misses the
# expected exponent by 1e-7 would read as refuted. The RMS is recorded in float32 (relative resolution ~1e-7 per
# value, ~1e-6 after the mean over a probe batch), and over a size range of one octave or more that is a slope
# resolution below 1e-5: the band is never narrower than this (printed as its source when it applies).
SLOPE_RESOLUTION = 1e-5


def site_rms(ds: xr.Dataset, change: bool) -> xr.DataArray:
    """RMS per (axis, seed, step, site) of every coordinate-check site: block sites averaged over layers (along L:
    at the last block), then the embedding output and the logits. change: the RMS of the change since step 0
    instead of the value."""
    for name in ("coord_rms", "io_rms"):
        if name not in ds:
            raise ValueError(f"the dataset has no {name}: record it with `dmft-probe coord` (probes on)")
    block = ds["coord_update_rms" if change else "coord_rms"]
    if "L" in block.dims:
        # along L compare the same relative depth: the last block of each model (layer L-1); a mean over layers
        # would mix depth profiles of different resolution (a Riemann sum whose 1/L error reads as a slope)
        block = xr.concat(
            [block.sel(L=v).dropna("layer", how="all").isel(layer=-1, drop=True) for v in block.L.values], dim="L"
        )
    else:
        block = block.mean("layer", skipna=True)
    io = ds["io_update_rms" if change else "io_rms"].rename(io_site="site")
    return xr.concat([io.sel(site=["embed"]), block, io.sel(site=["logits"])], dim="site")


def trend(v: Verdict) -> str:
    """ "flat" (the interval inside [-band, band]), "grows" (above +band), "shrinks" (below -band), "unresolved"
    (none of these: the interval straddles an edge of the band), or "not measured"."""
    if v.outcome == NOT_MEASURED or not (v.lo <= v.hi) or not np.isfinite(v.band):
        return "not measured"
    if -v.band <= v.lo and v.hi <= v.band:
        return "flat"
    if v.lo > v.band:
        return "grows"
    if v.hi < -v.band:
        return "shrinks"
    return "unresolved"


def _row_name(site: str, kind: str, step: int) -> str:
    return f"{site} init" if kind == "init" else f"{site} change @{step}"


def is_site_row(v: Verdict) -> bool:
    """True for a row of `coord_verdicts` (one site at one step); False for every other row of the dataset,
    the registry's "coord feature update" row of `dmft.check.check` among them (another estimator)."""
    return v.key == COORD_KEY and v.estimator == ESTIMATOR


def site_of(v: Verdict) -> str:
    """The site of a coordinate-check row ("logits", "W_q", ...)."""
    return v.row.split()[0]


def kind_of(v: Verdict) -> str:
    """ "init" or "change"."""
    return v.row.split()[1]


def step_of(v: Verdict) -> int:
    """The probe step of a row (0 for init)."""
    parts = v.row.split()
    return int(parts[2].lstrip("@")) if len(parts) > 2 else 0


def coord_row(
    site: str, kind: str, step: int, axis: str, setting: str, sizes, values, exp: CoordExpectation
) -> Verdict:
    """The Verdict of one site at one step: `slope_fit` of values (size, seed), decided against
    `coord_hypotheses(exp.exponent)` with the fit's band; not measured when the RMS is zero at some size."""
    values = np.asarray(values, float)
    hyp = coord_hypotheses(exp.exponent)
    name = _row_name(site, kind, step)
    quantity = f"RMS of {site}" + (" change since step 0" if kind == "change" else "")

    def not_measured(note: str) -> Verdict:
        """The row with no estimate: outcome NOT_MEASURED, the note saying why and the site's expectation."""
        pred, alts = hyp.regions(0.0)
        return Verdict(
            COORD_KEY,
            name,
            quantity,
            axis,
            setting,
            ESTIMATOR,
            np.nan,
            np.nan,
            np.nan,
            pred,
            alts,
            outcome=NOT_MEASURED,
            note=f"{note}; {exp.reason}",
        )

    finite = values[np.isfinite(values)]
    if finite.size == 0 or np.any(finite <= 0):
        zero = IDENTICALLY_ZERO if finite.size and not np.any(finite > 0) else PARTLY_ZERO
        return not_measured(zero if finite.size else "no finite value")
    try:
        f = slope_fit(
            sizes, values, correction=(COORD_CORRECTION, exp.exponent)
        )  # band covers a 1/n approach (docstring)
    except ValueError as e:
        return not_measured(str(e))
    band, source = f.band, f.band_source
    if not band >= SLOPE_RESOLUTION:
        band, source = SLOPE_RESOLUTION, f"float32 resolution (local slopes agree to {f.band:.1g})"
    pred, alts = hyp.regions(band)
    v = Verdict(
        COORD_KEY,
        name,
        quantity,
        axis,
        setting,
        ESTIMATOR,
        f.slope,
        f.lo,
        f.hi,
        pred,
        alts,
        band=band,
        band_source=source,
        local=f.local,
        n_sizes=f.n_sizes,
        n_seeds=f.n_seeds,
    )
    return replace(v, note=f"{trend(v)}; {exp.reason}")


def _setting(ds: xr.Dataset, a: dict) -> str:
    """ "mup/adam": the parametrization and the optimizer of the sweep."""
    try:
        opt = json.loads(ds.attrs["config"])["optim"]["name"]
    except (KeyError, ValueError, TypeError):
        return a["name"]
    return f"{a['name']}/{opt}"


def coord_verdicts(ds: xr.Dataset) -> list[Verdict]:
    """Every row of the check for a sweep dataset, as `dmft.verdict.Verdict` rows (module docstring): each site at
    init and its change at every probe step > 0; along L also the relative movement of W_Q and W_K (P8)."""
    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    if ds.sizes[axis] < 3:
        raise ValueError(f"a coordinate check needs at least 3 values of {axis}, got {ds.sizes[axis]}")
    a = read_run_attrs(ds)
    a_A, a_L, standard = a["alpha_A"], a["alpha_L"], a["standard"]
    setting = _setting(ds, a)
    sizes = ds[axis].values.astype(float)
    steps = ds.step.values.astype(int)
    rows = []
    for change in (False, True):
        rms = site_rms(ds, change).transpose(axis, "seed", "step", "site")
        for site in rms.site.values:
            exp = coord_expectation(a_A, a_L, standard, axis, str(site), change)
            for i, step in enumerate(steps):
                if (step == 0) == change:  # init rows at step 0 only; change rows at steps > 0
                    continue
                rows.append(
                    coord_row(
                        str(site),
                        "change" if change else "init",
                        int(step),
                        axis,
                        setting,
                        sizes,
                        rms.sel(site=site).isel(step=i).values,
                        exp,
                    )
                )
    if axis == "L" and "weight_movement" in ds:
        wm = ds.weight_movement.mean("layer", skipna=True).transpose(axis, "seed", "step", "weight")
        for w in ("q", "k"):
            exp = coord_expectation(a_A, a_L, standard, axis, f"W_{w}", True)
            for i, step in enumerate(steps):
                if step > 0:
                    rows.append(
                        coord_row(
                            f"W_{w}",
                            "change",
                            int(step),
                            axis,
                            setting,
                            sizes,
                            wm.sel(weight=w).isel(step=i).values,
                            exp,
                        )
                    )
    return rows


def refuted(rows: list[Verdict]) -> list[Verdict]:
    """The deviations: rows whose interval excludes the expected exponent's band."""
    return [v for v in rows if v.outcome == REFUTED]


def summary_line(rows: list[Verdict]) -> str:
    """ "VERDICT: ..." naming the refuted rows (up to 12), with the count of every outcome."""
    counts = ", ".join(f"{sum(v.outcome == o for v in rows)} {MARKS[o]} {o}" for o in OUTCOMES)
    bad = [v.row for v in refuted(rows)]
    if bad:
        return (
            f"VERDICT: {len(bad)} of {len(rows)} rows deviate from the parametrization's prediction (refuted): "
            + ", ".join(bad[:12])
            + (" ..." if len(bad) > 12 else "")
            + f" ({counts})"
        )
    return f"VERDICT: no row of {len(rows)} refuted ({counts})"


def coord_lines(rows: list[Verdict]) -> list[str]:
    """The rows as the `dmft.verdict.lines` table (hypotheses, slope [95% CI], band and outcome per row), then per
    row its trend (coordinate-check rows) or its note (the other rows of the dataset, `dmft.rows.dataset_verdicts`),
    what would decide it (underpowered rows) and its local slopes, the rule in one line, the expectation's reason
    per site and kind, and `summary_line` over every row."""
    out = lines(rows, notes=False)
    for v in rows:
        mine = is_site_row(v)
        extra = [
            t
            for t in (
                v.note.split("; ")[0] if mine else v.note,
                v.needs and f"needs: {v.needs}",
                "" if mine else v.diverged_points,
                v.local and "local slopes " + ", ".join(f"{s:+.2f}" for s in v.local),
            )
            if t
        ]
        if extra:
            out.append(f"  {v.row}: " + "; ".join(extra) if mine else f"  {v.key} {v.row}: " + "; ".join(extra))
    out.append(
        "(slope of log RMS against log size, 95% joint-jackknife CI over seeds; band: the largest distance of "
        "a local slope from the global one, plus the distance to the two-term (c/n) exponent where that lies "
        "nearer the expectation; ✓ the CI lies inside expected ± band and clears expected ± 1/2 ± "
        "band, ✗ it clears expected ± band, ? otherwise; trend: flat inside [-band, band], grows above it, "
        "shrinks below it)"
    )
    reasons: dict[tuple[str, str], Verdict] = {}
    for v in filter(is_site_row, rows):
        reasons.setdefault((site_of(v), kind_of(v)), v)
    out += [
        f"  {site} {kind}: expected {v.prediction.name} ({v.note.split('; ', 1)[-1]})"
        for (site, kind), v in reasons.items()
    ]
    out.append(summary_line(rows))
    return out


def coord_dataset(rows: list[Verdict]) -> xr.Dataset:
    """The verdict rows as an xarray Dataset (`dmft.verdict.to_dataset`) with site, kind, step and trend columns
    (empty site and kind and step -1 on the rows that are not coordinate-check rows)."""
    ds = to_dataset(rows)
    mine = [is_site_row(v) for v in rows]
    ds = ds.assign(
        site=("row_index", [site_of(v) if m else "" for v, m in zip(rows, mine)]),
        kind=("row_index", [kind_of(v) if m else "" for v, m in zip(rows, mine)]),
        step=("row_index", np.asarray([step_of(v) if m else -1 for v, m in zip(rows, mine)], np.int64)),
        trend=("row_index", [trend(v) for v in rows]),
    )
    ds.attrs["title"] = "dmft-probe coordinate check"
    return ds

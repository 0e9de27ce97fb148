"""The coordinate check (muP practice, on all three axes): slopes of every site's RMS against size, with verdicts.

Input: a sweep dataset written by `dmft-probe coord` (or `sweep`), with the swept axis (N, H or L) and `seed` as
dims and the recorder's `coord_rms` / `coord_update_rms` (per block and site), `io_rms` / `io_update_rms`
(embedding output and logits) and `weight_movement`. Along N and H each block site is averaged over layers;
along L it is read at the last block of each model (the same relative depth), so a row is one site at one step.

A row is "init" (the site's RMS at step 0) or "change" (the RMS of its change since step 0, at a step > 0). Its
expected exponent comes from `dmft.predictions.coord_expectation` (what a parametrization with a well-defined
limit must show; SP, the negative control, is held to the same and fails); the row is consistent when that
exponent lies in the 95% seed-bootstrap interval of the fitted slope widened by `TOL`. The trend word (flat /
grows / shrinks) reads the fitted slope against the same allowance.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from . import measure
from .check import run_attrs
from .fit import consistent, loglog_fit
from .predictions import coord_expectation

# Finite-size allowance on a coordinate-check slope: the flatness bound, 0.15. At 3 seeds and sizes
# 4..64 the seed-bootstrap half-width of a slope is 0.01-0.08 (measured), so 0.15 is 2-15 CI half-widths.
TOL = 0.15


@dataclass(frozen=True)
class CoordRow:
    """One verdict row. kind: "init" or "change"; step: the probe step (0 for init); expected: the predicted
    slope; slope, lo, hi: fit and 95% CI (NaN when the site is identically zero); trend: flat / grows / shrinks
    / zero."""

    site: str
    kind: str
    step: int
    expected: float
    slope: float
    lo: float
    hi: float
    trend: str
    consistent: bool
    reason: str


def site_rms(ds: xr.Dataset, change: bool) -> xr.DataArray:
    """RMS per (axis, seed, step, site) of every coordinate-check site: block sites averaged over layers (along L:
    at the last block), then the embedding output and the logits. change: the RMS of the change since step 0 instead of the value."""
    for name in ("coord_rms", "io_rms"):
        if name not in ds:
            raise ValueError(f"the dataset has no {name}: record it with `dmft-probe coord` (probes on)")
    block = ds["coord_update_rms" if change else "coord_rms"]
    if "L" in block.dims:
        # along L compare the same relative depth: the last block of each model (layer L-1); a mean over layers
        # would mix depth profiles of different resolution (a Riemann sum whose 1/L error reads as a slope)
        block = xr.concat([block.sel(L=v).dropna("layer", how="all").isel(layer=-1, drop=True) for v in block.L.values],
                          dim="L")
    else:
        block = block.mean("layer", skipna=True)
    io = ds["io_update_rms" if change else "io_rms"].rename(io_site="site")
    return xr.concat([io.sel(site=["embed"]), block, io.sel(site=["logits"])], dim="site")


def _trend(slope: float) -> str:
    if not np.isfinite(slope):
        return "zero"
    return "grows" if slope > TOL else "shrinks" if slope < -TOL else "flat"


def _row(site: str, kind: str, step: int, sizes, values, exp) -> CoordRow:
    values = np.asarray(values, float)
    if not np.all(np.nan_to_num(values, nan=1.0) > 0):
        # identically zero (logits at init with a zero-initialised readout): nothing to fit, nothing wrong
        ok = not np.any(np.nan_to_num(values) > 0)
        return CoordRow(site, kind, step, exp.exponent, np.nan, np.nan, np.nan, "zero", ok,
                        exp.reason + "; identically zero here" if ok else exp.reason)
    fit = loglog_fit(sizes, values)
    ok = consistent(fit, exp.exponent, TOL)
    return CoordRow(site, kind, step, exp.exponent, fit.slope, fit.lo, fit.hi, _trend(fit.slope), ok, exp.reason)


def coord_verdicts(ds: xr.Dataset) -> list[CoordRow]:
    """Every row of the check for a sweep dataset: each site at init and its change at every probe step > 0;
    along L also the relative movement of W_Q and W_K (P8)."""
    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    if ds.sizes[axis] < 3:
        raise ValueError(f"a coordinate check needs at least 3 values of {axis}, got {ds.sizes[axis]}")
    a = run_attrs(ds)
    a_A, a_L, standard = a["alpha_A"], a["alpha_L"], a["standard"]
    sizes = ds[axis].values.astype(float)
    steps = ds.step.values.astype(int)
    rows = []
    for change in (False, True):
        rms = site_rms(ds, change).transpose(axis, "seed", "step", "site")
        for site in rms.site.values:
            exp = coord_expectation(a_A, a_L, standard, axis, str(site), change)
            for i, step in enumerate(steps):
                if (step == 0) == change:      # init rows at step 0 only; change rows at steps > 0
                    continue
                rows.append(_row(str(site), "change" if change else "init", int(step), sizes,
                                 rms.sel(site=site).isel(step=i).values, exp))
    if axis == "L" and "weight_movement" in ds:
        wm = ds.weight_movement.mean("layer", skipna=True).transpose(axis, "seed", "step", "weight")
        for w in ("q", "k"):
            exp = coord_expectation(a_A, a_L, standard, axis, f"W_{w}", True)
            for i, step in enumerate(steps):
                if step > 0:
                    rows.append(_row(f"W_{w}", "change", int(step), sizes, wm.sel(weight=w).isel(step=i).values, exp))
    return rows


def coord_ok(rows: list[CoordRow]) -> bool:
    """True when every row is consistent with its expectation."""
    return all(r.consistent for r in rows)


def _fmt(e: float) -> str:
    return f"{e:+.2g}"


def coord_lines(rows: list[CoordRow]) -> list[str]:
    """A table with one line per site: the init slope with its 95% CI, trend, expected exponent and mark; the
    change slope at every probe step ('!' where it misses its expectation); the last step's slope with its CI,
    trend, expectation and mark. Then the one-line reasons, then a one-line verdict."""
    sites = list(dict.fromkeys(r.site for r in rows))
    steps = sorted({r.step for r in rows if r.kind == "change"})
    last = f"change @{steps[-1]}: slope [95% CI]" if steps else "change"
    head = ["site", "init: slope [95% CI]", "exp", ""] + [f"@{s}" for s in steps] + [last, "exp", ""]

    def cell(r: CoordRow) -> list[str]:
        return [f"{r.slope:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}] {r.trend}", _fmt(r.expected), "ok" if r.consistent else "NO"]

    table = []
    for site in sites:
        init = [r for r in rows if r.site == site and r.kind == "init"]
        ch = {r.step: r for r in rows if r.site == site and r.kind == "change"}
        line = [site] + (cell(init[0]) if init else ["", "", ""])
        line += [f"{ch[s].slope:+.2f}{'' if ch[s].consistent else '!'}" if s in ch else "" for s in steps]
        line += cell(ch[steps[-1]]) if steps and steps[-1] in ch else ["", "", ""]
        table.append(line)
    widths = [max(len(t[i]) for t in [head, *table]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths)), *(fmt.format(*t) for t in table)]
    out.append("(slope of log RMS against log size; @t: the change since step 0 at step t, '!' where it misses its "
               f"expectation; ok: the expectation lies in the 95% seed-bootstrap CI widened by {TOL:g})")
    reasons: dict[tuple[str, str], CoordRow] = {}
    for r in rows:
        reasons.setdefault((r.site, r.kind), r)
    out += [f"  {site} {kind}: expected {_fmt(r.expected)} ({r.reason})" for (site, kind), r in reasons.items()]
    bad = [f"{r.site} {r.kind}" + (f"@{r.step}" if r.kind == "change" else "") for r in rows if not r.consistent]
    if bad:
        out.append(f"VERDICT: {len(bad)} of {len(rows)} rows deviate from the parametrization's prediction: "
                   + ", ".join(bad[:12]) + (" ..." if len(bad) > 12 else ""))
    else:
        out.append(f"VERDICT: all {len(rows)} rows consistent with the parametrization's prediction")
    return out


def coord_dataset(rows: list[CoordRow]) -> xr.Dataset:
    """The verdict rows as an xarray Dataset along `row`."""
    data = {
        "site": ("row", [r.site for r in rows]), "kind": ("row", [r.kind for r in rows]),
        "step": ("row", np.asarray([r.step for r in rows], np.int64)),
        "expected": ("row", np.asarray([r.expected for r in rows])),
        "slope": ("row", np.asarray([r.slope for r in rows])), "lo": ("row", np.asarray([r.lo for r in rows])),
        "hi": ("row", np.asarray([r.hi for r in rows])), "trend": ("row", [r.trend for r in rows]),
        "consistent": ("row", np.asarray([r.consistent for r in rows], np.int8)),
    }
    return xr.Dataset(data, coords={"row": np.arange(len(rows))}, attrs={"title": "dmft-probe coordinate check",
                                                                        "tol": TOL})

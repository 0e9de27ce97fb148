"""Diverged points of a sweep or run dataset: which (size, seed) points stopped with a NaN/inf loss or probe, and
at which step, read from the `status` and `diverged_at` data variables (`probes.experiment.dataset.status_vars`; dims
(axis, seed) in a sweep), or from the `status` / `diverged_at` attributes of a single run.

Datasets written before these variables existed carry no per-point status; they read as "nothing diverged" (a
diverged point of such a sweep is then only visible as NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

DIVERGED = 1  # the status code of a diverged run (probes.experiment.dataset.STATUS_CODES)


@dataclass(frozen=True)
class Diverged:
    """One diverged point: its size along the swept axis (None for a single run), its seed and the optimizer
    step whose weights first gave a NaN/inf loss or probe (-1 if unknown)."""

    size: float | None
    seed: int
    step: int


def _status_codes(ds: xr.Dataset) -> xr.DataArray | None:
    if "status" in ds.data_vars:
        return ds["status"]
    status = ds.attrs.get("status")
    if status is None or any(d in ds.dims for d in ("N", "H", "L", "seed")):
        return None  # an old sweep: conflicting per-run attrs were dropped when it was combined
    return xr.DataArray(np.int8(DIVERGED if status == "diverged" else 0))


def diverged_mask(ds: xr.Dataset) -> xr.DataArray | None:
    """Boolean DataArray, True where a point diverged (dims of `status`: (axis, seed) in a sweep, () for a run);
    None when the dataset records no status."""
    codes = _status_codes(ds)
    return None if codes is None else codes == DIVERGED


def diverged_points(ds: xr.Dataset, axis: str | None = None) -> list[Diverged]:
    """Every diverged point of `ds`, sorted by size and seed (empty when none diverged or no status is
    recorded). axis: the swept axis (None: a single run, or the one of N, H, L that is a dimension)."""
    mask = diverged_mask(ds)
    if mask is None or not bool(mask.any()):
        return []
    if axis is None:
        axis = next((a for a in ("N", "H", "L") if a in mask.dims), None)
    steps = ds["diverged_at"] if "diverged_at" in ds.data_vars else xr.full_like(mask, -1, dtype=np.int64)
    if "diverged_at" not in ds.data_vars and "diverged_at" in ds.attrs:
        steps = xr.DataArray(np.int64(ds.attrs["diverged_at"]))
    extra = [d for d in mask.dims if d not in (axis, "seed")]
    if extra:
        raise ValueError(f"status has unexpected dims {extra}")
    out = []
    for idx in zip(*np.nonzero(np.atleast_1d(mask.values))) if mask.ndim else [()]:
        sel = dict(zip(mask.dims, idx))
        point = mask.isel(sel)
        size = float(point[axis]) if axis is not None and axis in point.coords else None
        seed = int(point["seed"]) if "seed" in point.coords else int(ds.coords.get("seed", 0))
        step = int(steps.isel({d: i for d, i in sel.items() if d in steps.dims}))
        out.append(Diverged(size, seed, step))
    return sorted(out, key=lambda p: (p.size if p.size is not None else 0.0, p.seed))


def _ranges(values: list[int]) -> str:
    """[0, 1, 2, 3, 5] -> '0-3, 5'."""
    values = sorted(set(values))
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(f"{start}" if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)


def _steps(points: list[Diverged]) -> str:
    known = sorted({p.step for p in points if p.step >= 0})
    if not known:
        return "at an unrecorded step"
    return f"at step {known[0]}" if len(known) == 1 else f"at steps {known[0]}-{known[-1]}"


def describe(points: list[Diverged], axis: str | None) -> str:
    """One phrase naming the diverged points: 'N=32, 64 diverged (seeds 0-3 at steps 12-40)', or per size when
    the sizes lost different seeds ('N=32 (seed 1 at step 12), 64 (seeds 0-3 at steps 9-14) diverged'); ''
    when there are none."""
    if not points:
        return ""
    if axis is None or points[0].size is None:
        seeds = [p.seed for p in points]
        return f"seed{'s' if len(seeds) > 1 else ''} {_ranges(seeds)} diverged ({_steps(points)})"
    by_size: dict[float | None, list[Diverged]] = {}
    for p in points:
        by_size.setdefault(p.size, []).append(p)
    seed_sets = {tuple(sorted(p.seed for p in ps)) for ps in by_size.values()}
    sizes = ", ".join(f"{s:g}" for s in by_size)

    def seeds_of(ps: list[Diverged]) -> str:
        s = [p.seed for p in ps]
        return f"seed{'s' if len(s) > 1 else ''} {_ranges(s)}"

    if len(seed_sets) == 1:
        return f"{axis}={sizes} diverged ({seeds_of(next(iter(by_size.values())))} {_steps(points)})"
    per = ", ".join(f"{s:g} ({seeds_of(ps)} {_steps(ps)})" for s, ps in by_size.items())
    return f"{axis}={per} diverged"


def mask_values(sizes, values, points: list[Diverged], seeds) -> tuple[np.ndarray, int]:
    """values (n_sizes, n_seeds) with the diverged points set to NaN, and how many were set. sizes: the rows'
    sizes; seeds: the sweep's seed coordinate (the columns)."""
    values = np.array(values, dtype=float, copy=True)
    if values.ndim == 1:
        values = values[:, None]
    sizes = np.asarray(sizes, dtype=float)
    seeds = list(np.atleast_1d(seeds).astype(int))
    n = 0
    for p in points:
        rows = np.flatnonzero(np.isclose(sizes, p.size)) if p.size is not None else np.arange(len(sizes))
        if p.seed not in seeds or values.shape[1] != len(seeds):
            continue
        for r in rows:
            values[r, seeds.index(p.seed)] = np.nan
            n += 1
    return values, n

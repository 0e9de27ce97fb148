"""A grid of runs along one axis (N, H or L) and seeds, on this machine, merged into one dataset.

Each grid point is written as its own run file in `<out>.parts/` the moment it finishes, so an interrupted
sweep loses at most the point in flight and a rerun skips every point already written (resumable). The merged
dataset has the axis and `seed` as dimensions (`probes.dataset.combine_runs`).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import xarray as xr

from .dataset import DatasetError, combine_runs, load, run_dataset, save
from .ensemble import ENSEMBLE_MODES, train_seeds
from .run import RunConfig


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def point_path(out: Path, axis: str, value: int, seed: int) -> Path:
    return parts_dir(out) / f"{axis}{value}-seed{seed}.nc"


def check_grid(axis: str, values: list[int], seeds: int, ensemble: str = "auto") -> None:
    """ValueError naming the option when the grid cannot give a slope or the ensemble mode is unknown (before
    any work is spent)."""
    if ensemble not in ENSEMBLE_MODES:
        raise ValueError(f"--ensemble must be one of {', '.join(ENSEMBLE_MODES)}, got {ensemble!r}")
    if axis not in ("N", "H", "L"):
        raise ValueError(f"--axis must be N, H or L, got {axis!r}")
    if len(values) < 3:
        raise ValueError(f"--values needs at least 3 sizes for a slope, got {len(values)}")
    if any(v < 1 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"--values must be distinct positive integers, got {values}")
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")


def run_sweep(base: RunConfig, axis: str, values: list[int], seeds: int, out: Path, init_only: bool = False,
              on_point: Callable[[str], None] | None = None, ensemble: str = "auto") -> xr.Dataset:
    """Run every (value, seed) point not yet written, then merge all points into `out`; returns the dataset.

    init_only: no training, probes at initialisation only (steps = 0). on_point(msg) reports progress.
    ensemble: "auto" trains the missing seeds of a size together as one batched model (probes.ensemble),
    "off" one after another; the datasets are the same either way (to float tolerance).
    """
    check_grid(axis, values, seeds, ensemble)
    parts_dir(out).mkdir(parents=True, exist_ok=True)
    per_value = []
    for v in sorted(values):
        done: dict[int, xr.Dataset] = {}
        for s in range(seeds):
            path = point_path(out, axis, v, s)
            if path.exists():
                try:
                    done[s] = load(path)
                    if on_point:
                        on_point(f"{axis}={v} seed={s}: already done, skipped")
                except DatasetError:
                    pass           # a corrupt leftover: run the point again
        todo = [s for s in range(seeds) if s not in done]
        if todo:
            cfg = replace(base, steps=0 if init_only else base.steps, model=replace(base.model, **{axis: v}, axis=axis))
            for s, result in zip(todo, train_seeds(cfg, [base.seed + s for s in todo], ensemble)):
                done[s] = run_dataset(result)
                save(done[s], point_path(out, axis, v, s))
                if on_point:
                    how = f", ensemble of {result.extra['ensemble']}" if result.extra.get("ensemble") else ""
                    on_point(f"{axis}={v} seed={s}: {result.status} ({result.wall_s:.1f} s{how})")
        per_value.append(combine_runs([done[s] for s in range(seeds)], "seed"))
    merged = combine_runs(per_value, axis)
    merged.attrs["init_only"] = int(init_only)
    save(merged, out)
    return merged


def coord_config(base: RunConfig, steps: list[int]) -> RunConfig:
    """The run config of a coordinate check: train max(steps) steps with probes exactly at `steps` (and 0)."""
    if not steps or any(s < 0 for s in steps):
        raise ValueError(f"--steps must be a list of non-negative integers, got {steps}")
    return replace(base, steps=max(steps), probes=replace(base.probes, enabled=True, schedule="at",
                                                          at=tuple(sorted(set(steps)))))

"""A grid of runs along one axis (N, H or L) and seeds, merged into one dataset: resumable, on any executor.

The grid lives in a store (`probes.store`: `<out>.parts/` with a manifest and one finished dataset per point). The
points still to do are grouped into units: with `ensemble="auto"` the missing seeds of one size, split into seed
ensembles that fit in memory (`probes.ensemble.members_that_fit`), with `"off"` one seed each. An executor
(`probes.executors`: this process, a local process pool, Ray) runs `run_unit` on every unit; the worker trains the
unit and writes each point's part (atomically, `probes.dataset.save`), and this process marks the points in the
manifest: running when handed out, done / diverged / failed (with the message) when the unit comes back. A failed
unit does not stop the others; at the end `SweepFailed` says how many points failed and nothing is merged. When
every point is finished, the parts are merged (`probes.dataset.combine_runs`: the axis and `seed` become
dimensions) into `out`, with the seed-to-seed variances `output_seed_var` and `loss_seed_var` (dims axis, step;
`probes.dataset.seed_variances`) computed from the merged parts whenever there are 2 or more seeds.

Rerunning the same sweep resumes it: finished points are skipped, the rest are redone. The grouping into units does
not depend on the executor or the number of workers, so on the CPU the merged dataset is the same bit for bit
whatever runs it (at the same number of torch threads per run).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import xarray as xr

from .config import check_fits
from .dataset import run_dataset, save, with_seed_variances
from .ensemble import ENSEMBLE_MODES, members_that_fit, train_seeds
from .executors import Executor, InProcess, JobError
from .run import RunConfig
from .store import SweepStore, parts_dir, point_name

__all__ = ["Sweep", "SweepFailed", "Unit", "PointResult", "check_grid", "coord_config", "open_sweep", "parts_dir",
           "plan_units", "point_path", "run_sweep", "run_unit", "value_config"]


def point_path(out: Path, axis: str, value: int, seed: int) -> Path:
    """The part file of the point (value, seed) of the sweep whose merged output is `out`."""
    return parts_dir(out) / f"{point_name(axis, value, seed)}.nc"


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


def value_config(cfg: RunConfig, axis: str, value: int) -> RunConfig:
    """The run config of the grid's size `value` on `axis` (ValueError if that size is not a valid model)."""
    return replace(cfg, model=replace(cfg.model, **{axis: value}, axis=axis))


@dataclass(frozen=True)
class Unit:
    """One piece of work for a worker: seeds of one size, trained together (a seed ensemble) or alone, and the
    part file each seed's dataset goes to. Plain data, so it pickles to any worker."""

    cfg: RunConfig
    axis: str
    value: int
    seeds: tuple[int, ...]
    parts: tuple[str, ...]
    ensemble: str


@dataclass(frozen=True)
class PointResult:
    """What a worker reports of one point whose part it wrote: status "ok" or "diverged", wall time (s) and the
    ensemble size it trained in (0: alone)."""

    seed: int
    status: str
    wall_s: float
    ensemble: int


def run_unit(unit: Unit) -> list[PointResult]:
    """Train the unit's seeds (`probes.ensemble.train_seeds`) and save each seed's dataset to its part
    (atomically); returns one PointResult per seed, in the unit's order. Runs in a worker."""
    results = train_seeds(unit.cfg, list(unit.seeds), unit.ensemble)
    out = []
    for result, path in zip(results, unit.parts):
        save(run_dataset(result), path)
        out.append(PointResult(int(result.config.seed), result.status, float(result.wall_s),
                               int(result.extra.get("ensemble") or 0)))
    return out


def plan_units(cfg: RunConfig, axis: str, todo: dict[int, list[int]], ensemble: str,
               part: Callable[[int, int], Path]) -> list[Unit]:
    """The units of the points to do ({value: [seeds]}): per value, the seeds in groups that fit in memory
    (ensemble "auto") or one by one ("off"); sizes in increasing order. part(value, seed) is the part file."""
    units = []
    for v in sorted(todo):
        seeds = sorted(todo[v])
        if not seeds:
            continue
        vcfg = value_config(cfg, axis, v)
        size = 1 if ensemble == "off" else members_that_fit(vcfg, len(seeds))
        for i in range(0, len(seeds), size):
            group = tuple(seeds[i:i + size])
            units.append(Unit(vcfg, axis, v, group, tuple(str(part(v, s)) for s in group), ensemble))
    return units


class SweepFailed(RuntimeError):
    """Some points failed (their messages are in the manifest); the merged dataset was not written."""


class Sweep:
    """A sweep with its store open: `units` still to do; `run(executor)` does them and merges. Close it (or use
    `with`) to release the store."""

    def __init__(self, store: SweepStore, cfg: RunConfig, axis: str, values: list[int], seeds: list[int],
                 out: Path, init_only: bool, ensemble: str):
        self.store, self.cfg, self.axis, self.out = store, cfg, axis, out
        self.values, self.seeds, self.init_only = sorted(values), sorted(seeds), init_only
        todo = {v: [s for s in self.seeds if store.status(v, s) not in ("done", "diverged")] for v in self.values}
        self.done = [(v, s) for v in self.values for s in self.seeds if s not in todo[v]]
        self.units = plan_units(cfg, axis, todo, ensemble, store.part_path)

    @property
    def n_points(self) -> int:
        return len(self.values) * len(self.seeds)

    def run(self, executor: Executor | None = None, on_point: Callable[[str], None] | None = None) -> xr.Dataset:
        """Do every unit on `executor` (default: this process), record each point as it comes back, then merge
        all points into `out` and return the merged dataset. SweepFailed (after every unit has had its turn) when
        any point failed; nothing is merged then."""
        say = on_point or (lambda msg: None)
        ax = self.axis
        for v, s in self.done:
            say(f"{ax}={v} seed={s}: already done, skipped")
        failures: list[str] = []

        def started(unit: Unit) -> None:
            self.store.mark([(unit.value, s) for s in unit.seeds], "running")

        def finished(unit: Unit, results: list[PointResult] | None, error: JobError | None) -> None:
            points = [(unit.value, s) for s in unit.seeds]
            if error is not None:
                self.store.mark(points, "failed", error.line, error.detail or None)
                for v, s in points:
                    failures.append(f"{ax}={v} seed={s}: {error.line}")
                    say(f"{ax}={v} seed={s}: failed: {error.line}")
                return
            bad = self.store.record([(unit.value, r.seed, "diverged" if r.status == "diverged" else "done")
                                     for r in results])
            bad_seeds = {s: msg for _, s, msg in bad}
            for r in results:
                if r.seed in bad_seeds:
                    failures.append(f"{ax}={unit.value} seed={r.seed}: {bad_seeds[r.seed]}")
                    say(f"{ax}={unit.value} seed={r.seed}: failed: {bad_seeds[r.seed]}")
                    continue
                how = f", ensemble of {r.ensemble}" if r.ensemble else ""
                say(f"{ax}={unit.value} seed={r.seed}: {r.status} ({r.wall_s:.1f} s{how})")

        (executor or InProcess()).run(run_unit, self.units, started, finished)
        if failures:
            raise SweepFailed(f"{len(failures)} of {self.n_points} points failed (first: {failures[0]}); "
                              f"nothing was merged; messages in {self.store.folder / 'manifest.json'}; "
                              "rerun the same command to redo them")
        # seed variances from the parts of every point, so a resumed or extended sweep recomputes them
        merged = with_seed_variances(self.store.combine(self.values, self.seeds), self.axis)
        merged.attrs["init_only"] = int(self.init_only)
        save(merged, self.out)
        return merged

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Sweep":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_sweep(base: RunConfig, axis: str, values: list[int], seeds: int, out: Path, init_only: bool = False,
               ensemble: str = "auto", on_point: Callable[[str], None] | None = None) -> Sweep:
    """Check the grid, open (or create) its store and plan the units still to do; returns the open Sweep.
    ValueError (one line, nothing trained) for a bad grid, a size that is not a valid model, or a store made with
    other settings. Seeds are base.seed + 0..seeds-1. on_point(msg) gets the warnings (corrupt parts)."""
    check_grid(axis, values, seeds, ensemble)
    cfg = replace(base, steps=0 if init_only else base.steps, model=replace(base.model, axis=axis))
    for v in values:                                 # every size is a valid model before anything is written
        try:
            value_config(cfg, axis, v).model.shapes()
        except ValueError as e:
            raise ValueError(f"--values: {axis}={v} is not a valid model ({str(e).splitlines()[0]})") from None
    seed_list = [base.seed + s for s in range(seeds)]
    store = SweepStore.open(out, cfg, axis, values, seed_list, init_only, warn=on_point)
    try:
        return Sweep(store, cfg, axis, values, seed_list, Path(out), init_only, ensemble)
    except BaseException:
        store.close()
        raise


def check_grid_fits(base: RunConfig, axis: str, values: list[int], init_only: bool = False) -> None:
    """ValueError naming the sizes unless every grid point fits in memory and gives usable numbers
    (`probes.config.check_fits`); nothing is allocated, so it runs before any work."""
    for v in values:
        check_fits(replace(base, steps=0 if init_only else base.steps, model=replace(base.model, **{axis: v})))


def run_sweep(base: RunConfig, axis: str, values: list[int], seeds: int, out: Path, init_only: bool = False,
              on_point: Callable[[str], None] | None = None, ensemble: str = "auto",
              executor: Executor | None = None) -> xr.Dataset:
    """Run every (value, seed) point not yet finished, then merge all points into `out`; returns the dataset.

    init_only: no training, probes at initialisation only (steps = 0). on_point(msg) reports progress and
    warnings. ensemble: "auto" trains the missing seeds of a size together as batched models (probes.ensemble),
    "off" one after another; the datasets are the same either way (to float tolerance). executor: where the
    units run (probes.executors; default this process). SweepFailed when points failed.
    """
    check_grid_fits(base, axis, values, init_only)
    with open_sweep(base, axis, values, seeds, out, init_only, ensemble, on_point) as sweep:
        return sweep.run(executor, on_point)


def coord_config(base: RunConfig, steps: list[int]) -> RunConfig:
    """The run config of a coordinate check: train max(steps) steps with probes exactly at `steps` (and 0)."""
    if not steps or any(s < 0 for s in steps):
        raise ValueError(f"--steps must be a list of non-negative integers, got {steps}")
    return replace(base, steps=max(steps), probes=replace(base.probes, enabled=True, schedule="at",
                                                          at=tuple(sorted(set(steps)))))

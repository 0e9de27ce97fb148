"""A grid of runs along one axis (N, H or L) and seeds, merged into one dataset: resumable, on any executor.

The grid lives in a store (`probes.grid.store`: `<out>.parts/` with a manifest and one finished dataset per point). The
points still to do are grouped into units, one seed group each: with `ensemble="auto"` the missing seeds of one
size, in groups by the config-only rule of `probes.experiment.ensemble.plan_groups` (the same on every machine), with `"off"`
one seed each. A point that was handed out before (a killed sweep, a corrupt or missing part) is redone in the group
recorded for it in the manifest: the whole group trains again, as the same ensemble, and only the parts that need
it are written, so the redone point equals its first run bit for bit. An executor (`probes.grid.executors`: this process,
a local process pool, Ray) runs `run_unit` on every unit; the worker trains the unit and writes its points' parts
(atomically, `probes.experiment.dataset.save`), and this process marks the points in the manifest: running (with their group)
when handed out, done / diverged / failed (with the message) when the unit comes back. A failed unit does not stop
the others; at the end `SweepFailed` says how many points failed and nothing is merged. When every point is
finished, the parts are merged (`probes.experiment.dataset.combine_runs`: the axis and `seed` become dimensions) into `out`,
with the seed-to-seed variances `output_seed_var` and `loss_seed_var` (dims axis, step;
`probes.experiment.dataset.seed_variances`) computed from the merged parts whenever there are 2 or more seeds, and the merged
grid is recorded in the manifest (a later grid that leaves part of it out is refused unless `overwrite`).

Rerunning the same sweep resumes it: finished points are skipped, the rest are redone. The grouping into units does
not depend on the executor, the number of workers or the machine's free memory (which only makes groups smaller
where a machine cannot hold them, with a warning), so on the CPU the merged dataset is the same bit for bit
whatever runs it (at the same number of torch threads per run).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import xarray as xr

from probes.experiment.config import check_fits
from probes.experiment.dataset import run_dataset, save, with_seed_variances
from probes.experiment.ensemble import plan_groups, resolve_mode, train_group
from probes.experiment.progress import Progress
from probes.experiment.run import RunConfig
from probes.grid.executors import Executor, InProcess, UnitError
from probes.grid.manifest import GROUP_ATTR, MODE_ATTR, SWEEP_CONFIG_ATTR, comparable_config, file_sha256, point_name
from probes.grid.store import SweepStore, parts_dir
from probes.hooks.recorder import MAX_PROBE_STEPS, MAX_STEP

__all__ = [
    "MAX_POINTS",
    "MAX_SEEDS",
    "MAX_VALUES",
    "Sweep",
    "SweepFailed",
    "Unit",
    "PointResult",
    "check_grid",
    "check_values",
    "coord_config",
    "open_sweep",
    "parts_dir",
    "plan_units",
    "point_path",
    "run_sweep",
    "run_sweeps",
    "run_unit",
    "sweep_config",
    "value_config",
]

MAX_SEEDS = 1000  # seeds per size of one sweep
MAX_VALUES = 1000  # sizes of one sweep
MAX_POINTS = 100_000  # sizes x seeds of one sweep (the manifest is rewritten as points finish)


def point_path(out: Path, axis: str, value: int, seed: int) -> Path:
    """The part file of the point (value, seed) of the sweep whose merged output is `out`."""
    return parts_dir(out) / f"{point_name(axis, value, seed)}.nc"


def check_grid(axis: str, values: list[int], seeds: int, ensemble: str | None = None) -> None:
    """ValueError naming the option when the grid cannot give a slope, is larger than MAX_VALUES sizes, MAX_SEEDS
    seeds or MAX_POINTS points, or the ensemble mode (or DMFT_PROBE_ENSEMBLE, when `ensemble` is None) is unknown
    (before any work is spent)."""
    resolve_mode(ensemble)
    if axis not in ("N", "H", "L"):
        raise ValueError(f"--axis must be N, H or L, got {axis!r}"[:200])
    if len(values) > MAX_VALUES:
        raise ValueError(f"--values: at most {MAX_VALUES} sizes, got {len(values)}")
    if len(values) < 3:
        raise ValueError(f"--values needs at least 3 sizes for a slope, got {len(values)}")
    if any(v < 1 for v in values) or len(set(values)) != len(values):
        raise ValueError(f"--values must be distinct positive integers, got {values}"[:200])
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if seeds > MAX_SEEDS:
        raise ValueError(f"--seeds must be <= {MAX_SEEDS}, got {seeds}")
    if len(values) * seeds > MAX_POINTS:
        raise ValueError(f"--values x --seeds: at most {MAX_POINTS} grid points, got {len(values)} x {seeds}")


def value_config(cfg: RunConfig, axis: str, value: int) -> RunConfig:
    """The run config of the grid's size `value` on `axis` (ValueError if that size is not a valid model)."""
    return replace(cfg, model=replace(cfg.model, **{axis: value}, axis=axis))


def check_values(cfg: RunConfig, axis: str, values: list[int]) -> None:
    """ValueError naming --values and the size unless every size on `axis` is a valid model of `cfg`."""
    for v in values:
        try:
            value_config(cfg, axis, v).model.shapes()
        except ValueError as e:
            raise ValueError(f"--values: {axis}={v} is not a valid model ({str(e).splitlines()[0]})"[:300]) from None


@dataclass(frozen=True)
class Unit:
    """One piece of work for a worker, the one name for a unit of grid work (what an executor runs,
    `probes.grid.executors`; sweeps, coordinate checks, lr grids and variant tables all run them): a seed group
    of one size, trained together (a seed ensemble) or alone (one seed), and the part file each seed's dataset
    goes to ("" where the seed's part is finished and is not written again). Plain data, so it pickles to any
    worker."""

    cfg: RunConfig
    axis: str
    value: int
    seeds: tuple[int, ...]
    parts: tuple[str, ...]
    ensemble: str

    @property
    def written(self) -> tuple[int, ...]:
        """The seeds whose parts the unit writes."""
        return tuple(s for s, p in zip(self.seeds, self.parts) if p)


@dataclass(frozen=True)
class PointResult:
    """What a worker reports of one point whose part it wrote: status "ok" or "diverged", wall time (s) and the
    ensemble size it trained in (0: alone). `written`: the dataset the worker saved (with its checksums) and the
    sha256 of the file it wrote, for the store of the same process (`SweepStore.record` takes the dataset as it is
    when the file still has that sha256, instead of reading the file back: about 0.5 s a part with h5netcdf). It
    is never pickled: a result from another process or machine arrives without it, and the store reads the file."""

    seed: int
    status: str
    wall_s: float
    ensemble: int
    written: tuple[xr.Dataset, str] | None = field(default=None, compare=False, repr=False)

    def __reduce__(self):
        return (PointResult, (self.seed, self.status, self.wall_s, self.ensemble))


def run_unit(unit: Unit) -> list[PointResult]:
    """Train the unit's seed group (`probes.experiment.ensemble.train_group`) and save the dataset of each seed that has a
    part (atomically), with its group, the ensemble mode and the sweep's comparable config as attrs
    (`probes.grid.store`); returns one PointResult per part written,
    in the unit's order. Runs in a worker."""
    results = train_group(unit.cfg, unit.seeds)
    out = []
    for result, path in zip(results, unit.parts):
        if not path:
            continue
        ds = run_dataset(result)
        ds.attrs[GROUP_ATTR] = json.dumps(list(unit.seeds))
        ds.attrs[MODE_ATTR] = unit.ensemble
        ds.attrs[SWEEP_CONFIG_ATTR] = json.dumps(comparable_config(unit.cfg, unit.axis), sort_keys=True)
        save(ds, path)  # writes a copy with checksums; `ds` stays as `load` returns a file (no checksum attrs)
        out.append(
            PointResult(
                int(result.config.seed),
                result.status,
                float(result.wall_s),
                int(result.extra.get("ensemble") or 0),
                written=(ds, file_sha256(Path(path))),
            )
        )
    return out


def plan_units(
    cfg: RunConfig,
    axis: str,
    todo: dict[int, list[int]],
    ensemble: str,
    part: Callable[[int, int], Path],
    group_of: Callable[[int, int], tuple[int, ...] | None] | None = None,
    finished: Callable[[int, int], bool] | None = None,
    warn: Callable[[str], None] | None = None,
) -> list[Unit]:
    """The units of the points to do ({value: [seeds]}), sizes in increasing order: per value, the recorded group
    of each point that has one (group_of(value, seed)), where the points of the group that are `finished` are
    retrained but not written; the other seeds in the groups of `probes.experiment.ensemble.plan_groups` (ensemble "auto":
    a config-only rule; "off": one by one; warn gets its memory warning). part(value, seed) is the part file."""
    group_of = group_of or (lambda v, s: None)
    finished = finished or (lambda v, s: False)
    units = []
    for v in sorted(todo):
        seeds = sorted(todo[v])
        if not seeds:
            continue
        vcfg = value_config(cfg, axis, v)
        groups: dict[tuple[int, ...], None] = {}  # recorded groups, once each, in order
        loose = []
        for s in seeds:
            g = group_of(v, s)
            if g is None:
                loose.append(s)
            else:
                groups[g] = None
        todo_v = set(seeds)
        for g in sorted([*groups, *(plan_groups(vcfg, loose, ensemble, warn) if loose else [])], key=min):
            parts = tuple(str(part(v, s)) if s in todo_v or not finished(v, s) else "" for s in g)
            units.append(Unit(vcfg, axis, v, tuple(g), parts, ensemble))
    return units


class SweepFailed(RuntimeError):
    """Some points failed (their messages are in the manifest); the merged dataset was not written."""


class Sweep:
    """A sweep with its store open: `units` still to do; `run(executor)` does them and merges. Close it (or use
    `with`) to release the store."""

    def __init__(
        self,
        store: SweepStore,
        cfg: RunConfig,
        axis: str,
        values: list[int],
        seeds: list[int],
        out: Path,
        init_only: bool,
        warn: Callable[[str], None] | None = None,
    ):
        self.store, self.cfg, self.axis, self.out = store, cfg, axis, out
        self.values, self.seeds, self.init_only = sorted(values), sorted(seeds), init_only
        todo = {v: [s for s in self.seeds if not store.finished(v, s)] for v in self.values}
        self.done = [(v, s) for v in self.values for s in self.seeds if s not in todo[v]]
        self.units = plan_units(cfg, axis, todo, store.ensemble, store.part_path, store.group, store.finished, warn)

    @property
    def n_points(self) -> int:
        return len(self.values) * len(self.seeds)

    def run(
        self,
        executor: Executor | None = None,
        on_point: Callable[[str], None] | None = None,
        progress: bool | None | Progress = None,
    ) -> xr.Dataset:
        """Do every unit on `executor` (default: this process), record each point as it comes back, then merge
        all points into `out`, record the merged grid and return the merged dataset. SweepFailed (after every unit
        has had its turn) when any point failed; nothing is merged then. progress: a bar over the points with an
        ETA on stderr (`probes.experiment.progress`; None: on a terminal, False: never), or the bar of a larger
        piece of work (`dmft-probe reproduce`) to count the points on."""
        run_sweeps([self], executor, on_point, progress, label="sweep")
        return self.merge()

    def merge(self) -> xr.Dataset:
        """Merge every point (all finished) into `out` with the seed variances, record the merged grid in the
        store and return the merged dataset."""
        # seed variances from the parts of every point, so a resumed or extended sweep recomputes them
        merged = with_seed_variances(self.store.combine(self.values, self.seeds), self.axis)
        merged.attrs["init_only"] = int(self.init_only)
        merged.attrs.pop(SWEEP_CONFIG_ATTR, None)  # the parts' store metadata; `config` says it all
        save(merged, self.out)
        self.store.set_merged(self.values, self.seeds)
        return merged

    def _handlers(self, say: Callable[[str], None], bar: Progress, failures: list[str], tag: str = ""):
        """(started, finished) callbacks of an executor for this sweep's units: they mark the points in the store,
        report each point with say(msg) (prefixed by `tag`), count it on `bar` and add failures to `failures`."""
        ax = self.axis

        def started(unit: Unit) -> None:
            self.store.mark([(unit.value, s) for s in unit.written], "running", group=unit.seeds)

        def finished(unit: Unit, results: list[PointResult] | None, error: UnitError | None) -> None:
            points = [(unit.value, s) for s in unit.written]
            if error is not None:
                self.store.mark(points, "failed", error.line, error.detail or None)
                for v, s in points:
                    failures.append(f"{tag}{ax}={v} seed={s}: {error.line}")
                    say(f"{tag}{ax}={v} seed={s}: failed: {error.line}")
                bar.advance(len(points), info=f"{tag}{ax}={unit.value}: failed")
                return
            results = results or []
            bad = self.store.record(
                [(unit.value, r.seed, "diverged" if r.status == "diverged" else "done") for r in results],
                {(unit.value, r.seed): r.written for r in results if r.written is not None},
            )
            bad_seeds = {s: msg for _, s, msg in bad}
            for r in results:
                if r.seed in bad_seeds:
                    failures.append(f"{tag}{ax}={unit.value} seed={r.seed}: {bad_seeds[r.seed]}")
                    say(f"{tag}{ax}={unit.value} seed={r.seed}: failed: {bad_seeds[r.seed]}")
                    continue
                how = f", ensemble of {r.ensemble}" if r.ensemble else ""
                say(f"{tag}{ax}={unit.value} seed={r.seed}: {r.status} ({r.wall_s:.1f} s{how})")
            bar.advance(len(points), info=f"{tag}{ax}={unit.value}")

        return started, finished

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Sweep:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_sweeps(
    sweeps: list[Sweep],
    executor: Executor | None = None,
    on_point: Callable[[str], None] | None = None,
    progress: bool | None | Progress = None,
    label: str = "sweep",
    tags: list[str] | None = None,
) -> None:
    """Run the units of several open sweeps in one go on `executor` (default: this process), so that a pool or a
    Ray cluster gets all of them at once; each point is recorded in its own sweep's store as it comes back and
    reported with on_point(msg) (prefixed by its sweep's tag). progress: a bar `label` over every point of the
    sweeps (None: on a terminal, False: never), or a bar to count them on. Nothing is merged. SweepFailed, after
    every unit has had its turn, when any point failed."""
    tags = tags or [""] * len(sweeps)
    for sweep, tag in zip(sweeps, tags):
        for v, s in sweep.done:
            (on_point or (lambda msg: None))(f"{tag}{sweep.axis}={v} seed={s}: already done, skipped")
    n_done = sum(len(sw.done) for sw in sweeps)
    own = not isinstance(progress, Progress)
    if isinstance(progress, Progress):
        bar = progress
        bar.skip(n_done)
    else:
        bar = Progress(label, sum(sw.n_points for sw in sweeps), unit="points", done=n_done, enabled=progress)
    failures: list[str] = []
    try:
        say = bar.wrap(on_point)
        owner: dict[int, tuple] = {}
        units: list[Unit] = []
        for sweep, tag in zip(sweeps, tags):
            handlers = sweep._handlers(say, bar, failures, tag)
            for unit in sweep.units:
                owner[id(unit)] = handlers
                units.append(unit)
        (executor or InProcess()).run(
            run_unit, units, lambda u: owner[id(u)][0](u), lambda u, r, e: owner[id(u)][1](u, r, e)
        )
    finally:
        if own:
            bar.close()
    if failures:
        n_points = sum(sw.n_points for sw in sweeps)
        where = ", ".join(str(sw.store.folder / "manifest.json") for sw in sweeps[:2]) + (
            ", ..." if len(sweeps) > 2 else ""
        )
        raise SweepFailed(
            f"{len(failures)} of {n_points} points failed (first: {failures[0]}); nothing was "
            f"merged; messages in {where}; rerun the same command to redo them"
        )


def sweep_config(base: RunConfig, axis: str, init_only: bool = False) -> RunConfig:
    """The config every point of the sweep shares: `base` with the axis recorded (and 0 steps when init_only)."""
    return replace(base, steps=0 if init_only else base.steps, model=replace(base.model, axis=axis))


def open_sweep(
    base: RunConfig,
    axis: str,
    values: list[int],
    seeds: int,
    out: Path,
    init_only: bool = False,
    ensemble: str | None = None,
    on_point: Callable[[str], None] | None = None,
    overwrite: bool = False,
    rebuild: bool = False,
) -> Sweep:
    """Check the grid, open (or create) its store and plan the units still to do; returns the open Sweep.
    ValueError (one line, nothing trained) for a bad grid, a size that is not a valid model, a store made with
    other settings (the ensemble mode included: `ensemble`, None for `probes.experiment.ensemble.resolve_mode`'s default), a
    manifest that cannot be read (`rebuild`: rebuild it from the parts), or an existing `out` whose merged grid
    this grid leaves out (unless `overwrite`). Seeds are base.seed + 0..seeds-1. on_point(msg) gets the warnings
    (corrupt parts, untrusted parts, a group made smaller for this machine's memory)."""
    mode = resolve_mode(ensemble)
    check_grid(axis, values, seeds, mode)
    cfg = sweep_config(base, axis, init_only)
    check_values(cfg, axis, values)  # every size is a valid model before anything is written
    seed_list = [base.seed + s for s in range(seeds)]
    store = SweepStore.open(
        out, cfg, axis, values, seed_list, init_only, warn=on_point, ensemble=mode, overwrite=overwrite, rebuild=rebuild
    )
    try:
        return Sweep(store, cfg, axis, values, seed_list, Path(out), init_only, on_point)
    except BaseException:
        store.close()
        raise


def check_grid_fits(base: RunConfig, axis: str, values: list[int], init_only: bool = False) -> None:
    """ValueError naming the option unless every grid point is a valid model (`check_values`: --values) that fits
    in memory and gives usable numbers (`probes.experiment.config.check_fits`); nothing is allocated, so it runs before any
    work."""
    cfg = sweep_config(base, axis, init_only)
    check_values(cfg, axis, values)
    for v in values:
        check_fits(value_config(cfg, axis, v))


def run_sweep(
    base: RunConfig,
    axis: str,
    values: list[int],
    seeds: int,
    out: Path,
    init_only: bool = False,
    on_point: Callable[[str], None] | None = None,
    ensemble: str | None = None,
    executor: Executor | None = None,
    overwrite: bool = False,
    rebuild: bool = False,
) -> xr.Dataset:
    """Run every (value, seed) point not yet finished, then merge all points into `out`; returns the dataset.

    init_only: no training, probes at initialisation only (steps = 0). on_point(msg) reports progress and
    warnings. ensemble: "auto" trains the missing seeds of a size together as batched models (probes.experiment.ensemble),
    "off" one after another, None: DMFT_PROBE_ENSEMBLE, else "auto"; the datasets are the same either way (to
    float tolerance). executor: where the units run (probes.grid.executors; default this process). overwrite: rewrite
    an existing `out` with this grid even where it leaves out part of the merged one. rebuild: write a fresh
    manifest from the parts first. SweepFailed when points failed.
    """
    check_grid(axis, values, seeds, ensemble)
    check_grid_fits(base, axis, values, init_only)
    with open_sweep(base, axis, values, seeds, out, init_only, ensemble, on_point, overwrite, rebuild) as sweep:
        return sweep.run(executor, on_point)


def coord_config(base: RunConfig, steps: list[int]) -> RunConfig:
    """The run config of a coordinate check: train max(steps) steps with probes exactly at `steps` (and 0).
    ValueError naming --steps unless they are 1 to MAX_PROBE_STEPS integers in [0, MAX_STEP]."""
    if not steps or any(s < 0 for s in steps):
        raise ValueError(f"--steps must be a list of non-negative integers, got {steps}"[:200])
    if len(set(steps)) > MAX_PROBE_STEPS:
        raise ValueError(f"--steps: at most {MAX_PROBE_STEPS} probe steps, got {len(set(steps))}")
    if max(steps) > MAX_STEP:
        raise ValueError(f"--steps: {max(steps)} is more than {MAX_STEP}, the most steps a run may take")
    return replace(
        base, steps=max(steps), probes=replace(base.probes, enabled=True, schedule="at", at=tuple(sorted(set(steps))))
    )

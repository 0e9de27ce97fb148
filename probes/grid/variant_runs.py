"""`dmft-probe variants`: the coordinate check of every block variant along N, H and L, for SGD and Adam, run into
one folder (one sweep dataset per cell); `dmft.variant_verdicts` then reads the folder into the README table
"variant x axis x optimizer x verdict".

A cell is one (variant, axis, optimizer): a coordinate-check sweep (`probes.grid.sweep.coord_config`, the probes at
`steps`) along `axis` over the grid's sizes and seeds, from the shared base model, under the preset
parametrization, written to `<out>/coord-<variant>-<optimizer>-<axis>.nc`. Every cell goes through the sweep's own
store (`probes.grid.sweep.open_sweep`, `<file>.parts/`), as `probes.grid.reproduce` runs its jobs: a finished, merged cell is
kept as it is (`cell_finished` reads its manifest only), a cell stopped half-way continues where it stopped, and
every unfinished cell's store is opened (so a folder made with other settings is refused, one line) before any
cell trains.

The depth grid starts at L = 2, not 1: with a single block the last block reads the embedding directly, so its
q, k, v, A changes lack the accumulated stream change every deeper model's last block sees (`tests/
test_coord_check.py::test_depth_exponents`). Measured with this grid's settings (paper block, mup, 2 seeds, steps
0, 1, 3, 10, 20): over L = 1, 2, 4, 8 SGD's changes of q, k, v, A, softmax(A) read L^+0.19..+0.37 at step 20
(24 of 63 rows off); over L = 2, 4, 8, 16 all 63 rows are consistent. Adam passed over both.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

from parametrizations.variants import VARIANTS
from probes.experiment.run import RunConfig
from probes.grid.executors import Executor

__all__ = [
    "VariantGrid",
    "VARIANT_GRID",
    "QUICK_GRID",
    "Cell",
    "VariantTableFailed",
    "cell_path",
    "cell_config",
    "cell_finished",
    "plan_cells",
    "run_variant_table",
]


@dataclass(frozen=True)
class VariantGrid:
    """What the variant table runs. variants: block variants (`parametrizations.variants`); axes: the swept sizes
    per axis; optimizers: eta0 per optimizer; model: the base model (the swept size replaces one of N, H, L);
    param: the parametrization preset; batch_size, probe_samples: per step and per probe; steps: the probe steps
    (training runs to the largest); seeds: per size."""

    variants: tuple[str, ...]
    axes: dict[str, tuple[int, ...]]
    optimizers: dict[str, float]
    model: dict = field(default_factory=dict)
    param: str = "mup"
    batch_size: int = 32
    probe_samples: int = 16
    steps: tuple[int, ...] = (0, 1, 3, 10, 20)
    seeds: int = 8


VARIANT_GRID = VariantGrid(
    variants=VARIANTS,  # paper, openelm, ngpt, laurel, tokenformer
    axes={"N": (4, 8, 16, 32), "H": (2, 4, 8, 16), "L": (2, 4, 8, 16)},  # L from 2: see the module docstring
    optimizers={"sgd": 0.5, "adam": 0.05},  # the eta0 of tests/test_coord_check.py
    model={"task": "vision", "N": 8, "H": 4, "L": 2},
    param="mup",  # alpha_A = 1, alpha_L = 1
    batch_size=32,
    probe_samples=16,
    steps=(0, 1, 3, 10, 20),
    seeds=8,
)
# 8 seeds: the cells are judged by the one verdict rule (dmft.variant_verdicts) on a joint-jackknife interval with a t
# quantile of seeds - 1 degrees of freedom; at 2 seeds (t = 12.7) no row can be decided, and a +1/2 deviation of one
# site went unflagged. For tests: 3 sizes per axis and one judged step (10).
QUICK_GRID = replace(VARIANT_GRID, axes={"N": (4, 8, 16), "H": (2, 4, 8), "L": (2, 4, 8)}, steps=(0, 1, 10))


@dataclass(frozen=True)
class Cell:
    """One cell of the table: a coordinate-check sweep of `variant` along `axis` with `optimizer`."""

    variant: str
    axis: str
    optimizer: str
    values: tuple[int, ...]
    cfg: RunConfig
    path: Path

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.variant, self.axis, self.optimizer)

    @property
    def name(self) -> str:
        return self.path.stem


class VariantTableFailed(RuntimeError):
    """Points of some cells failed (their messages are in each cell's manifest); `paths` holds the cells that
    finished, `failed` the one-line reason of each cell that did not."""

    def __init__(self, message: str, paths: dict, failed: dict):
        super().__init__(message)
        self.paths, self.failed = paths, failed


def cell_path(out_dir: Path, variant: str, optimizer: str, axis: str) -> Path:
    """The merged dataset of a cell: `<out_dir>/coord-<variant>-<optimizer>-<axis>.nc`."""
    return Path(out_dir) / f"coord-{variant}-{optimizer}-{axis}.nc"


def cell_config(grid: VariantGrid, variant: str, axis: str, optimizer: str) -> RunConfig:
    """The validated coordinate-check config of one cell (probes at grid.steps)."""
    from probes.experiment.config import make_run_config
    from probes.grid.sweep import coord_config

    cfg = make_run_config(
        model={**grid.model, "variant": variant, "axis": axis},
        param={"preset": grid.param},
        optim={"name": optimizer, "eta0": grid.optimizers[optimizer]},
        run={"batch_size": grid.batch_size},
        probes={"n_samples": grid.probe_samples},
    )
    return coord_config(cfg, list(grid.steps))


def _choose(given, known, option: str) -> list[str]:
    names = list(known) if given is None else [str(g).strip() for g in given if str(g).strip()]
    if not names:
        raise ValueError(f"{option} is empty; choose from {', '.join(known)}")
    bad = [n for n in names if n not in known]
    if bad:
        raise ValueError(f"{option}: unknown {', '.join(repr(b) for b in bad)}; choose from {', '.join(known)}"[:300])
    return list(dict.fromkeys(names))


def plan_cells(out_dir: Path, grid: VariantGrid, variants=None, axes=None, optimizers=None) -> list[Cell]:
    """Every cell of the chosen variants x axes x optimizers (None: all of the grid's), in table order, each with
    its validated config; ValueError (one line naming --variants, --axes or --optimizers) for an unknown name, a
    size that is not a valid model, or a grid point that cannot fit in memory. Nothing is written."""
    from probes.grid.sweep import check_grid, check_grid_fits, value_config

    variants = _choose(variants, grid.variants, "--variants")
    axes = _choose(axes, tuple(grid.axes), "--axes")
    optimizers = _choose(optimizers, tuple(grid.optimizers), "--optimizers")
    cells = []
    for v in variants:
        for ax in axes:
            for opt in optimizers:
                values = tuple(grid.axes[ax])
                check_grid(ax, list(values), grid.seeds)
                cfg = cell_config(grid, v, ax, opt)
                for size in values:
                    try:
                        value_config(cfg, ax, size).model.shapes()
                    except ValueError as e:
                        raise ValueError(
                            f"--variants: {v} at {ax}={size} is not a valid model ({str(e).splitlines()[0]})"
                        ) from None
                check_grid_fits(cfg, ax, list(values))
                cells.append(Cell(v, ax, opt, values, cfg, cell_path(out_dir, v, opt, ax)))
    return cells


def cell_finished(cell: Cell, seeds: list[int]) -> bool:
    """True when the cell's merged dataset exists and its store's manifest records every point of the grid as
    finished (done or diverged) under the cell's config: the cell is kept without opening its store (which
    loads and checks every part; a second or so per part on a busy core). Anything else (no manifest, other
    settings, points to do) goes through `probes.grid.sweep.open_sweep`, which resumes or refuses it."""
    import json

    from probes.grid.store import FINISHED, MANIFEST, comparable_config, config_hash, parts_dir, point_name

    if not cell.path.is_file():
        return False
    try:
        manifest = json.loads((parts_dir(cell.path) / MANIFEST).read_text())
        points = manifest["points"]
        same = (
            manifest.get("axis") == cell.axis
            and not manifest.get("init_only")
            and manifest.get("config_hash") == config_hash(comparable_config(cell.cfg, cell.axis))
        )
        return same and all(
            points.get(point_name(cell.axis, v, s), {}).get("status") in FINISHED for v in cell.values for s in seeds
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


ExecutorArg = Executor | Callable[[int], Executor] | None


def _executor_for(executor: ExecutorArg, n_units: int) -> Executor | None:
    """An Executor is used as it is; a callable is asked for one sized to the cell's n_units."""
    if executor is None or hasattr(executor, "run"):
        return executor
    return executor(n_units)


def run_variant_table(
    out_dir: Path,
    variants=None,
    axes=None,
    optimizers=None,
    seeds: int | None = None,
    quick: bool = False,
    executor: ExecutorArg = None,
    on_point: Callable[[str], None] | None = None,
    ensemble: str = "auto",
    on_cell: Callable[[str], None] | None = None,
) -> dict[tuple[str, str, str], Path]:
    """Run every cell of the variant table (VARIANT_GRID, or QUICK_GRID when `quick`) not yet finished into
    `out_dir` (created); returns {(variant, axis, optimizer): dataset path} in table order.

    variants, axes, optimizers: subsets of the grid's (None: all). seeds: per size (default the grid's). executor:
    where the points run, an Executor for every cell or a callable n_units -> Executor called per cell (default:
    this process). on_cell(line): one line per cell (what it runs, or that it was kept); on_point(line): each
    point's progress and the store's warnings. ensemble: as `probes.grid.sweep.run_sweep`.

    Every cell is validated and every cell's store opened before any cell trains (ValueError, one line, when an
    option is unknown, `out_dir` cannot be made or written, or the folder holds a cell made with other settings or
    an unreadable store: those are read first, so a refusal leaves nothing made). A cell whose points fail does not stop
    the others; VariantTableFailed at the end names them (the finished cells are in its `paths`).
    """
    from probes.experiment.config import check_out_folder
    from probes.grid.preflight import check_store
    from probes.grid.sweep import SweepFailed, open_sweep

    grid = QUICK_GRID if quick else VARIANT_GRID
    if seeds is not None:
        grid = replace(grid, seeds=seeds)
    out_dir = Path(out_dir)
    check_out_folder(out_dir, "--out")
    cells = plan_cells(out_dir, grid, variants, axes, optimizers)
    say_cell = on_cell or (lambda msg: None)
    seed_list = [cells[0].cfg.seed + s for s in range(grid.seeds)] if cells else []  # as open_sweep numbers them
    finished = [cell_finished(c, seed_list) for c in cells]
    for c, done in zip(cells, finished):  # every store read (not opened) first: a bad one leaves nothing made
        if not done:
            check_store(c.cfg, c.axis, c.path)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[tuple[str, str, str], Path] = {}
    failed: dict[tuple[str, str, str], str] = {}
    with ExitStack() as stack:
        # every unfinished cell's store is opened (checked against its settings) before any cell trains
        sweeps = [
            None
            if done
            else stack.enter_context(
                open_sweep(c.cfg, c.axis, list(c.values), grid.seeds, c.path, ensemble=ensemble, on_point=on_point)
            )
            for c, done in zip(cells, finished)
        ]
        for i, (cell, sweep) in enumerate(zip(cells, sweeps), 1):
            head = (
                f"[{i}/{len(cells)}] {cell.variant} / {cell.optimizer} along {cell.axis} = {list(cell.values)} "
                f"x {grid.seeds} seeds"
            )
            if sweep is None or (not sweep.units and cell.path.exists()):  # a finished, merged cell is kept
                say_cell(f"{head}: finished, kept ({cell.path.name})")
                paths[cell.key] = cell.path
                continue
            run_on = _executor_for(executor, len(sweep.units))
            where = f" {run_on.describe()}" if run_on is not None else ""
            done = f"{len(sweep.done)} of {sweep.n_points} points done, " if sweep.done else ""
            say_cell(f"{head}: {done}{len(sweep.units)} unit(s) to run{where} -> {cell.path.name}")
            try:
                sweep.run(run_on, on_point=on_point)
            except SweepFailed as e:
                failed[cell.key] = str(e).splitlines()[0]
                say_cell(f"{head}: failed: {failed[cell.key]}")
                continue
            paths[cell.key] = cell.path
    if failed:
        first = next(iter(failed))
        raise VariantTableFailed(
            f"{len(failed)} of {len(cells)} cells failed (first: {'/'.join(first)}: {failed[first]})", paths, failed
        )
    return paths

"""The learning-rate grid of P7 (docs/predictions.md; the paper's Fig. 2a) as one stored dataset.

`run_lr_grid(base, axis, sizes, etas, seeds)` trains every point (eta0, size, seed) of the grid: the config is `base`
with that size on `axis` (`probes.grid.sweep.value_config`) and `optim.eta0 = eta0`, probes off (only the losses
are wanted); the seeds of an (eta0, size) train together as seed ensembles (`probes.experiment.ensemble`, the same
results per seed as separate runs). The result is one xarray Dataset:

| variable | dims | what |
|---|---|---|
| `heldout_loss` | eta0, axis, seed, step | loss on the fixed held-out batch at the log steps (NaN after a divergence) |
| `final_loss` | eta0, axis, seed | held-out loss after the last step; NaN for a diverged run |
| `status` | eta0, axis, seed | int8 run status: 0 ok, 1 diverged (NaN/inf), 2 unstable (finite, but the held-out loss ended above the chance level); CF flag attrs |
| `diverged_at` | eta0, axis, seed | optimizer step of the first NaN/inf (-1: did not diverge) |
| `train_loss` | eta0, axis, seed, train_step | training loss of every optimizer step |
| `grad_norm` | eta0, axis, seed, step | global gradient norm at the log steps |
| `lr` | eta0, axis | the global learning rate eta0 becomes under the parametrization's rule |

A run is UNSTABLE (P7, docs/predictions.md) when it blew up or its final held-out loss lies above the chance level
`chance_loss` = ln(n_out) (the loss of a uniform prediction over the n_classes of an image task or the vocabulary of
the LM; "above" by more than float rounding, `CHANCE_RTOL`): it does worse than a guess. An unstable run keeps its (finite) final loss and counts like a
diverged one in `dmft.transfer`.

Attrs: `kind = "lr_grid"`, `sweep_axis`, `chance_loss`, `n_diverged`, `n_unstable`, `config` (the resolved config of the grid's first point -- smallest eta0,
smallest size, first seed -- as JSON, as a sweep dataset stores its first point's; `dmft.check.read_run_attrs` reads
the parametrization from it), the paper's symbols as scalars (`probes.experiment.dataset.run_attrs`), and the grid:
`grid_eta0`, `grid_sizes`, `grid_seeds` (also the attr `eta0`, here the list of grid eta0s). It passes
`probes.experiment.dataset.load` (schema and checksums); `dmft.transfer.losses_of(ds)` gives the (eta0, axis, seed) final
losses for `dmft.transfer.best_eta0`.

Running and resuming: the grid runs as one sweep per eta0 (`probes.grid.sweep`), each on its own sweep store
(`probes.grid.store`) in `<out>.parts/eta0-<eta0>.parts/`, and all their seed groups go to one executor
(`probes.grid.executors`; default this process) -- the machinery of `dmft-probe sweep`. Every finished point (one
seed at one eta0 and size) is saved there as it comes back, so a grid that was interrupted resumes where it
stopped: rerunning it trains only the points not yet finished, in the seed groups recorded for them (the same
numbers as an uninterrupted grid). Without `out` the stores live in a temporary folder removed at the end.

Saving (`out`): when every point is finished the grid's dataset is written with `probes.experiment.dataset.save`
(atomic, checksummed). An `out` that already holds the same grid (same config but for the size and eta0, same
axis, sizes, eta0s and seeds) is returned as it is, without training; one made with other settings is refused
(ValueError naming the differences) -- delete it or choose another path; a store in `<out>.parts/` made with
other settings is refused the same way (delete the folder or choose another path).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import xarray as xr

from probes.experiment.dataset import STATUS_CODES, DatasetError, load, run_attrs, save, var
from probes.experiment.ensemble import resolve_mode
from probes.experiment.progress import Progress
from probes.experiment.run import RunConfig
from probes.grid.executors import Executor
from probes.grid.store import SweepStore, config_differences, parts_dir
from probes.grid.sweep import Sweep, check_grid_fits, run_sweeps, value_config

__all__ = [
    "CHANCE_RTOL",
    "KIND",
    "LR_STATUS",
    "above_chance",
    "eta_config",
    "chance_loss",
    "check_lr_grid",
    "check_lr_grid_out",
    "check_lr_grid_stores",
    "eta_store_out",
    "grid_chance",
    "grid_config",
    "load_lr_grid",
    "open_grid_sweeps",
    "run_lr_grid",
    "run_status",
]

KIND = "lr_grid"
# the run statuses of a grid: a sweep's (probes.experiment.dataset.STATUS_CODES) and "unstable" (ended above chance)
LR_STATUS = {**STATUS_CODES, "unstable": 2}
# a loss within this relative distance of the chance level is at chance (float32 rounding of ln(n_out) and of a
# mean over the held-out batch are ~1e-7 relative; 1e-4 nats per nat is far below any learning signal)
CHANCE_RTOL = 1e-4


def chance_loss(task: str, n_classes: int | None, vocab_size: int | None) -> float:
    """ln(n_out): the cross-entropy of a uniform prediction over the outputs (vocab_size for the LM, n_classes for an
    image task)."""
    n_out = vocab_size if task == "lm" else n_classes
    return float(math.log(n_out))


def grid_chance(ds: xr.Dataset) -> float | None:
    """The chance level of a stored grid: its attr `chance_loss`, else (grids written before it was stored) from its
    config's model table; None when neither is readable."""
    if "chance_loss" in ds.attrs:
        return float(ds.attrs["chance_loss"])
    try:
        m = json.loads(ds.attrs["config"])["model"]
        return chance_loss(m["task"], m.get("n_classes"), m.get("vocab_size"))
    except (KeyError, TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- the grid


def _seed_list(base: RunConfig, seeds) -> list[int]:
    """seeds as a list: an int n means base.seed + 0..n-1 (as a sweep's --seeds); a list is taken as given."""
    if isinstance(seeds, bool):
        raise ValueError(f"--seeds must be an integer >= 2 or a list of at least 2 seeds, got {seeds!r}")
    if isinstance(seeds, Integral):
        if seeds < 2:
            raise ValueError(f"--seeds must be >= 2 (the bootstrap over seeds needs two), got {seeds}")
        return [base.seed + s for s in range(int(seeds))]
    try:
        out = list(seeds)
    except TypeError:
        raise ValueError(f"--seeds must be an integer >= 2 or a list of seeds, got {seeds!r}") from None
    if len(out) < 2:
        raise ValueError(f"--seeds needs at least 2 seeds (the bootstrap over seeds needs two), got {out}")
    if any(isinstance(s, bool) or not isinstance(s, Integral) or s < 0 for s in out) or len(set(out)) != len(out):
        raise ValueError(f"--seeds must be distinct non-negative integers, got {out}")
    return [int(s) for s in out]


def check_lr_grid(
    base: RunConfig, axis: str, sizes, etas, seeds, ensemble: str | None = None
) -> tuple[list[int], list[float], list[int]]:
    """Validate the grid before any work: ValueError, one line naming the option, for an unknown axis or ensemble
    mode, fewer than 3 distinct positive sizes, fewer than 3 distinct positive finite eta0s, fewer than 2 seeds,
    a size that is not a valid model, or an (eta0, size) that would not fit in memory or whose numbers under- or overflow
    (`probes.grid.sweep.check_grid_fits` at every eta0). Returns (sizes, etas, seeds), sizes and etas sorted."""
    if not isinstance(base, RunConfig):
        raise ValueError(f"base must be a RunConfig, got {type(base).__name__}")
    if axis not in ("N", "H", "L"):
        raise ValueError(f"--axis must be N, H or L, got {axis!r}")
    resolve_mode(ensemble)  # None: DMFT_PROBE_ENSEMBLE, else auto
    sizes = list(sizes)
    if any(isinstance(v, bool) or not isinstance(v, Integral) or v < 1 for v in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"--values must be distinct positive integers, got {sizes}")
    if len(sizes) < 3:
        raise ValueError(f"--values needs at least 3 sizes to tell a drifting optimum, got {len(sizes)}")
    etas = list(etas)
    if any(isinstance(e, bool) or not isinstance(e, Real) or not math.isfinite(e) or e <= 0 for e in etas):
        raise ValueError(f"--etas must be positive finite numbers, got {etas}")
    if len({float(e) for e in etas}) != len(etas):
        raise ValueError(f"--etas must be distinct, got {etas}")
    if len(etas) < 3:
        raise ValueError(f"--etas needs at least 3 eta0 values to locate an optimum, got {len(etas)}")
    seed_list = _seed_list(base, seeds)
    sizes, etas = sorted(int(v) for v in sizes), sorted(float(e) for e in etas)
    cfg = grid_config(base, axis)
    for v in sizes:
        try:
            value_config(cfg, axis, v).model.shapes()
        except ValueError as e:
            raise ValueError(f"--values: {axis}={v} is not a valid model ({str(e).splitlines()[0]})") from None
    for eta in etas:  # memory per size (its seeds train in groups that fit); numbers per eta0
        try:
            check_grid_fits(replace(cfg, optim=replace(cfg.optim, eta0=eta)), axis, sizes)
        except ValueError as e:
            raise ValueError(str(e).splitlines()[0]) from None
    return sizes, etas, seed_list


def grid_config(base: RunConfig, axis: str) -> RunConfig:
    """The config every point of the grid shares: `base` with the axis recorded and probes off (losses only)."""
    return replace(base, model=replace(base.model, axis=axis), probes=replace(base.probes, enabled=False))


def eta_config(cfg: RunConfig, axis: str, size: int, eta0: float) -> RunConfig:
    """The config of the seeds at (eta0, size) of the grid whose shared config is `cfg` (`grid_config`)."""
    c = value_config(cfg, axis, size)
    return replace(c, optim=replace(c.optim, eta0=float(eta0)))


# ---------------------------------------------------------------------------------------------- resume


def _comparable(config: dict, axis: str) -> dict:
    """A point's config dict without what varies over the grid (the size on the axis, eta0, the seed)."""
    d = json.loads(json.dumps(config, sort_keys=True))
    d.pop("seed", None)
    d.get("model", {}).pop(axis, None)
    d.get("optim", {}).pop("eta0", None)
    return d


def _grid_differences(
    ds: xr.Dataset, config: dict, axis: str, sizes: list[int], etas: list[float], seeds: list[int]
) -> list[str]:
    """What differs between a stored grid and the one asked for ('what: old -> new'); [] when it is the same."""
    diffs = []
    old_axis = ds.attrs.get("sweep_axis")
    if old_axis != axis:
        return [f"axis: {old_axis} -> {axis}"]
    try:
        old_cfg = json.loads(ds.attrs["config"])
    except (KeyError, TypeError, ValueError):
        return ["config: unreadable"]
    diffs += config_differences(_comparable(old_cfg, axis), _comparable(config, axis))
    old_sizes = [int(v) for v in ds[axis].values] if axis in ds.dims else []
    old_etas = [float(e) for e in ds["eta0"].values] if "eta0" in ds.dims else []
    old_seeds = [int(s) for s in ds["seed"].values] if "seed" in ds.dims else []
    if old_sizes != sizes:
        diffs.append(f"sizes: {old_sizes} -> {sizes}")
    if not (len(old_etas) == len(etas) and np.allclose(old_etas, etas, rtol=1e-12, atol=0)):
        diffs.append(f"etas: {[f'{e:g}' for e in old_etas]} -> {[f'{e:g}' for e in etas]}")
    if old_seeds != seeds:
        diffs.append(f"seeds: {old_seeds} -> {seeds}")
    return diffs


def _complete(ds: xr.Dataset, axis: str) -> bool:
    """Every point of the stored grid has a status and, where it did not diverge, a finite final loss."""
    for v in ("final_loss", "status", "heldout_loss"):
        if v not in ds.data_vars:
            return False
    if ds["final_loss"].dims != ("eta0", axis, "seed"):
        return False
    ok = ds["status"].values != STATUS_CODES["diverged"]  # ok or unstable: a finite final loss
    return bool(np.isfinite(ds["final_loss"].values[ok]).all())


def load_lr_grid(path: str | os.PathLike) -> xr.Dataset:
    """Load a stored lr grid (`probes.experiment.dataset.load`: checksums and schema); DatasetError when the file is not
    one (kind != "lr_grid") or lacks its variables."""
    ds = load(path)
    if ds.attrs.get("kind") != KIND:
        raise DatasetError(f"{path}: not an lr grid (kind {ds.attrs.get('kind', 'unset')!r}, expected {KIND!r})")
    axis = ds.attrs.get("sweep_axis")
    if axis not in ("N", "H", "L") or not _complete(ds, axis):
        raise DatasetError(
            f"{path}: an incomplete lr grid (variables final_loss, status, heldout_loss with dims "
            f"(eta0, {axis}, seed) expected)"
        )
    return ds


def _existing(out: Path, config: dict, axis: str, sizes, etas, seeds) -> xr.Dataset | None:
    """The stored grid at `out` when it is this grid; None when `out` does not exist; ValueError otherwise."""
    if not (out.exists() or out.is_symlink()):
        return None
    try:
        ds = load_lr_grid(out)
    except DatasetError as e:
        raise ValueError(f"--out: {str(e).splitlines()[0]}; delete it or choose another --out") from None
    diffs = _grid_differences(ds, config, axis, sizes, etas, seeds)
    if diffs:
        raise ValueError(
            f"--out: {out} holds an lr grid made with other settings ({'; '.join(diffs)}); "
            "delete it to recompute or choose another --out"
        )
    return ds


def check_lr_grid_out(base: RunConfig, axis: str, sizes, etas, seeds, out: Path) -> xr.Dataset | None:
    """Check `out` for the grid (`check_lr_grid`'s arguments) before any work, writing nothing: its name ends in
    .nc or .zarr and its folder exists; an existing `out` must hold this very grid. Returns that stored grid, None
    when `out` does not exist; ValueError (one line naming --out) otherwise. When `out` does not exist, the stores
    of an interrupted grid in `<out>.parts/` are checked too (`check_lr_grid_stores`)."""
    sizes, etas, seed_list = check_lr_grid(base, axis, sizes, etas, seeds)
    out = Path(out)
    if out.suffix not in (".nc", ".zarr"):
        raise ValueError(f"--out: {out} must end in .nc (netCDF) or .zarr")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"--out: folder {parent} does not exist")
    first = replace(eta_config(grid_config(base, axis), axis, sizes[0], etas[0]), seed=seed_list[0])
    done = _existing(out, first.to_dict(), axis, sizes, etas, seed_list)
    if done is None:
        check_lr_grid_stores(base, axis, etas, out)
    return done


def check_lr_grid_stores(base: RunConfig, axis: str, etas, out: Path) -> None:
    """ValueError (one line naming --out) unless the parts folder `<out>.parts/` of the grid is absent, or a folder
    whose stores, one per eta0 (`eta_store_out`), are each absent or resumable with this grid's settings
    (`probes.grid.preflight.check_store`: what `SweepStore.open` accepts). Reads the manifests only."""
    from probes.grid.preflight import check_store

    parts = parts_dir(out)
    if not (parts.exists() or parts.is_symlink()):
        return
    if not parts.is_dir():
        raise ValueError(
            f"--out: {parts} (the stores of {Path(out).name}) is not a folder; move it away or choose another --out"
        )
    cfg = grid_config(base, axis)
    for eta in etas:
        check_store(replace(cfg, optim=replace(cfg.optim, eta0=float(eta))), axis, eta_store_out(parts, eta))


# ---------------------------------------------------------------------------------------------- the run


def run_status(status: str, final: float, chance: float) -> int:
    """The grid's status code of one run: diverged (NaN/inf), unstable (its final held-out loss `final` lies above
    `chance` by more than float rounding, CHANCE_RTOL), else ok. A model whose outputs stayed constant ends at
    chance up to rounding (e.g. 2.30258536 for ln 10 in float32): that is at chance, not above it."""
    if status != "ok":
        return LR_STATUS["diverged"]
    return LR_STATUS["unstable"] if above_chance(final, chance) else LR_STATUS["ok"]


def above_chance(loss, chance: float):
    """loss > chance by more than the relative rounding CHANCE_RTOL (elementwise for arrays)."""
    return np.asarray(loss) > chance * (1 + CHANCE_RTOL)


def _pad(rows: list[list[float]], n: int) -> np.ndarray:
    out = np.full((len(rows), n), np.nan)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r[:n]
    return out


def eta_store_out(parts: Path, eta0: float) -> Path:
    """The name whose sweep store (`probes.grid.store`, `<name>.parts/`) holds the points of `eta0` in the parts
    folder `parts` of an lr grid: `<parts>/eta0-<eta0>` (the shortest repr of the float, so every eta0 has its own)."""
    return Path(parts) / f"eta0-{float(eta0)!r}"


def open_grid_sweeps(
    cfg: RunConfig,
    axis: str,
    sizes: list[int],
    etas: list[float],
    seeds: list[int],
    parts: Path,
    ensemble: str,
    warn: Callable[[str], None] | None = None,
) -> list[Sweep]:
    """One open sweep (`probes.grid.sweep.Sweep`) per eta0 of the grid whose shared config is `cfg`
    (`grid_config`), each on its store in `parts` (`eta_store_out`): the points finished before are skipped, the
    rest planned in seed groups. ValueError (one line) when a store was made with other settings or is held by
    another process; the sweeps opened before are closed then. Close each sweep when done."""
    sweeps: list[Sweep] = []
    try:
        for eta in etas:
            ecfg = replace(cfg, optim=replace(cfg.optim, eta0=float(eta)))
            name = eta_store_out(parts, eta)
            store = SweepStore.open(name, ecfg, axis, sizes, seeds, warn=warn, ensemble=ensemble)
            try:
                sweeps.append(Sweep(store, ecfg, axis, sizes, seeds, name, False, warn))
            except BaseException:
                store.close()
                raise
    except BaseException:
        for sweep in sweeps:
            sweep.close()
        raise
    return sweeps


def run_lr_grid(
    base: RunConfig,
    axis: str,
    sizes: list[int],
    etas: list[float],
    seeds: int | list[int],
    out: Path | None = None,
    ensemble: str | None = None,
    progress: bool | Progress = True,
    executor: Executor | None = None,
    on_point: Callable[[str], None] | None = None,
) -> xr.Dataset:
    """Train the (eta0, size) grid of `base` along `axis` with `seeds` (an int n: base.seed + 0..n-1; or a list)
    and return its dataset (module docstring). ensemble: "auto" trains the seeds of an (eta0, size) as seed ensembles, "off"
    one after another (the same numbers), None: DMFT_PROBE_ENSEMBLE, else "auto". progress: a bar over the points
    with an ETA on stderr (`probes.experiment.progress`: True on a terminal, False never), or a bar to count them
    on. executor: where the seed groups train (`probes.grid.executors`; default this process). on_point(msg): a
    line per finished point and the stores' warnings. out: where to save (.nc or .zarr); an `out` holding this
    very grid is returned without training, one holding another grid is refused; the finished points are kept
    in `<out>.parts/` as they come in, so an interrupted grid resumes where it stopped (module docstring).
    ValueError (one line, before any work) for a bad grid (`check_lr_grid`) or a bad `out`; SweepFailed (after
    every point has had its turn) when points failed."""
    sizes, etas, seed_list = check_lr_grid(base, axis, sizes, etas, seeds, ensemble)
    ensemble = resolve_mode(ensemble)
    cfg = grid_config(base, axis)
    config = replace(eta_config(cfg, axis, sizes[0], etas[0]), seed=seed_list[0]).to_dict()
    if out is not None:
        out = Path(out)
        done = check_lr_grid_out(base, axis, sizes, etas, seed_list, out)
        if done is not None:
            return done
    with contextlib.ExitStack() as stack:
        if out is not None:
            parts = parts_dir(out)
        else:  # nothing to resume: the points live in a folder removed at the end
            parts = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dmft-probe-lr-grid-")))
        sweeps = open_grid_sweeps(cfg, axis, sizes, etas, seed_list, parts, ensemble, on_point)
        for sweep in sweeps:
            stack.callback(sweep.close)
        t0 = time.perf_counter()
        bar = progress if isinstance(progress, Progress) else (None if progress else False)
        run_sweeps(sweeps, executor, on_point, bar, label="lr grid", tags=[f"eta0={e:g} " for e in etas])
        wall = time.perf_counter() - t0
        ds = _grid_dataset(cfg, config, axis, sizes, etas, seed_list, [sw.store for sw in sweeps], ensemble, wall)
    if out is not None:
        save(ds, out)
    return ds


def _grid_dataset(
    cfg: RunConfig,
    config: dict,
    axis: str,
    sizes: list[int],
    etas: list[float],
    seed_list: list[int],
    stores: list[SweepStore],
    ensemble: str,
    wall: float,
) -> xr.Dataset:
    """The lr grid's dataset (module docstring) from the finished points in `stores` (one per eta0, in order)."""
    log_steps = cfg.probes.steps(cfg.steps)
    n_e, n_v, n_s, n_t, n_ts = len(etas), len(sizes), len(seed_list), len(log_steps), cfg.steps
    heldout = np.full((n_e, n_v, n_s, n_t), np.nan)
    grad = np.full((n_e, n_v, n_s, n_t), np.nan)
    train = np.full((n_e, n_v, n_s, n_ts), np.nan)
    final = np.full((n_e, n_v, n_s), np.nan)
    status = np.zeros((n_e, n_v, n_s), dtype=np.int8)
    diverged_at = np.full((n_e, n_v, n_s), -1, dtype=np.int64)
    lr = np.full((n_e, n_v), np.nan)
    chance = math.nan
    step_index = {s: k for k, s in enumerate(log_steps)}
    for i, store in enumerate(stores):
        for j, v in enumerate(sizes):
            for k, seed in enumerate(seed_list):
                r = store.part(v, seed)
                m = json.loads(r.attrs["config"])["model"]  # the model as built for the task's data
                chance = chance_loss(m["task"], m.get("n_classes"), m.get("vocab_size"))
                idx = [step_index[int(s)] for s in r["step"].values]
                held = np.asarray(r["heldout_loss"].values, dtype=float)
                heldout[i, j, k, idx] = held
                grad[i, j, k, idx] = r["grad_norm"].values
                train[i, j, k] = _pad([list(r["train_loss"].values)], n_ts)[0]
                run = str(r.attrs.get("status", "ok"))
                status[i, j, k] = run_status(run, held[-1], chance)
                if run == "ok":
                    final[i, j, k] = held[-1]
                else:
                    diverged_at[i, j, k] = int(r["diverged_at"].values) if "diverged_at" in r else -1
                lr[i, j] = float(r.attrs["lr"])

    sv = {
        "long_name": "run status: "
        + ", ".join(f"{c} {n}" for n, c in LR_STATUS.items())
        + " (held-out loss ended above chance_loss)",
        "units": "1",
        "flag_values": np.asarray(list(LR_STATUS.values()), dtype=np.int8),
        "flag_meanings": " ".join(LR_STATUS),
    }
    point = ("eta0", axis, "seed")
    other = [a for a in ("N", "H", "L") if a != axis]
    m = cfg.model
    ds = xr.Dataset(
        data_vars={
            "heldout_loss": var(
                (*point, "step"), heldout, "loss on the fixed held-out batch (NaN after a divergence)", "nats"
            ),
            "final_loss": var(point, final, "held-out loss after the last step (NaN: the run diverged)", "nats"),
            "status": (point, status, sv),
            "diverged_at": var(
                point,
                diverged_at,
                "optimizer step whose weights gave the first NaN/inf loss (-1: did not diverge)",
                "steps",
            ),
            "train_loss": var(
                (*point, "train_step"), train, "training loss on the incoming batch, before the update", "nats"
            ),
            "grad_norm": var(
                (*point, "step"), grad, "global gradient norm at the last step before the log step (0 at step 0)"
            ),
            "lr": var(
                ("eta0", axis), lr, "global learning rate at (eta0, size) (eta0 under the parametrization's rule)"
            ),
        },
        coords={
            "eta0": ("eta0", np.asarray(etas, dtype=float), {"long_name": "base learning rate eta0", "units": "1"}),
            axis: (
                axis,
                np.asarray(sizes, dtype=np.int64),
                {
                    "long_name": {
                        "N": "key/query dimension per head",
                        "H": "heads of a full-width layer",
                        "L": "depth (blocks)",
                    }[axis]
                },
            ),
            "seed": ("seed", np.asarray(seed_list, dtype=np.int64), {"long_name": "initialisation seed"}),
            "step": (
                "step",
                np.asarray(log_steps, dtype=np.int64),
                {"long_name": "optimizer steps taken", "units": "steps"},
            ),
            "train_step": (
                "train_step",
                np.arange(n_ts, dtype=np.int64),
                {"long_name": "optimizer step", "units": "steps"},
            ),
            "d_model": (
                axis,
                np.asarray([value_config(cfg, axis, v).model.d_model for v in sizes], dtype=np.int64),
                {"long_name": "residual width N*H"},
            ),
            **{
                a: (
                    (),
                    getattr(m, a),
                    {
                        "long_name": {
                            "N": "key/query dimension per head",
                            "H": "heads of a full-width layer",
                            "L": "depth (blocks)",
                        }[a]
                    },
                )
                for a in other
            },
        },
        attrs=run_attrs(config, str(cfg.device), "ok"),
    )
    ds.attrs.pop("status", None)  # per run: the variable `status`
    ds.attrs.update(
        {
            "title": "dmft-probe learning-rate grid",
            "kind": KIND,
            "sweep_axis": axis,
            "probes": 0,
            "eta0": np.asarray(etas, dtype=float),
            "grid_eta0": np.asarray(etas, dtype=float),
            "grid_sizes": np.asarray(sizes, dtype=np.int64),
            "grid_seeds": np.asarray(seed_list, dtype=np.int64),
            "ensemble": ensemble,
            "wall_s": wall,
            "chance_loss": chance,
            "n_diverged": int((status == LR_STATUS["diverged"]).sum()),
            "n_unstable": int((status == LR_STATUS["unstable"]).sum()),
        }
    )
    return ds

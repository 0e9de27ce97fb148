"""Read-only checks of the outputs a command will write into, made before any work (`reproduce`, `variants`).

A command that runs several sweeps and grids into one folder must not train for minutes and then stop at an output
it cannot use. `check_sweep_out` and `check_lr_grid_out` look at what already exists, without writing anything:

- a sweep's merged file (`<out>`) must be a dataset (`probes.experiment.dataset.load`: schema and checksums) of a sweep along
  the same axis over the same sizes and seeds, made with the same settings;
- a sweep's store (`<out>.parts/`) must be a folder whose manifest, when it has one, is a readable sweep manifest
  made along the same axis with the same settings (`probes.grid.store`: what `SweepStore.open` would accept);
- a learning-rate grid's file must be the very grid asked for (`probes.grid.lr_grid.check_lr_grid_out`), and the
  stores of an interrupted one (`<out>.parts/`, one per eta0) resumable with its settings.

Each refusal is a ValueError of one line naming --out and the file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from probes.experiment.run import RunConfig

__all__ = ["DATA_KEYS", "check_lr_grid_out", "check_store", "check_sweep_file", "check_sweep_out"]

# Model keys a run takes from its data set (`probes.experiment.run.model_config_for_task`): a point's stored config has the
# data's values, the config asked for may not, so they are not compared.
DATA_KEYS = ("seq_len", "d_in", "n_classes", "vocab_size")
HINT = "move it away or choose another --out"


def _kind(path: Path) -> str | None:
    """ "file", "folder", "other" (a FIFO, socket or device) or None when nothing is at `path` (a broken link is
    "other")."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "other" if path.is_symlink() else None
    except OSError as e:
        raise ValueError(f"--out: cannot inspect {path} ({e.strerror or type(e).__name__})") from None
    return "file" if stat.S_ISREG(mode) else "folder" if stat.S_ISDIR(mode) else "other"


def _comparable(config: dict, axis: str) -> dict:
    """A point's config without what varies over a sweep (the size on `axis`, the seed) or comes from the data."""
    d = json.loads(json.dumps(config, sort_keys=True))
    d.pop("seed", None)
    model = d.get("model") if isinstance(d.get("model"), dict) else {}
    for k in (axis, *DATA_KEYS):
        model.pop(k, None)
    return d


def _listed(diffs: list[str], most: int = 3) -> str:
    """The first `most` differences, '; '-separated, and how many more there are."""
    more = f"; and {len(diffs) - most} more" if len(diffs) > most else ""
    return "; ".join(diffs[:most]) + more


def check_store(cfg: RunConfig, axis: str, out: Path, init_only: bool = False) -> None:
    """ValueError unless the store `<out>.parts/` is absent, or a folder with no manifest (its parts are redone), or
    one whose manifest is readable and records a sweep along `axis` with cfg's settings (what `SweepStore.open`
    resumes). Reads the manifest only."""
    from probes.grid.store import (
        MANIFEST,
        check_manifest,
        comparable_config,
        config_differences,
        config_hash,
        parts_dir,
    )

    folder = parts_dir(out)
    kind = _kind(folder)
    if kind is None:
        return
    if kind != "folder":
        raise ValueError(f"--out: {folder} (the store of {Path(out).name}) is not a folder; {HINT}")
    path = folder / MANIFEST
    kind = _kind(path)
    if kind is None:
        return
    try:
        if kind != "file":
            raise ValueError("not a regular file")
        manifest = check_manifest(json.loads(path.read_text()))  # the store's own schema check
    except RecursionError:
        raise ValueError(f"--out: {path} is not a readable sweep manifest (nested too deeply); {HINT}") from None
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0][:80]
        raise ValueError(f"--out: {path} is not a readable sweep manifest ({why}); {HINT}") from None
    if manifest.get("axis") != axis:
        raise ValueError(f"--out: {folder} holds a sweep along {manifest.get('axis')!r}, not {axis}; {HINT}"[:300])
    comparable = comparable_config(cfg, axis)
    diffs = []
    if bool(manifest.get("init_only")) != bool(init_only):
        diffs.append(f"init_only: {bool(manifest.get('init_only'))} -> {bool(init_only)}")
    if manifest.get("config_hash") != config_hash(comparable):
        base = manifest.get("base_config")
        diffs += config_differences(base if isinstance(base, dict) else {}, comparable) or ["the config hash"]
    if diffs:
        raise ValueError(f"--out: {folder} was swept with other settings ({_listed(diffs)}); {HINT}")


def _load(path: Path):
    """The dataset at `path` (probes.experiment.dataset.load), or ValueError naming --out and the file."""
    from probes.experiment.dataset import DatasetError, load

    kind = _kind(path)
    if kind != "file" and not (kind == "folder" and path.suffix == ".zarr"):
        raise ValueError(f"--out: {path} is not a dataset file; {HINT}")
    try:
        return load(path)
    except (DatasetError, OSError, ValueError) as e:
        why = str(e).splitlines()[0][:200]
        raise ValueError(f"--out: {why if str(path) in why else f'{path}: {why}'}; {HINT}") from None


def check_sweep_file(cfg: RunConfig, axis: str, values: list[int], seeds: list[int], path: Path) -> None:
    """ValueError unless `path` is absent or a sweep dataset along `axis` over exactly `values` x `seeds` whose
    config matches cfg in everything but the size, the seed and the data-derived sizes (DATA_KEYS)."""
    from probes.grid.store import comparable_config, config_differences

    if _kind(path) is None:
        return
    ds = _load(path)
    if ds.attrs.get("kind") is not None or ds.attrs.get("sweep_axis") != axis or axis not in ds.dims:
        what = ds.attrs.get("kind") or f"along {ds.attrs.get('sweep_axis', 'no axis')}"
        raise ValueError(f"--out: {path} is not a sweep along {axis} ({what}); {HINT}"[:300])
    diffs = []
    old_values = sorted(int(v) for v in ds[axis].values)
    old_seeds = sorted(int(s) for s in ds["seed"].values) if "seed" in ds.dims else []
    if old_values != sorted(values):
        diffs.append(f"{axis}: {old_values} -> {sorted(values)}")
    if old_seeds != sorted(seeds):
        diffs.append(f"seeds: {old_seeds} -> {sorted(seeds)}")
    try:
        old = _comparable(json.loads(ds.attrs["config"]), axis)
    except (KeyError, TypeError, ValueError):
        diffs.append("config: unreadable")
    else:
        diffs += config_differences(old, _comparable(comparable_config(cfg, axis), axis))
    if diffs:
        raise ValueError(f"--out: {path} holds another sweep ({_listed(diffs)}); {HINT}")


def check_sweep_out(
    cfg: RunConfig, axis: str, values: list[int], seeds: list[int], out: Path, init_only: bool = False
) -> None:
    """The store and the merged file of one sweep (`check_store`, `check_sweep_file`); nothing is written."""
    check_store(cfg, axis, out, init_only)
    check_sweep_file(cfg, axis, values, seeds, Path(out))


def check_lr_grid_out(
    cfg: RunConfig, axis: str, values: list[int], etas: list[float], seeds: int | list[int], out: Path
) -> None:
    """A learning-rate grid's output: absent, or this very grid (`probes.grid.lr_grid.check_lr_grid_out`); when
    absent, the stores of an interrupted grid in `<out>.parts/` resumable with its settings
    (`probes.grid.lr_grid.check_lr_grid_stores`)."""
    from probes.grid.lr_grid import check_lr_grid_out as check
    from probes.grid.lr_grid import check_lr_grid_stores

    if _kind(Path(out)) is not None:  # (its folder may not exist yet: the command makes it)
        check(cfg, axis, values, etas, seeds, Path(out))
    else:
        check_lr_grid_stores(cfg, axis, etas, Path(out))

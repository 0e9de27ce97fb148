"""The on-disk store of a sweep: `<out>.parts/`, with a manifest and one finished dataset per grid point.

Layout:

    <out>.parts/manifest.json          the grid (axis, values, seeds), the base config and its hash, and per point
                                       its status (pending, running, done, diverged, failed + message) and, once
                                       finished, the size and sha256 of its part
    <out>.parts/<axis><v>-seed<s>.nc   the finished run of one point, written by `probes.dataset.save` (atomic)

The manifest is written atomically (a temporary file in the folder, fsync, os.replace, fsync of the folder). Opening
a store (`SweepStore.open`):

1. takes an exclusive lock on the folder (flock; released when the process ends, even by SIGKILL), so two sweeps
   never write one store;
2. refuses a base config that differs from the stored one in anything but the swept size and the seed (ValueError,
   one line naming each setting with its old and new value), before anything is touched;
3. removes the temporary files (`.tmp-*`) that killed saves left in the folder;
4. checks every finished part: one that is missing, whose bytes changed since it was recorded, or that
   `probes.dataset.load` rejects is named in a warning and set back to pending (redone); points left `running` by
   a killed sweep are set back to pending too;
5. extends the grid by the values and seeds asked for now (new points are pending).

Points are named by the size and the actual seed (`N8-seed1`). The config hash is the sha256 of the canonical JSON
(sorted keys, no spaces) of `RunConfig.to_dict()` without the swept size (`model.<axis>`) and the seed.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import xarray as xr

from .dataset import DatasetError, fsync_dir, combine_runs, load
from .run import RunConfig

MANIFEST = "manifest.json"
FORMAT = 1
TEMP_PREFIX = ".tmp-"
STATUSES = ("pending", "running", "done", "diverged", "failed")
FINISHED = ("done", "diverged")

# Command-line flags of the config keys a user is most likely to change (for the refusal message).
FLAGS = {"steps": "--steps", "batch_size": "--batch-size", "device": "--device", "data_path": "--data",
         "precision": "--precision", "compile": "--compile", "model.task": "--task", "model.N": "--N",
         "model.H": "--H", "model.L": "--L", "model.lws": "--lws", "model.seq_len": "--seq-len",
         "param.name": "--param", "optim.name": "--optimizer", "optim.eta0": "--eta0",
         "optim.weight_decay": "--weight-decay", "probes.every": "--probe-every",
         "probes.n_samples": "--probe-samples", "probes.at": "--steps"}


def parts_dir(out: str | os.PathLike) -> Path:
    """The store folder of the merged output `out`: `<out>.parts/`."""
    out = Path(out)
    return out.with_name(out.name + ".parts")


def point_name(axis: str, value: int, seed: int) -> str:
    """The name of a grid point, also the stem of its part file: e.g. `N8-seed1`."""
    return f"{axis}{value}-seed{seed}"


def comparable_config(cfg: RunConfig, axis: str) -> dict:
    """cfg.to_dict() without the swept size and the seed, normalised through JSON (tuples become lists): what
    every point of one store shares."""
    d = cfg.to_dict()
    d.pop("seed", None)
    d["model"].pop(axis, None)
    return json.loads(json.dumps(d, sort_keys=True))


def config_hash(comparable: dict) -> str:
    """sha256 (hex) of the canonical JSON of a comparable config."""
    return hashlib.sha256(json.dumps(comparable, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _leaves(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


_UNSET = "(unset)"


def config_differences(old: dict, new: dict) -> list[str]:
    """'setting (flag): old -> new' for every leaf that differs between two comparable configs, sorted by key.
    A changed parametrization is reported once, by its name (param.name spells the preset and its overrides)."""
    a, b = _leaves(old), _leaves(new)
    keys = sorted(set(a) | set(b))
    if a.get("param.name") != b.get("param.name"):
        keys = [k for k in keys if not k.startswith("param.") or k == "param.name"]
    lines = []
    for k in keys:
        va, vb = a.get(k, _UNSET), b.get(k, _UNSET)
        if va != vb:
            flag = f" ({FLAGS[k]})" if k in FLAGS else ""
            lines.append(f"{k}{flag}: {json.dumps(va)} -> {json.dumps(vb)}")
    return lines


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _lock(folder: Path) -> int | None:
    """An exclusive flock on `folder` (its fd, to keep open), or None where folders cannot be locked (then the
    store works unlocked); ValueError naming --out when another process holds it."""
    try:
        import fcntl
    except ImportError:          # not POSIX
        return None
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ValueError(f"--out: another sweep is writing to {folder} right now; wait for it to finish "
                             "or choose another --out") from None
        return None              # e.g. a file system without flock
    return fd


class SweepStore:
    """An open sweep store (see the module docstring). Use `SweepStore.open(...)`, and `close()` (or `with`)."""

    def __init__(self, folder: Path, manifest: dict, lock_fd: int | None,
                 warn: Callable[[str], None]):
        self.folder = folder
        self.manifest = manifest
        self._lock_fd = lock_fd
        self._warn = warn
        self._loaded: dict[str, xr.Dataset] = {}

    # ---- opening ------------------------------------------------------------------------------------------------

    @classmethod
    def open(cls, out: str | os.PathLike, cfg: RunConfig, axis: str, values: list[int], seeds: list[int],
             init_only: bool = False, warn: Callable[[str], None] | None = None) -> "SweepStore":
        """Open (or create) the store of the merged output `out` for the grid values x seeds of `cfg` (the config
        every point shares; its size on `axis` and its seed are ignored). Returns the open store, with its
        finished parts checked and loaded. ValueError (one line) when the store was made with other settings,
        when another sweep holds it, or when its manifest cannot be read; nothing is changed then."""
        warn = warn or (lambda msg: None)
        folder = parts_dir(out)
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(folder)
        try:
            comparable = comparable_config(cfg, axis)
            path = folder / MANIFEST
            if path.exists():
                manifest = cls._read(path, folder)
                cls._check_compatible(manifest, folder, axis, comparable, init_only)
            else:
                stale = sorted(p.name for p in folder.glob("*.nc"))
                if stale:
                    warn(f"warning: {folder} has no {MANIFEST} (made by an older dmft-probe?): its {len(stale)} "
                         "part file(s) are not trusted and will be redone")
                manifest = {"format": FORMAT, "axis": axis, "values": [], "seeds": [], "init_only": bool(init_only),
                            "config_hash": config_hash(comparable), "base_config": comparable, "points": {}}
            store = cls(folder, manifest, lock_fd, warn)
            store._remove_temporaries()
            store._check_parts()
            store._extend(values, seeds)
            store._write()
            return store
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise

    @staticmethod
    def _read(path: Path, folder: Path) -> dict:
        try:
            manifest = json.loads(path.read_text())
            if manifest.get("format") != FORMAT or not isinstance(manifest.get("points"), dict):
                raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT}")
            return manifest
        except (OSError, ValueError, AttributeError) as e:
            raise ValueError(f"--out: {path} is not a readable sweep manifest ({e}); remove {folder} to start "
                             "the sweep over") from None

    @staticmethod
    def _check_compatible(manifest: dict, folder: Path, axis: str, comparable: dict, init_only: bool) -> None:
        """ValueError naming every setting that differs from the store's (old -> new)."""
        if manifest.get("axis") != axis:
            raise ValueError(f"--axis: {folder} holds a sweep along {manifest.get('axis')}, not {axis}; use the "
                             "same --axis to resume it or choose another --out")
        diffs = []
        if bool(manifest.get("init_only")) != bool(init_only):
            diffs.append(f"--init-only: {'on' if manifest.get('init_only') else 'off'} -> {'on' if init_only else 'off'}")
        if manifest.get("config_hash") != config_hash(comparable):
            diffs += config_differences(manifest.get("base_config", {}), comparable) or ["the config hash"]
        if diffs:
            raise ValueError(f"--out: {folder} was swept with other settings ({'; '.join(diffs)}); its points "
                             "would not be comparable: use the same settings to resume it or choose another --out")

    def _remove_temporaries(self) -> None:
        """Remove `.tmp-*` files and folders that killed saves left (this process holds the lock)."""
        for p in self.folder.iterdir():
            if p.name.startswith(TEMP_PREFIX):
                try:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
                except FileNotFoundError:
                    pass

    def _check_parts(self) -> None:
        """Load every finished part; reset what is missing, changed or unreadable (and `running` points of a
        killed sweep) to pending."""
        for name, point in self.manifest["points"].items():
            if point["status"] == "running":
                point["status"] = "pending"
            if point["status"] not in FINISHED:
                continue
            path = self.part_path(point["value"], point["seed"])
            try:
                if not path.exists():
                    raise DatasetError(f"{path}: no such file")
                if point.get("sha256") and (path.stat().st_size != point.get("bytes")
                                            or file_sha256(path) != point["sha256"]):
                    raise DatasetError(f"{path}: corrupt (its bytes changed since it was written: sha256 mismatch)")
                self._loaded[name] = load(path)
            except DatasetError as e:
                self._warn(f"warning: redoing {name}: {str(e).splitlines()[0]}")
                point.update(status="pending", message=None, sha256=None, bytes=None)

    def _extend(self, values: list[int], seeds: list[int]) -> None:
        m = self.manifest
        m["values"] = sorted(set(m["values"]) | set(int(v) for v in values))
        m["seeds"] = sorted(set(m["seeds"]) | set(int(s) for s in seeds))
        for v in values:
            for s in seeds:
                m["points"].setdefault(point_name(m["axis"], v, s), {
                    "value": int(v), "seed": int(s), "status": "pending", "message": None, "sha256": None,
                    "bytes": None})

    # ---- reading ------------------------------------------------------------------------------------------------

    @property
    def axis(self) -> str:
        return self.manifest["axis"]

    def part_path(self, value: int, seed: int) -> Path:
        """The part file of a point."""
        return self.folder / f"{point_name(self.axis, value, seed)}.nc"

    def status(self, value: int, seed: int) -> str:
        """The point's status: pending, running, done, diverged or failed."""
        return self.manifest["points"][point_name(self.axis, value, seed)]["status"]

    def message(self, value: int, seed: int) -> str | None:
        """The failure message of a failed point (None otherwise)."""
        return self.manifest["points"][point_name(self.axis, value, seed)].get("message")

    # ---- writing ------------------------------------------------------------------------------------------------

    def mark(self, points: list[tuple[int, int]], status: str, message: str | None = None,
             detail: str | None = None) -> None:
        """Set the status of points [(value, seed), ...] (message and detail: a failure's one line and its
        traceback) and write the manifest."""
        if status not in STATUSES:
            raise ValueError(f"unknown point status {status!r}")
        for v, s in points:
            point = self.manifest["points"][point_name(self.axis, v, s)]
            point.update(status=status, message=message)
            if detail is not None:
                point["detail"] = detail
            else:
                point.pop("detail", None)
        self._write()

    def record(self, finished: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
        """Record points [(value, seed, status)] whose parts a worker has written (status done or diverged): each
        part is loaded and its size and sha256 stored. A part that cannot be loaded makes its point failed.
        Writes the manifest once; returns [(value, seed, failure message)] of the points that failed."""
        failed = []
        for v, s, status in finished:
            name, path = point_name(self.axis, v, s), self.part_path(v, s)
            point = self.manifest["points"][name]
            try:
                ds = load(path)
                point.update(status=status, message=None, sha256=file_sha256(path), bytes=path.stat().st_size)
                point.pop("detail", None)
                self._loaded[name] = ds
            except DatasetError as e:
                msg = (f"{str(e).splitlines()[0]} (the worker reported it written: is {self.folder} on a file "
                       "system that every worker shares?)")
                point.update(status="failed", message=msg)
                failed.append((v, s, msg))
        self._write()
        return failed

    def _write(self) -> None:
        """Write the manifest atomically: temporary file, fsync, os.replace, fsync of the folder."""
        text = json.dumps(self.manifest, indent=1, sort_keys=True) + "\n"
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + "manifest-", suffix=".json", dir=self.folder)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, self.folder / MANIFEST)
            tmp = None
        finally:
            if tmp is not None and os.path.exists(tmp):
                os.unlink(tmp)
        fsync_dir(self.folder)

    # ---- combining ----------------------------------------------------------------------------------------------

    def combine(self, values: list[int], seeds: list[int]) -> xr.Dataset:
        """The points values x seeds (all finished) merged into one dataset with dims (axis, seed, ...)."""
        per_value = []
        for v in sorted(values):
            runs = []
            for s in sorted(seeds):
                name = point_name(self.axis, v, s)
                if self.manifest["points"][name]["status"] not in FINISHED:
                    raise RuntimeError(f"point {name} is not finished")      # a bug: callers check first
                if name not in self._loaded:
                    self._loaded[name] = load(self.part_path(v, s))
                runs.append(self._loaded[name])
            per_value.append(combine_runs(runs, "seed"))
        return combine_runs(per_value, self.axis)

    def close(self) -> None:
        """Release the lock (the manifest is always up to date on disk)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._loaded.clear()

    def __enter__(self) -> "SweepStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

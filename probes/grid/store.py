"""The on-disk store of a sweep: `<out>.parts/`, with a manifest and one finished dataset per grid point.

Layout:

    <out>.parts/manifest.json          the grid (axis, values, seeds), the base config and its hash, the ensemble
                                       mode, the grid last merged into `out`, and per point its status (pending,
                                       running, done, diverged, failed + message), the seed group it trains in and,
                                       once finished, the size and sha256 of its part
    <out>.parts/<axis><v>-seed<s>.nc   the finished run of one point, written by `probes.experiment.dataset.save` (atomic); its
                                       attrs `ensemble_group` (JSON list of seeds) and `ensemble_mode` say how it
                                       was trained, `sweep_config` the comparable config of the sweep that
                                       made it (what --rebuild-manifest compares); the schema of both is in
                                       `probes.grid.manifest`

The manifest is written atomically (`probes.experiment.atomic`: a temporary file in the folder, fsync, os.replace,
fsync of the folder). Opening
a store (`SweepStore.open`):

1. takes an exclusive lock on the folder (flock; released when the process ends, even by SIGKILL), so two sweeps
   never write one store;
2. reads the manifest and checks every field's type (`probes.grid.manifest.check_manifest`); a manifest that is not
   valid JSON or not a valid manifest is refused (ValueError, one line naming the file and the first problem, with
   the repair: `--rebuild-manifest`, which writes a fresh manifest from the parts' own metadata and checksums,
   `rebuild=True`, `probes.grid.manifest.rebuild_manifest`);
3. refuses a base config that differs from the stored one in anything but the swept size and the seed, and an
   ensemble mode other than the stored one (ValueError, one line naming each setting with its old and new value);
4. refuses, when `out` exists, a grid that does not contain the grid last merged into it (values and seeds both
   supersets), unless `overwrite`: a merged result is never replaced by another grid silently;
   nothing is changed on disk by any refusal;
5. removes the temporary files (`.tmp-*`) that killed saves left in the folder;
6. checks every finished part: one that is missing, whose bytes changed since it was recorded, or that
   `probes.experiment.dataset.load` rejects is named in a warning and set back to pending (redone); points left `running` by
   a killed sweep are set back to pending too. A point keeps the group it was trained in, so that it is redone in
   that very group (bit for bit the numbers of the first time);
7. extends the grid by the values and seeds asked for now (new points are pending, without a group).

Points are named by the size and the actual seed (`N8-seed1`). The config hash is the sha256 of the canonical JSON
(sorted keys, no spaces) of `RunConfig.to_dict()` without the swept size (`model.<axis>`) and the seed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import xarray as xr

from probes.experiment.atomic import TEMP_PREFIX, write_atomic
from probes.experiment.dataset import DatasetError, combine_runs, load, validate
from probes.experiment.run import RunConfig
from probes.grid.manifest import (  # noqa: F401
    FINISHED,
    FORMAT,
    MANIFEST,
    STATUSES,
    check_manifest,
    comparable_config,
    config_differences,
    config_hash,
    ensemble_diff,
    file_sha256,
    new_manifest,
    point_name,
    rebuild_manifest,
)

REBUILD_HINT = (
    "rerun with --rebuild-manifest to rebuild it from the parts' own metadata and checksums, or choose another --out"
)


def parts_dir(out: str | os.PathLike) -> Path:
    """The store folder of the merged output `out`: `<out>.parts/`. ValueError naming --out when `out` has no
    file name (e.g. "" or "/")."""
    out = Path(out)
    if not out.name or out.name in (".", ".."):
        raise ValueError(
            f"--out: no file name (an empty --out, or a folder such as {str(out)!r}); give a file "
            "name ending in .nc or .zarr"
        )
    return out.with_name(out.name + ".parts")


def _grid_in(out: Path, axis: str) -> tuple[list[int], list[int]] | None:
    """(values, seeds) of the merged sweep dataset `out` (its coordinates only, nothing else read); None when it
    cannot be read as one."""
    try:
        if out.suffix == ".zarr":
            ds = xr.open_zarr(out)
        else:
            ds = xr.open_dataset(out, engine="h5netcdf")
        with ds:
            return sorted(int(v) for v in ds[axis].values), sorted(int(s) for s in ds["seed"].values)
    except Exception:  # any reader error: h5py, zarr, a missing coordinate
        return None


def _seeds_hint(seeds: list[int], base: int) -> str:
    """' --seeds k' when `seeds` are base + 0..k-1 (what --seeds k gives), else ''."""
    return f" --seeds {len(seeds)}" if seeds == list(range(base, base + len(seeds))) else ""


def _lock(folder: Path) -> int | None:
    """An exclusive flock on `folder` (its fd, to keep open), or None where folders cannot be locked (then the
    store works unlocked); ValueError naming --out when another process holds it."""
    try:
        import fcntl
    except ImportError:  # not POSIX
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
            raise ValueError(
                f"--out: another sweep is writing to {folder} right now; wait for it to finish or choose another --out"
            ) from None
        return None  # e.g. a file system without flock
    return fd


def make_folder(folder: Path) -> None:
    """Create the store folder (and its parents); ValueError naming --out when a file is in the way or it
    cannot be created."""
    if (folder.exists() or folder.is_symlink()) and not folder.is_dir():
        raise ValueError(
            f"--out: {folder} exists and is not a folder (it is where the sweep's parts go): move it "
            "away or choose another --out"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out: cannot create the parts folder {folder} ({e.strerror or type(e).__name__})") from None


def _sha_or_empty(path: Path) -> str:
    """sha256 (hex) of the file at `path`, or "" where it cannot be read as a file."""
    try:
        return file_sha256(path) if path.is_file() else ""
    except OSError:
        return ""


class SweepStore:
    """An open sweep store (see the module docstring). Use `SweepStore.open(...)`, and `close()` (or `with`)."""

    def __init__(self, folder: Path, manifest: dict, lock_fd: int | None, warn: Callable[[str], None]):
        self.folder = folder
        self.manifest = manifest
        self._lock_fd = lock_fd
        self._warn = warn
        self._loaded: dict[str, xr.Dataset] = {}
        self._groups: dict[tuple[int, int], tuple[int, ...]] | None = None

    # ---- opening ------------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        out: str | os.PathLike,
        cfg: RunConfig,
        axis: str,
        values: list[int],
        seeds: list[int],
        init_only: bool = False,
        warn: Callable[[str], None] | None = None,
        ensemble: str = "auto",
        overwrite: bool = False,
        rebuild: bool = False,
    ) -> SweepStore:
        """Open (or create) the store of the merged output `out` for the grid values x seeds of `cfg` (the config
        every point shares; its size on `axis` and its seed are ignored), trained in ensemble mode `ensemble`
        ("auto" or "off"). Returns the open store, with its finished parts checked and loaded. ValueError (one
        line) when the store was made with other settings, when another sweep holds it, when its manifest is
        missing or cannot be read (`rebuild`: write a fresh one from the parts instead), or when `out` exists and
        holds a merged grid that values x seeds does not contain (unless `overwrite`); nothing is changed then.
        warn(line) gets the warnings, after every check has passed."""
        warn = warn or (lambda msg: None)
        out = Path(out)
        folder = parts_dir(out)
        created = not (folder.exists() or folder.is_symlink())
        make_folder(folder)
        lock_fd = _lock(folder)
        try:
            notes: list[str] = []
            comparable = comparable_config(cfg, axis)
            path = folder / MANIFEST
            if rebuild:
                manifest = rebuild_manifest(folder, axis, comparable, init_only, ensemble, notes)
            elif path.exists() or path.is_symlink():
                manifest = cls._read(path)
                cls._check_compatible(manifest, folder, axis, comparable, init_only, ensemble)
            else:
                stale = sorted(p.name for p in folder.glob("*.nc") if not p.name.startswith(TEMP_PREFIX))
                if stale:
                    raise ValueError(
                        f"--out: {folder} holds {len(stale)} part file(s) but no {MANIFEST}; {REBUILD_HINT}"
                    )
                manifest = new_manifest(axis, comparable, init_only)
            manifest["ensemble"] = ensemble
            cls._check_merged(manifest, out, folder, values, seeds, overwrite)
            store = cls(folder, manifest, lock_fd, warn)
            for line in notes:
                warn(line)
            store._remove_temporaries()
            store._check_parts()
            store._extend(values, seeds)
            store._write()
            return store
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            if created:  # refused before anything was stored: leave no empty folder behind
                shutil.rmtree(folder, ignore_errors=True)
            raise

    @staticmethod
    def _read(path: Path) -> dict:
        """The manifest at `path`, checked (`check_manifest`); ValueError naming the file, the first problem and
        the repair otherwise."""
        try:
            if not path.is_file():
                raise ValueError("not a regular file")
            return check_manifest(json.loads(path.read_text()))
        except UnicodeDecodeError:
            problem = "not UTF-8 text"
        except json.JSONDecodeError as e:
            problem = f"not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        except RecursionError:
            problem = "nested too deeply"
        except OSError as e:
            problem = f"cannot be read: {e.strerror or type(e).__name__}"
        except ValueError as e:
            problem = str(e).splitlines()[0] if str(e) else "invalid"
        raise ValueError(f"--out: {path} is not a valid sweep manifest ({problem}); {REBUILD_HINT}")

    @staticmethod
    def _check_compatible(
        manifest: dict, folder: Path, axis: str, comparable: dict, init_only: bool, ensemble: str
    ) -> None:
        """ValueError naming every setting that differs from the store's (old -> new)."""
        if manifest["axis"] != axis:
            raise ValueError(
                f"--axis: {folder} holds a sweep along {manifest['axis']}, not {axis}; use the "
                "same --axis to resume it or choose another --out"
            )
        diffs = []
        if manifest["init_only"] != bool(init_only):
            diffs.append(f"--init-only: {'on' if manifest['init_only'] else 'off'} -> {'on' if init_only else 'off'}")
        if manifest["config_hash"] != config_hash(comparable):
            diffs += config_differences(manifest["base_config"], comparable) or ["the config hash"]
        if manifest.get("ensemble") is not None and manifest["ensemble"] != ensemble:
            diffs.append(ensemble_diff(manifest["ensemble"], ensemble))
        if diffs:
            raise ValueError(
                f"--out: {folder} was swept with other settings ({'; '.join(diffs)}); its points "
                "would not be comparable: use the same settings to resume it or choose another --out"
            )

    @staticmethod
    def _check_merged(
        manifest: dict, out: Path, folder: Path, values: list[int], seeds: list[int], overwrite: bool
    ) -> None:
        """ValueError when `out` exists and the grid values x seeds does not contain the grid merged into it (the
        manifest's record, else `out`'s own coordinates), unless `overwrite`."""
        if overwrite or not (out.exists() or out.is_symlink()):
            return
        axis, rec = manifest["axis"], manifest.get("merged")
        grid = (rec["values"], rec["seeds"]) if rec else _grid_in(out, axis)
        if grid is None:
            raise ValueError(
                f"--out: {out} exists and is not a sweep dataset along {axis}; pass --overwrite to "
                "replace it or choose another --out"
            )
        old_v, old_s = sorted(grid[0]), sorted(grid[1])
        lost_v, lost_s = sorted(set(old_v) - set(values)), sorted(set(old_s) - set(seeds))
        if not lost_v and not lost_s:
            return
        lost = " and ".join(
            t for t in (f"{axis} = {lost_v}" if lost_v else "", f"seeds {lost_s}" if lost_s else "") if t
        )
        union_v = sorted(set(old_v) | set(values))
        hint = f"--values {','.join(map(str, union_v))}{_seeds_hint(sorted(set(old_s) | set(seeds)), min(seeds))}"
        raise ValueError(
            f"--out: {out} holds the merged grid {axis} = {old_v} x seeds {old_s}, and this grid "
            f"({axis} = {sorted(values)} x seeds {sorted(seeds)}) leaves out {lost}: to extend it, give "
            f"the old values and seeds plus the new ones ({hint}); or start a new --out; or pass "
            f"--overwrite to rewrite it with exactly this grid (the finished parts stay in {folder})"
        )

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
        killed sweep) to pending. A reset point keeps its group."""
        for name, point in self.manifest["points"].items():
            if point["status"] == "running":
                point["status"] = "pending"
            if point["status"] not in FINISHED:
                continue
            path = self.part_path(point["value"], point["seed"])
            try:
                if not path.exists():
                    raise DatasetError(f"{path}: no such file")
                if point.get("sha256") and (
                    path.stat().st_size != point.get("bytes") or file_sha256(path) != point["sha256"]
                ):
                    raise DatasetError(f"{path}: corrupt (its bytes changed since it was written: sha256 mismatch)")
                self._loaded[name] = load(path)
            except DatasetError as e:
                self._warn(f"warning: redoing {name}: {str(e).splitlines()[0]}")
                point.update(status="pending", message=None, sha256=None, bytes=None)

    def _extend(self, values: list[int], seeds: list[int]) -> None:
        m = self.manifest
        m["values"] = sorted(set(m["values"]) | set(int(v) for v in values))
        m["seeds"] = sorted(set(m["seeds"]) | set(int(s) for s in seeds))
        for v in m["values"]:
            for s in m["seeds"]:
                m["points"].setdefault(
                    point_name(m["axis"], v, s),
                    {
                        "value": int(v),
                        "seed": int(s),
                        "status": "pending",
                        "message": None,
                        "sha256": None,
                        "bytes": None,
                    },
                )

    # ---- reading ------------------------------------------------------------------------------------------------

    @property
    def axis(self) -> str:
        return self.manifest["axis"]

    @property
    def ensemble(self) -> str:
        """The ensemble mode the store's points train in: "auto" or "off"."""
        return self.manifest["ensemble"]

    def part_path(self, value: int, seed: int) -> Path:
        """The part file of a point."""
        return self.folder / f"{point_name(self.axis, value, seed)}.nc"

    def status(self, value: int, seed: int) -> str:
        """The point's status: pending, running, done, diverged or failed."""
        return self.manifest["points"][point_name(self.axis, value, seed)]["status"]

    def finished(self, value: int, seed: int) -> bool:
        """Whether the point is done or diverged (its part checked)."""
        return self.status(value, seed) in FINISHED

    def message(self, value: int, seed: int) -> str | None:
        """The failure message of a failed point (None otherwise)."""
        return self.manifest["points"][point_name(self.axis, value, seed)].get("message")

    def part(self, value: int, seed: int) -> xr.Dataset:
        """The dataset of a finished point (loaded once, `probes.experiment.dataset.load`)."""
        name = point_name(self.axis, value, seed)
        if self.manifest["points"][name]["status"] not in FINISHED:
            raise RuntimeError(f"point {name} is not finished")  # a bug: callers check first
        if name not in self._loaded:
            self._loaded[name] = load(self.part_path(value, seed))
        return self._loaded[name]

    def group(self, value: int, seed: int) -> tuple[int, ...] | None:
        """The seeds the point trains with, in their order, as recorded when it was first handed out (its own
        record, or that of another point of its size whose group holds it); None when none is recorded."""
        if self._groups is None:  # (value, seed) -> group, from every point that records one
            self._groups = {}
            for p in self.manifest["points"].values():
                for s in p.get("group") or []:
                    self._groups.setdefault((p["value"], s), tuple(p["group"]))
        own = self.manifest["points"][point_name(self.axis, value, seed)].get("group")
        return tuple(own) if own else self._groups.get((value, seed))

    # ---- writing ------------------------------------------------------------------------------------------------

    def mark(
        self,
        points: list[tuple[int, int]],
        status: str,
        message: str | None = None,
        detail: str | None = None,
        group: tuple[int, ...] | None = None,
    ) -> None:
        """Set the status of points [(value, seed), ...] (message and detail: a failure's one line and its
        traceback; group: the seeds they train with, recorded) and write the manifest."""
        if status not in STATUSES:
            raise ValueError(f"unknown point status {status!r}")
        for v, s in points:
            point = self.manifest["points"][point_name(self.axis, v, s)]
            point.update(status=status, message=message)
            if detail is not None:
                point["detail"] = detail
            else:
                point.pop("detail", None)
            if group is not None:
                point["group"] = [int(g) for g in group]
                self._groups = None
        self._write()

    def record(
        self,
        finished: list[tuple[int, int, str]],
        written: dict[tuple[int, int], tuple[xr.Dataset, str]] | None = None,
    ) -> list[tuple[int, int, str]]:
        """Record points [(value, seed, status)] whose parts a worker has written (status done or diverged): each
        part is loaded and its size and sha256 stored. A part that cannot be loaded makes its point failed.
        written: {(value, seed): (dataset, sha256)} from a worker of this process (`probes.grid.sweep.PointResult`):
        where the file's sha256 is still that one, its bytes are the ones written from that dataset, which is taken
        as it is (schema checked) instead of reading the file back. Writes the manifest once; returns [(value, seed,
        failure message)] of the points that failed."""
        failed = []
        for v, s, status in finished:
            name, path = point_name(self.axis, v, s), self.part_path(v, s)
            point = self.manifest["points"][name]
            try:
                held = (written or {}).get((v, s))
                sha = _sha_or_empty(path)  # "": unreadable; load then says why
                ds = validate(held[0], str(path)) if held is not None and held[1] == sha else load(path)
                point.update(status=status, message=None, sha256=sha or file_sha256(path), bytes=path.stat().st_size)
                point.pop("detail", None)
                self._loaded[name] = ds
            except DatasetError as e:
                msg = (
                    f"{str(e).splitlines()[0]} (the worker reported it written: is {self.folder} on a file "
                    "system that every worker shares?)"
                )
                point.update(status="failed", message=msg)
                failed.append((v, s, msg))
        self._write()
        return failed

    def set_merged(self, values: list[int], seeds: list[int]) -> None:
        """Record the grid just merged into `out` (after it was saved) and write the manifest."""
        self.manifest["merged"] = {"values": sorted(int(v) for v in values), "seeds": sorted(int(s) for s in seeds)}
        self._write()

    def _write(self) -> None:
        """Write the manifest atomically (`probes.experiment.atomic.write_atomic`: temporary file, fsync,
        os.replace, fsync of the folder)."""
        text = json.dumps(self.manifest, indent=1, sort_keys=True) + "\n"
        write_atomic(self.folder / MANIFEST, lambda tmp: tmp.write_text(text), prefix=TEMP_PREFIX + "manifest-")

    # ---- combining ----------------------------------------------------------------------------------------------

    def combine(self, values: list[int], seeds: list[int]) -> xr.Dataset:
        """The points values x seeds (all finished) merged into one dataset with dims (axis, seed, ...)."""
        per_value = []
        for v in sorted(values):
            runs = []
            for s in sorted(seeds):
                runs.append(self.part(v, s))
            per_value.append(combine_runs(runs, "seed"))
        return combine_runs(per_value, self.axis)

    def close(self) -> None:
        """Release the lock (the manifest is always up to date on disk)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._loaded.clear()

    def __enter__(self) -> SweepStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

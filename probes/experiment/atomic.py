"""The one atomic writer: a file (or folder) is written under a temporary name in its own folder, fsynced, renamed
into place with os.replace and the folder fsynced, so a crash never leaves a partial output and a finished write
survives a power cut. Every dataset (`probes.experiment.dataset.save`), the sweep store's manifest
(`probes.grid.store`) and the command line's tables (CSV, Markdown, netCDF) are written through it.

Temporary names start with TEMP_PREFIX (`.tmp-`); those of datasets (`.tmp-XXXXXXXX.nc`, `.tmp-XXXXXXXX.zarr`) are
what `cleanup_stale_temps` removes once a killed writer left them behind.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "STALE_TEMP_AGE_S",
    "TEMP_NAME",
    "TEMP_PREFIX",
    "cleanup_stale_temps",
    "fsync_dir",
    "fsync_tree",
    "write_atomic",
    "write_folder_atomic",
]

TEMP_PREFIX = ".tmp-"
STALE_TEMP_AGE_S = 60.0
TEMP_NAME = re.compile(r"^\.tmp-[A-Za-z0-9_]+\.(nc|zarr)$")  # what mkstemp/mkdtemp make for a dataset


def fsync_dir(folder: Path) -> None:
    """fsync a folder so a rename in it is durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root` (a zarr store before it is renamed into place)."""
    for dirpath, _, files in os.walk(root):
        for n in files:
            _fsync_file(os.path.join(dirpath, n))
        fsync_dir(Path(dirpath))


def _usual_mode(path: str | os.PathLike) -> None:
    """mkstemp makes 0600; give the file the permissions a plain open() would (0666 less the umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _folder_of(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def write_atomic(path: str | os.PathLike, write: Callable[[Path], object], prefix: str = TEMP_PREFIX) -> Path:
    """Write the file `path` atomically: write(tmp) fills a temporary file `<prefix>XXXXXXXX<suffix of path>` in
    the same folder (it exists, empty, when write is called); it is then fsynced, given the usual permissions,
    renamed over `path` and the folder fsynced. Whatever write or the rename raises propagates, and the temporary
    file is removed: `path` is either untouched or the complete new file. Returns `path`."""
    path = Path(path)
    parent = _folder_of(path)
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=path.suffix, dir=parent)
    os.close(fd)
    tmp = Path(name)
    placed = False
    try:
        write(tmp)
        _fsync_file(tmp)
        _usual_mode(tmp)
        os.replace(tmp, path)
        placed = True
        fsync_dir(parent)
    finally:
        if not placed:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path


def write_folder_atomic(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Write the folder `path` (a zarr store) atomically: write(tmp) fills a temporary folder
    `.tmp-XXXXXXXX<suffix>` next to it; every file in it is fsynced, an existing `path` is moved aside, the new
    folder renamed into place, the parent fsynced and the old one removed. On any error the previous `path` is put
    back, the temporaries are removed and the error propagates. Returns `path`."""
    path = Path(path)
    parent = _folder_of(path)
    tmp: Path | None = None
    old: Path | None = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=parent))
        write(tmp)
        fsync_tree(tmp)
        if path.exists():  # move the previous folder aside, then put the new one in place
            old = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, suffix=path.suffix, dir=parent))
            os.replace(path, old)
        os.replace(tmp, path)
        tmp = None
        fsync_dir(parent)
    except BaseException:
        if old is not None and tmp is not None and not path.exists():
            os.replace(old, path)  # put the previous folder back
            old = None
        raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None:
                shutil.rmtree(leftover, ignore_errors=True)
    return path


def _newest_mtime(path: Path) -> float:
    """mtime of a file, or the newest mtime inside a folder (a zarr being written touches its subfolders)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for n in dirs + files:
                try:
                    newest = max(newest, os.lstat(os.path.join(root, n)).st_mtime)
                except OSError:
                    pass
    return newest


def cleanup_stale_temps(folder: str | os.PathLike, max_age_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Remove the temporary files and folders (`.tmp-XXXXXXXX.nc`, `.tmp-XXXXXXXX.zarr`) that a killed dataset
    write left in `folder`; returns what was removed. Only names of exactly that pattern are touched, and only when
    nothing in them was modified for `max_age_s` seconds: another process (a parallel sweep worker writing in
    the same parts folder) may be saving right now, and its in-flight temporary file must survive. Errors
    (a file removed by someone else meanwhile, no permission) are ignored."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for p in entries:
        if not TEMP_NAME.match(p.name):
            continue
        try:
            if now - _newest_mtime(p) < max_age_s:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed

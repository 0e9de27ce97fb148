"""Where run outputs go: default names and an early writability check (before any training is spent)."""
from __future__ import annotations

import os
from pathlib import Path


def default_out_path(cfg) -> Path:
    """runs/<param>-<optimizer>-<task>-N<N>-H<H>-L<L>-s<seed>.nc for a RunConfig."""
    m = cfg.model
    return Path("runs") / f"{cfg.param.name}-{cfg.optim.name}-{m.task}-N{m.N}-H{m.H}-L{m.L}-s{cfg.seed}.nc"


def prepare_out_path(path: str | os.PathLike) -> Path:
    """Create the parent folder if needed and check it is writable; ValueError naming --out otherwise."""
    path = Path(path)
    if path.suffix not in (".nc", ".zarr"):
        raise ValueError(f"--out: {path} must end in .nc (netCDF) or .zarr")
    if path.exists() and path.is_dir() and path.suffix != ".zarr":
        raise ValueError(f"--out: {path} is a folder")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out: cannot create folder {parent} ({e.strerror})") from None
    if not os.access(parent, os.W_OK):
        raise ValueError(f"--out: folder {parent} is not writable")
    return path

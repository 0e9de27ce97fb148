"""Runs as self-describing xarray Datasets (DESIGN §5): build, save atomically, load with schema checks.

Dims: `step` (log/probe steps), `train_step` (every optimizer step), and the probe dims added by the
recorder (`layer`, `head`, `sample`, `sample_`, `token`, `token_`, `weight`, ...). Every variable has `units`
and `long_name` attrs; the dataset attrs hold the whole resolved config as JSON plus the paper's symbols as
scalar attrs, the package version, git revision, torch version and device. The swept sizes N, H, L, seed are
scalar coordinates, so runs combine with `xr.combine_by_coords` / `xr.concat` along the scale axis.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch
import xarray as xr

SCHEMA_VERSION = 1
REQUIRED_VARS = ("train_loss", "heldout_loss", "grad_norm")
REQUIRED_ATTRS = ("config", "alpha_A", "alpha_L", "beta0", "gamma0", "eta0", "optimizer", "parametrization",
                  "axis", "schema_version")


class DatasetError(ValueError):
    """A dataset file is missing, corrupt or does not follow the schema; the message names the file."""


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("dmft-probe")
    except Exception:  # not installed (running from a checkout)
        return "0+unknown"


def git_revision() -> str:
    """The git commit of the code that made the run, with '+dirty' if the tree had changes; 'unknown' outside git."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def var(dims: tuple[str, ...], data, long_name: str, units: str = "1") -> tuple:
    """An xarray variable triple with the long_name and units attrs every variable carries."""
    return (dims, np.asarray(data), {"long_name": long_name, "units": units})


def run_attrs(config: dict, device: str, status: str, extra: dict | None = None) -> dict:
    """Dataset attrs: the resolved config as JSON, the paper's symbols as scalars, provenance."""
    p, m, o = config["param"], config["model"], config["optim"]
    attrs = {
        "title": "dmft-probe run",
        "schema_version": SCHEMA_VERSION,
        "config": json.dumps(config, sort_keys=True),
        "parametrization": p["name"], "alpha_A": p["alpha_A"], "alpha_L": p["alpha_L"], "beta0": p["beta0"],
        "gamma0": p["gamma0"], "L0": p["L0"], "standard": int(p["standard"]), "centre": p["centre"],
        "eta0": o["eta0"], "optimizer": o["name"], "task": m["task"], "axis": m["axis"], "lws": m["lws"],
        "status": status, "device": device, "torch_version": str(torch.__version__),
        "package_version": package_version(), "git_revision": git_revision(),
        "python_version": platform.python_version(),
    }
    attrs.update(extra or {})
    return attrs


def base_dataset(result) -> xr.Dataset:
    """The loss/learning-rate part of a run's dataset, from a `probes.run.RunResult`."""
    cfg = result.config
    m = cfg.model
    ds = xr.Dataset(
        data_vars={
            "train_loss": var(("train_step",), result.train_loss, "training loss on the incoming batch, before the update", "nats"),
            "heldout_loss": var(("step",), result.heldout_loss, "loss on the fixed held-out batch", "nats"),
            "grad_norm": var(("step",), result.grad_norm, "global gradient norm at the last step before the log step (0 at step 0)"),
        },
        coords={
            "step": ("step", np.asarray(result.log_steps, dtype=np.int64), {"long_name": "optimizer steps taken", "units": "steps"}),
            "train_step": ("train_step", np.arange(len(result.train_loss), dtype=np.int64), {"long_name": "optimizer step", "units": "steps"}),
            "N": ((), m.N, {"long_name": "key/query dimension per head"}),
            "H": ((), m.H, {"long_name": "heads of a full-width layer"}),
            "L": ((), m.L, {"long_name": "depth (blocks)"}),
            "d_model": ((), m.d_model, {"long_name": "residual width N*H"}),
            "seed": ((), cfg.seed, {"long_name": "initialisation seed"}),
        },
        attrs=run_attrs(cfg.to_dict(), str(cfg.device), result.status,
                        {"lr": result.lr, "wall_s": result.wall_s, "steps_done": result.steps_done,
                         "diverged_at": -1 if result.diverged_at is None else result.diverged_at}),
    )
    return ds


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` to `path` (.nc: netCDF via h5netcdf; .zarr: zarr) atomically: a temporary file in the same
    folder is renamed into place, so a crash never leaves a partial file. Returns the path."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DatasetError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DatasetError(f"{path}: output folder {parent} is not writable")
    if path.suffix == ".zarr":
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", suffix=".zarr", dir=parent))
        import shutil

        shutil.rmtree(tmp)
        ds.to_zarr(tmp, mode="w")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        return path
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nc", dir=parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def validate(ds: xr.Dataset, name: str = "dataset") -> xr.Dataset:
    """Check the schema; raise DatasetError naming what is missing or malformed; return ds."""
    missing = [v for v in REQUIRED_VARS if v not in ds.data_vars]
    if missing:
        raise DatasetError(f"{name}: missing variable(s) {', '.join(missing)}; not a dmft-probe run dataset")
    missing = [a for a in REQUIRED_ATTRS if a not in ds.attrs]
    if missing:
        raise DatasetError(f"{name}: missing attribute(s) {', '.join(missing)}")
    for v in ds.data_vars:
        for a in ("long_name", "units"):
            if a not in ds[v].attrs:
                raise DatasetError(f"{name}: variable {v} has no {a} attribute")
    if "step" not in ds.dims:
        raise DatasetError(f"{name}: no 'step' dimension")
    try:
        json.loads(ds.attrs["config"])
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{name}: attribute 'config' is not valid JSON ({e})") from None
    return ds


def load(path: str | os.PathLike) -> xr.Dataset:
    """Open a run or sweep dataset (.nc or .zarr), load it into memory, validate it; DatasetError otherwise."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    try:
        if path.suffix == ".zarr" or path.is_dir():
            ds = xr.open_zarr(path).load()
        else:
            with xr.open_dataset(path, engine="h5netcdf") as f:
                ds = f.load()
    except DatasetError:
        raise
    except Exception as e:  # h5py/zarr raise many types for truncated or foreign files
        raise DatasetError(f"{path}: cannot be read as a dataset ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    return validate(ds, str(path))

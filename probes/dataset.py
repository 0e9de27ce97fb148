"""Runs as self-describing xarray Datasets (docs/design.md, "Datasets"): build, save atomically, load with schema checks.

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

SCHEMA_VERSION = 2   # 2: coord_rms / coord_update_rms / io_rms / io_update_rms replace block_rms / block_update_rms
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


PROBE_VARS = {
    # name: (dims after `step`, long_name, units)
    "kernel_pooled": (("depth", "sample", "sample_"), "residual-stream kernel pooled over tokens, h.h'/d", "1"),
    "kernel_spatial": (("depth", "token", "token_"), "token x token residual-stream kernel of probe sample 0, h_s.h_s'/d", "1"),
    "kernel_last_token": (("depth", "sample", "sample_"), "last-token residual-stream kernel across samples, h.h'/d", "1"),
    "h_rms": (("depth",), "RMS of the residual stream h^l", "1"),
    "attn_var_heads": (("layer",), "variance over heads of A (ddof=1), mean over (s, s') and samples", "1"),
    "attn_mean_heads": (("layer",), "mean over heads of A, mean over (s, s') and samples", "1"),
    "dA_var_heads": (("layer",), "variance over heads of A(t) - A(0) (ddof=1), mean over (s, s') and samples", "1"),
    "dA_mean_heads": (("layer",), "mean over heads of A(t) - A(0), mean over (s, s') and samples", "1"),
    "attn_prob_var_heads": (("layer",), "variance over heads of softmax(A) (ddof=1), mean over (s, s') and samples", "1"),
    "attn_prob_mean_heads": (("layer",), "mean over heads of softmax(A), mean over (s, s') and samples", "1"),
    "attn_raw": (("layer", "point", "head"), "A per head at fixed (sample, s, s') points (NaN past the layer's heads)", "1"),
    "coord_rms": (("layer", "site"), "RMS of a coordinate-check site (q, k, v, A, softmax(A), branch outputs, MLP hidden, h)", "1"),
    "coord_update_rms": (("layer", "site"), "RMS of the site's change since step 0", "1"),
    "io_rms": (("io_site",), "RMS of the embedding output h^0 and of the raw logits f(theta)", "1"),
    "io_update_rms": (("io_site",), "RMS of the change since step 0 of h^0 and of the logits f(theta_t) - f(theta_0)", "1"),
    "weight_movement": (("layer", "weight"), "||W(t) - W(0)||_F / ||W(0)||_F", "1"),
    "io_movement": (("io",), "||W(t) - W(0)||_F / ||W(0)||_F of the embedding, positions and readout", "1"),
}


def probe_dataset(recorder, shapes) -> xr.Dataset:
    """The probe variables of a run (dims `step` first), from a ProbeRecorder and the model's LayerShapes."""
    from .recorder import BLOCK_WEIGHTS, IO_SITES, IO_WEIGHTS, SITES

    arrays = recorder.arrays()
    data = {}
    for name, arr in arrays.items():
        dims, long_name, units = PROBE_VARS[name]
        data[name] = var(("step", *dims), arr, long_name, units)
    L = len(shapes.heads)
    pts = recorder.points
    coords = {
        "step": ("step", np.asarray(recorder.steps, dtype=np.int64), {"long_name": "optimizer steps taken", "units": "steps"}),
        "depth": ("depth", np.arange(L + 1), {"long_name": "residual stream h^l: 0 = embedding, l = after block l"}),
        "layer": ("layer", np.arange(L), {"long_name": "block index (0-based)"}),
        "n_heads": ("layer", np.asarray(shapes.heads), {"long_name": "heads in the layer (LWS)"}),
        "d_ff": ("layer", np.asarray(shapes.d_ff), {"long_name": "MLP hidden width of the layer (LWS)"}),
        "head": ("head", np.arange(max(shapes.heads)), {"long_name": "head index"}),
        "sample": ("sample", np.arange(recorder.x.shape[0]), {"long_name": "probe sample"}),
        "sample_": ("sample_", np.arange(recorder.x.shape[0]), {"long_name": "probe sample"}),
        "token": ("token", np.arange(recorder.S), {"long_name": "token / patch position"}),
        "token_": ("token_", np.arange(recorder.S), {"long_name": "token / patch position"}),
        "point": ("point", np.arange(len(pts)), {"long_name": "fixed (sample, s, s') point of attn_raw"}),
        "point_sample": ("point", pts[:, 0], {"long_name": "probe sample of the point"}),
        "point_s": ("point", pts[:, 1], {"long_name": "query position s of the point"}),
        "point_s_": ("point", pts[:, 2], {"long_name": "key position s' of the point"}),
        "site": ("site", list(SITES), {"long_name": "coordinate-check site of a block"}),
        "io_site": ("io_site", list(IO_SITES), {"long_name": "embedding output h^0 or logits f(theta)"}),
        "weight": ("weight", list(BLOCK_WEIGHTS), {"long_name": "weight kind"}),
        "io": ("io", list(IO_WEIGHTS), {"long_name": "input/output weight"}),
    }
    x = recorder.x.detach().cpu().numpy()
    if x.ndim == 3:   # vision patches
        data["probe_inputs"] = var(("sample", "token", "feature"), x, "probe batch: standardised patches", "1")
    else:             # LM tokens
        data["probe_inputs"] = var(("sample", "token"), x, "probe batch: token ids", "1")
    return xr.Dataset(data, coords=coords)


def run_dataset(result) -> xr.Dataset:
    """The whole dataset of a run: losses, probes (when recorded) and attrs."""
    ds = base_dataset(result)
    recorder = result.extra.get("recorder")
    if recorder is not None and recorder.records:
        pds = probe_dataset(recorder, result.model.shapes)
        if list(pds.step.values) != list(ds.step.values):
            raise RuntimeError("probe steps and log steps differ")  # a bug, not user input
        ds = xr.merge([ds, pds.drop_vars("step")], combine_attrs="override")
        ds.attrs["probes"] = 1
    else:
        ds.attrs["probes"] = 0
    return ds


def combine_runs(datasets: list[xr.Dataset], axis: str) -> xr.Dataset:
    """Combine runs along `axis` (N, H, L, seed, ...): the scalar coordinate becomes a dimension; dims that differ
    in length between runs (heads, layers) are padded with NaN. Each run's config is kept as `config_json`."""
    parts = []
    for ds in datasets:
        if "config_json" not in ds:
            ds = ds.assign(config_json=((), ds.attrs.get("config", ""), {"long_name": "resolved config", "units": "1"}))
        parts.append(ds.expand_dims(axis))
    out = xr.concat(parts, dim=axis, join="outer", combine_attrs="drop_conflicts", data_vars="all", coords="different",
                    compat="equals")
    out.attrs["config"] = datasets[0].attrs.get("config", "{}")   # per-run configs: config_json
    out.attrs["sweep_axis"] = axis
    return out.sortby(axis)


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
        ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        return path
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".nc", dir=parent)
    os.close(fd)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)          # mkstemp makes 0600; give the file the usual permissions
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
    if int(ds.attrs.get("probes", 0)):
        missing = [v for v in PROBE_VARS if v not in ds.data_vars and v != "kernel_last_token"]
        if missing:
            raise DatasetError(f"{name}: probes recorded but variable(s) {', '.join(missing)} missing")
        for v in PROBE_VARS:
            if v in ds.data_vars and ds[v].dims[-len(PROBE_VARS[v][0]):] != PROBE_VARS[v][0]:
                raise DatasetError(f"{name}: variable {v} has dims {ds[v].dims}, expected (..., {', '.join(PROBE_VARS[v][0])})")
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

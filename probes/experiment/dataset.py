"""Runs as self-describing xarray Datasets (docs/design.md, "Datasets"): build, save atomically, load with schema checks.

Dims: `step` (log/probe steps), `train_step` (every optimizer step), and the probe dims added by the
recorder (`layer`, `head`, `sample`, `sample_`, `token`, `token_`, `weight`, ...). Every variable has `units`
and `long_name` attrs; the dataset attrs hold the whole resolved config as JSON plus the paper's symbols as
scalar attrs, the package version, git revision, torch version and device. The swept sizes N, H, L, seed are
scalar coordinates, so runs combine with `xr.combine_by_coords` / `xr.concat` along the scale axis; so is
`io_seed` (the key of the embedding, positions and readout draws), which a sweep holds along `seed` (a scalar
when every seed has the same one).
"""

from __future__ import annotations

import io
import json
import os
import platform
import stat
import subprocess
import warnings
import zlib
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from probes.experiment.atomic import TEMP_PREFIX, cleanup_stale_temps, fsync_dir, write_atomic, write_folder_atomic  # noqa: F401 (re-exported)
from probes.experiment.zarr_check import ALLOWED, UnsafeStore, check_zarr_store

SCHEMA_VERSION = 3  # 2: coord_rms / coord_update_rms / io_rms / io_update_rms replace block_rms / block_update_rms
#                      3: probe_outputs (files of version 2 load without it)
REQUIRED_VARS = ("train_loss", "heldout_loss", "grad_norm")
REQUIRED_ATTRS = (
    "config",
    "alpha_A",
    "alpha_L",
    "beta0",
    "gamma0",
    "eta0",
    "optimizer",
    "parametrization",
    "axis",
    "schema_version",
)


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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return rev.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def var(dims: tuple[str, ...], data, long_name: str, units: str = "1") -> tuple:
    """An xarray variable triple with the long_name and units attrs every variable carries."""
    return (dims, np.asarray(data), {"long_name": long_name, "units": units})


def run_attrs(config: dict, device: str, status: str, extra: dict | None = None) -> dict:
    """Build a dataset's attrs (a dict): the resolved config as JSON, the paper's symbols as scalars, provenance.
    `dmft.check.read_run_attrs` reads the parametrization back from them."""
    p, m, o = config["param"], config["model"], config["optim"]
    attrs = {
        "title": "dmft-probe run",
        "schema_version": SCHEMA_VERSION,
        "config": json.dumps(config, sort_keys=True),
        "parametrization": p["name"],
        "alpha_A": p["alpha_A"],
        "alpha_L": p["alpha_L"],
        "beta0": p["beta0"],
        "gamma0": p["gamma0"],
        "L0": p["L0"],
        "standard": int(p["standard"]),
        "centre": p["centre"],
        "eta0": o["eta0"],
        "optimizer": o["name"],
        "task": m["task"],
        "axis": m["axis"],
        "lws": m["lws"],
        "status": status,
        "device": device,
        "torch_version": str(torch.__version__),
        "package_version": package_version(),
        "git_revision": git_revision(),
        "python_version": platform.python_version(),
    }
    attrs.update(extra or {})
    return attrs


# run status as a data variable (CF flags: int8 codes with flag_values / flag_meanings), so that it survives
# combining runs into a sweep (attrs that differ between runs are dropped there)
STATUS_CODES = {"ok": 0, "diverged": 1}


def status_vars(status: str, diverged_at: int | None) -> dict:
    """The scalar data variables `status` (int8 code, CF flag attrs) and `diverged_at` (int64, -1 when the run
    did not diverge) of a run."""
    codes = np.asarray(list(STATUS_CODES.values()), dtype=np.int8)
    return {
        "status": (
            (),
            np.int8(STATUS_CODES[status]),
            {
                "long_name": "run status: " + ", ".join(f"{c} {n}" for n, c in STATUS_CODES.items()),
                "units": "1",
                "flag_values": codes,
                "flag_meanings": " ".join(STATUS_CODES),
            },
        ),
        "diverged_at": (
            (),
            np.int64(-1 if diverged_at is None else diverged_at),
            {
                "long_name": "optimizer step whose weights gave the first NaN/inf loss or probe (-1: did not diverge)",
                "units": "steps",
            },
        ),
    }


def base_dataset(result) -> xr.Dataset:
    """The loss/learning-rate part of a run's dataset, from a `probes.experiment.run.RunResult`. The run status is both an
    attribute (`status`, `diverged_at`) and a scalar data variable (`status_vars`), which survives combining."""
    cfg = result.config
    m = cfg.model
    units = "nats" if getattr(cfg, "loss", "ce") == "ce" else "1"
    ds = xr.Dataset(
        data_vars={
            "train_loss": var(
                ("train_step",), result.train_loss, "training loss on the incoming batch, before the update", units
            ),
            "heldout_loss": var(("step",), result.heldout_loss, "loss on the fixed held-out batch", units),
            "grad_norm": var(
                ("step",), result.grad_norm, "global gradient norm at the last step before the log step (0 at step 0)"
            ),
            **status_vars(result.status, result.diverged_at),
        },
        coords={
            "step": (
                "step",
                np.asarray(result.log_steps, dtype=np.int64),
                {"long_name": "optimizer steps taken", "units": "steps"},
            ),
            "train_step": (
                "train_step",
                np.arange(len(result.train_loss), dtype=np.int64),
                {"long_name": "optimizer step", "units": "steps"},
            ),
            "N": ((), m.N, {"long_name": "key/query dimension per head"}),
            "H": ((), m.H, {"long_name": "heads of a full-width layer"}),
            "L": ((), m.L, {"long_name": "depth (blocks)"}),
            "d_model": ((), m.d_model, {"long_name": "residual width N*H"}),
            "seed": ((), cfg.seed, {"long_name": "initialisation seed"}),
            "io_seed": (
                (),
                cfg.io_seed,
                {
                    "long_name": "seed of the embedding, positions and readout draws (the "
                    "seed itself unless io_seeds groups the seeds)"
                },
            ),
        },
        attrs=run_attrs(
            cfg.to_dict(),
            str(cfg.device),
            result.status,
            {
                "lr": result.lr,
                "wall_s": result.wall_s,
                "steps_done": result.steps_done,
                "diverged_at": -1 if result.diverged_at is None else result.diverged_at,
                "diverged_on": result.extra.get("diverged_on", ""),
                **injected_attrs(result.extra),
            },
        ),
    )
    return ds


def injected_attrs(extra: dict) -> dict:
    """{"injected_fault": rule} when the test hook `DMFT_PROBE_INJECT_NONFINITE` (`probes.experiment.faults`) stopped the run,
    else {} (the attr is absent from every run it did not touch)."""
    rule = extra.get("injected_fault")
    return {"injected_fault": rule} if rule else {}


PROBE_VARS = {
    # name: (dims after `step`, long_name, units)
    "kernel_pooled": (("depth", "sample", "sample_"), "residual-stream kernel pooled over tokens, h.h'/d", "1"),
    "kernel_spatial": (
        ("depth", "token", "token_"),
        "token x token residual-stream kernel of probe sample 0, h_s.h_s'/d",
        "1",
    ),
    "kernel_last_token": (
        ("depth", "sample", "sample_"),
        "last-token residual-stream kernel across samples, h.h'/d",
        "1",
    ),
    "h_rms": (("depth",), "RMS of the residual stream h^l", "1"),
    "attn_var_heads": (("layer",), "variance over heads of A (ddof=1), mean over (s, s') and samples", "1"),
    "attn_mean_heads": (("layer",), "mean over heads of A, mean over (s, s') and samples", "1"),
    "dA_var_heads": (("layer",), "variance over heads of A(t) - A(0) (ddof=1), mean over (s, s') and samples", "1"),
    "dA_mean_heads": (("layer",), "mean over heads of A(t) - A(0), mean over (s, s') and samples", "1"),
    "attn_prob_var_heads": (
        ("layer",),
        "variance over heads of softmax(A) (ddof=1), mean over (s, s') and samples",
        "1",
    ),
    "attn_prob_mean_heads": (("layer",), "mean over heads of softmax(A), mean over (s, s') and samples", "1"),
    "attn_raw": (
        ("layer", "point", "head"),
        "A per head at fixed (sample, s, s') points (NaN past the layer's heads)",
        "1",
    ),
    "coord_rms": (
        ("layer", "site"),
        "RMS of a coordinate-check site (q, k, v, A, softmax(A), branch outputs, MLP hidden, h)",
        "1",
    ),
    "coord_update_rms": (("layer", "site"), "RMS of the site's change since step 0", "1"),
    "io_rms": (("io_site",), "RMS of the embedding output h^0 and of the raw logits f(theta)", "1"),
    "io_update_rms": (
        ("io_site",),
        "RMS of the change since step 0 of h^0 and of the logits f(theta_t) - f(theta_0)",
        "1",
    ),
    "weight_movement": (("layer", "weight"), "||W(t) - W(0)||_F / ||W(0)||_F", "1"),
    "io_movement": (("io",), "||W(t) - W(0)||_F / ||W(0)||_F of the embedding, positions and readout", "1"),
    "probe_outputs": (
        ("sample", "output"),
        "outputs the loss sees on the probe batch, f(theta_t) - f(theta_0) "
        "(f(theta_t) unless centre = copy): class logits, or the LM's last-token logits over the vocab",
        "1",
    ),
}


def probe_dataset(recorder, shapes) -> xr.Dataset:
    """The probe variables of a run (dims `step` first), from a ProbeRecorder and the model's LayerShapes."""
    from probes.hooks.recorder import BLOCK_WEIGHTS, IO_SITES, IO_WEIGHTS, SITES

    arrays = recorder.arrays()
    data = {}
    for name, arr in arrays.items():
        dims, long_name, units = PROBE_VARS[name]
        data[name] = var(("step", *dims), arr, long_name, units)
    L = len(shapes.heads)
    pts = recorder.points
    coords = {
        "step": (
            "step",
            np.asarray(recorder.steps, dtype=np.int64),
            {"long_name": "optimizer steps taken", "units": "steps"},
        ),
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
    if "probe_outputs" in arrays:
        coords["output"] = (
            "output",
            np.arange(arrays["probe_outputs"].shape[-1]),
            {"long_name": "output index: class, or vocab entry of the LM's last token"},
        )
    x = recorder.x.detach().cpu().numpy()
    if x.ndim == 3:  # vision patches
        data["probe_inputs"] = var(("sample", "token", "feature"), x, "probe batch: standardised patches", "1")
    else:  # LM tokens
        data["probe_inputs"] = var(("sample", "token"), x, "probe batch: token ids", "1")
    return xr.Dataset(data, coords=coords)


# Variables of a full-batch run (`probes.experiment.run`, batch "full"); dmft.dynamics writes the same names and units.
# kernel_grad (`probes.hooks.grad_kernel`) only when the run records probes (its depth and sample coordinates).
FULL_BATCH_VARS = {
    "test_outputs": (
        ("step", "test_sample", "output"),
        "outputs the loss sees on the fixed held-out batch, f(theta_t) - f(theta_0) (f(theta_t) unless centre = copy)",
        "1",
    ),
    "train_labels": (("sample",), "class label of each training sample (the probe samples of a full-batch run)", "1"),
    "test_labels": (("test_sample",), "class label of each held-out sample", "1"),
    "kernel_grad": (
        ("train_step", "depth", "sample", "sample_"),
        (
            "residual-stream gradient kernel over the "
            "training samples, e.e'/d with e = -gamma0 d dLoss/dh summed over tokens"
        ),
        "1",
    ),
}


def full_batch_dataset(fb: dict, steps) -> xr.Dataset:
    """The full-batch variables of a run (FULL_BATCH_VARS) from RunResult.extra["full_batch"] (kernel_grad when
    it holds one)."""
    data = {
        name: var(dims, fb[name], long_name, units)
        for name, (dims, long_name, units) in FULL_BATCH_VARS.items()
        if name in fb
    }
    n_test, C = fb["test_outputs"].shape[1:]
    coords = {
        "step": ("step", np.asarray(steps, dtype=np.int64), {"long_name": "optimizer steps taken", "units": "steps"}),
        "test_sample": ("test_sample", np.arange(n_test), {"long_name": "held-out sample"}),
        "output": ("output", np.arange(C), {"long_name": "output index: class, or vocab entry of the LM's last token"}),
    }
    return xr.Dataset(data, coords=coords)


def run_dataset(result) -> xr.Dataset:
    """The whole dataset of a run: losses, probes (when recorded), the full-batch variables of a full-batch run,
    and attrs."""
    ds = base_dataset(result)
    fb = result.extra.get("full_batch")
    if fb is not None:
        ds = xr.merge([ds, full_batch_dataset(fb, result.log_steps)], combine_attrs="override")
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


def _with_shared_coords(datasets: list[xr.Dataset], axis: str) -> list[xr.Dataset]:
    """The runs, each given the coordinates that another run has and it lacks. A run without a probe record
    (every seed of a point diverged at step 0) has no `depth`, `sample`, ... dims nor `n_heads`, and xarray refuses
    to concat a coordinate missing from some runs. An index is borrowed from the first run that has it (an outer
    join takes the union of index values anyway, and none of the run's variables lies along it); another
    coordinate is borrowed when every run that has it holds the same values (it does not change along `axis`),
    otherwise it is NaN for this run (its value is not known without a record). Returns new datasets."""
    have: dict[str, list[xr.Variable]] = {}
    for ds in datasets:
        for name, coord in ds.coords.items():
            if name != axis and coord.dims:
                have.setdefault(name, []).append(coord.variable)
    out = []
    for ds in datasets:
        missing = {}
        for name, found in have.items():
            if name in ds.coords:
                continue
            first = found[0]
            if name in first.dims or all(v.equals(first) for v in found[1:]):
                missing[name] = first  # values and attrs only, none of the run's other coords
            else:
                missing[name] = xr.Variable(first.dims, np.full(first.shape, np.nan), first.attrs)
        out.append(ds.assign_coords(missing) if missing else ds)
    return out


def combine_runs(datasets: list[xr.Dataset], axis: str) -> xr.Dataset:
    """Combine runs along `axis` (N, H, L, seed, ...): the scalar coordinate becomes a dimension; dims that differ
    in length between runs (heads, layers; steps after a run diverged) are padded with NaN. Each run's config is
    kept as `config_json`, its status as the data variables `status` and `diverged_at` (taken from the attrs of
    a run written before they existed), so a sweep has them with dims (axis, seed)."""
    parts = []
    for ds in _with_shared_coords(datasets, axis):
        if "config_json" not in ds:
            ds = ds.assign(config_json=((), ds.attrs.get("config", ""), {"long_name": "resolved config", "units": "1"}))
        if "status" not in ds.data_vars and "status" in ds.attrs:
            at = int(ds.attrs.get("diverged_at", -1))
            ds = ds.assign(status_vars(str(ds.attrs["status"]), None if at < 0 else at))
        parts.append(ds.expand_dims(axis))
    out = xr.concat(
        parts,
        dim=axis,
        join="outer",
        combine_attrs="drop_conflicts",
        data_vars="all",
        coords="different",
        compat="equals",
    )
    out.attrs["config"] = datasets[0].attrs.get("config", "{}")  # per-run configs: config_json
    out.attrs["sweep_axis"] = axis
    return out.sortby(axis)


SEED_VARS = ("output_seed_var", "loss_seed_var")


def seed_variances(ds: xr.Dataset, axis: str) -> xr.Dataset:
    """Seed-to-seed variances of a merged sweep (dims axis, seed, step, ...; `combine_runs`): a Dataset with
    - `output_seed_var` (axis, step): the variance over seeds (ddof = 1) of `probe_outputs`, per (sample, output),
      then averaged over samples and outputs; units of logits squared, "1";
    - `loss_seed_var` (axis, step): the variance over seeds (ddof = 1) of `heldout_loss`; nats^2.
    Only finite values count: a diverged seed is NaN from its divergence on (and any inf is treated as NaN), so
    each (size, step) uses the seeds that were still finite there, and is NaN where fewer than 2 were. Empty when
    the sweep has fewer than 2 seeds; `output_seed_var` is left out when the runs recorded no `probe_outputs`."""
    out = xr.Dataset()
    if "seed" not in ds.dims or ds.sizes["seed"] < 2:
        return out

    def var_over_seeds(x: xr.DataArray) -> xr.DataArray:
        x = x.where(np.isfinite(x))  # inf -> NaN, left out like NaN
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # "degrees of freedom <= 0" below 2 seeds
            v = x.var("seed", ddof=1, skipna=True)
        return v.where(x.count("seed") >= 2)  # NaN below 2 finite seeds

    if "probe_outputs" in ds.data_vars:
        v = var_over_seeds(ds.probe_outputs).mean(("sample", "output"), skipna=False)  # (axis, step)
        out["output_seed_var"] = v.transpose(axis, "step").assign_attrs(
            long_name="variance over seeds (ddof=1) of probe_outputs, mean over probe samples and outputs; finite "
            "seeds only",
            units="1",
        )
    v = var_over_seeds(ds.heldout_loss)  # (axis, step)
    out["loss_seed_var"] = v.transpose(axis, "step").assign_attrs(
        long_name="variance over seeds (ddof=1) of heldout_loss; finite seeds only", units="nats^2"
    )
    return out


def with_seed_variances(ds: xr.Dataset, axis: str) -> xr.Dataset:
    """`ds` with its seed variances (`seed_variances`) computed afresh from its per-seed data: any it carried
    (e.g. from an earlier merge) are dropped first, so they never go stale."""
    ds = ds.drop_vars([v for v in SEED_VARS if v in ds.variables])
    return ds.assign(seed_variances(ds, axis).data_vars)


# ---- checksums: each variable's data carries `checksum = "crc32:<hex>"` on disk, verified by `load` -----------

CHECKSUM_ATTR = "checksum"


def _canonical_bytes(values) -> bytes:
    """The bytes a variable's checksum is taken over: C-contiguous data, NaNs made canonical (their sign and
    payload do not survive every codec), strings as UTF-8 joined by NUL (str, bytes, object and StringDType
    arrays alike: zarr gives back object strings as StringDType, netCDF as fixed-width str)."""
    a = np.asarray(values)
    if a.dtype.kind in "OUST":
        items = (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in a.ravel())
        return "\0".join(items).encode("utf-8", "surrogatepass")
    if a.dtype.kind in "fc":
        a = np.where(np.isnan(a), np.array(np.nan, dtype=a.dtype), a)
    return np.ascontiguousarray(a).tobytes()


def checksum(values) -> str:
    """`crc32:<8 hex digits>` of a variable's data (see _canonical_bytes)."""
    return f"crc32:{zlib.crc32(_canonical_bytes(values)) & 0xFFFFFFFF:08x}"


def with_checksums(ds: xr.Dataset) -> xr.Dataset:
    """A shallow copy of `ds` whose every variable (data and coordinates) has a fresh checksum attr; any checksum
    it carried (e.g. copied by a concat) is replaced."""
    out = ds.copy(deep=False)
    for variable in out.variables.values():
        variable.attrs[CHECKSUM_ATTR] = checksum(variable.values)
        # an integer on-disk dtype kept from a part whose values a combine padded with NaN (n_heads, d_ff of an
        # L sweep) would write the NaNs as garbage integers: let such variables be written as the floats they are
        if np.dtype(variable.encoding.get("dtype", variable.dtype)).kind in "iu" and variable.dtype.kind == "f":
            variable.encoding = {k: v for k, v in variable.encoding.items() if k not in ("dtype", "_FillValue")}
    return out


def verify_checksums(ds: xr.Dataset, name: str = "dataset") -> xr.Dataset:
    """Check every variable that has a checksum attr against its data (DatasetError naming the file and the
    variable on a mismatch), then drop the attrs, so in-memory datasets never carry stale checksums. Variables
    without the attr (files written before checksums existed) are not checked."""
    for v, variable in ds.variables.items():
        want = variable.attrs.get(CHECKSUM_ATTR)
        if want is not None and str(want) != checksum(variable.values):
            raise DatasetError(
                f"{name}: variable {v} is corrupt (its data does not match the checksum written with it, {want})"
            )
    for variable in ds.variables.values():
        variable.attrs.pop(CHECKSUM_ATTR, None)
    return ds


# ---- save ---------------------------------------------------------------------------------------------------

_os_write = os.write  # the one call that puts netCDF bytes on disk (tests inject ENOSPC here)
_CHUNK = 1 << 20


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _netcdf_bytes(ds: xr.Dataset) -> memoryview:
    """The netCDF-4 file of `ds`, built in memory: HDF5 never touches the disk, so a failing disk cannot leave
    an HDF5 file object half-written and open (that is what crashed at interpreter exit) and the only thing to
    clean up after a failed write is our own temporary file."""
    buf = io.BytesIO()
    ds.to_netcdf(buf, engine="h5netcdf")
    return buf.getbuffer()  # no copy


def save(ds: xr.Dataset, path: str | os.PathLike) -> Path:
    """Write `ds` to `path` (.nc: netCDF via h5netcdf; .zarr: zarr) atomically: a temporary file (or folder) in
    the same folder is written, fsynced and renamed into place, and the folder fsynced, so a crash never leaves a
    partial file and a finished save survives a power cut. Every variable gets a `checksum` attr (load verifies
    it). An existing `path` is replaced (the command line refuses that without --overwrite, probes.experiment.out_paths).
    Stale temporary files of killed saves in the folder are removed first (cleanup_stale_temps).
    Any failure raises DatasetError "<path>: cannot write: <reason>" and removes the temporary file. Returns
    the path."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise DatasetError(f"{path}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise DatasetError(f"{path}: output folder {parent} is not writable")
    zarr = path.suffix == ".zarr"
    if path.exists() or path.is_symlink():
        if zarr and not path.is_dir():
            raise DatasetError(f"{path}: cannot write: exists and is not a folder (a .zarr dataset is a folder)")
        if not zarr and not path.is_file():
            raise DatasetError(f"{path}: cannot write: exists and is not a regular file")
    cleanup_stale_temps(parent)  # what killed saves left here (a minute old or more)
    ds = with_checksums(ds)
    if zarr:
        return _save_zarr(ds, path)
    try:
        data = _netcdf_bytes(ds)
    except Exception as e:
        raise DatasetError(f"{path}: cannot write: {_reason(e)}") from None
    try:
        write_atomic(path, lambda tmp: _write_bytes(tmp, data))
    except OSError as e:
        raise DatasetError(f"{path}: cannot write: {_reason(e)}") from None
    return path


def _write_bytes(tmp: Path, data: memoryview) -> None:
    """Put `data` into the (empty) file `tmp`, in chunks, through `_os_write`."""
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
    try:
        view = data
        while view:
            view = view[_os_write(fd, view[:_CHUNK]) :]
    finally:
        os.close(fd)


def _save_zarr(ds: xr.Dataset, path: Path) -> Path:
    try:
        write_folder_atomic(path, lambda tmp: ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True))
    except Exception as e:
        raise DatasetError(f"{path}: cannot write: {_reason(e)}") from None
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
        try:
            version = int(ds.attrs["schema_version"])
        except (TypeError, ValueError):
            raise DatasetError(f"{name}: attribute 'schema_version' is not an integer") from None
        optional = {"kernel_last_token"} | ({"probe_outputs"} if version < 3 else set())  # older files lack it
        missing = [v for v in PROBE_VARS if v not in ds.data_vars and v not in optional]
        if missing:
            raise DatasetError(f"{name}: probes recorded but variable(s) {', '.join(missing)} missing")
        for v in PROBE_VARS:
            if v in ds.data_vars and ds[v].dims[-len(PROBE_VARS[v][0]) :] != PROBE_VARS[v][0]:
                raise DatasetError(
                    f"{name}: variable {v} has dims {ds[v].dims}, expected (..., {', '.join(PROBE_VARS[v][0])})"
                )
    try:
        json.loads(ds.attrs["config"])
    except (TypeError, ValueError) as e:
        raise DatasetError(f"{name}: attribute 'config' is not valid JSON ({e})") from None
    return ds


def load(path: str | os.PathLike) -> xr.Dataset:
    """Open a run or sweep dataset (.nc file or .zarr folder), load it into memory, verify each variable's
    checksum (when the file has them) and validate the schema; DatasetError naming the file otherwise. Anything
    that is not a regular file (or a folder, for zarr) -- a FIFO, a device, a socket -- is refused before it is
    opened, so load never blocks on it. A .zarr store's metadata is checked first (`probes.experiment.zarr_check`): a codec
    that could run code or build Python objects (pickle, ...) is refused before any chunk is read."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    is_dir = stat.S_ISDIR(st.st_mode)
    if path.suffix == ".zarr" and not is_dir:
        raise DatasetError(f"{path}: not a folder (a .zarr dataset is a folder)")
    if not is_dir and not stat.S_ISREG(st.st_mode):
        raise DatasetError(f"{path}: not a regular file")
    if path.suffix == ".zarr" or is_dir:
        try:
            check_zarr_store(path)  # before zarr reads a chunk: no codec that unpickles or builds objects
        except UnsafeStore as e:
            raise DatasetError(f"{path}: {e} ({ALLOWED})") from None
        except OSError as e:
            raise DatasetError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    try:
        if path.suffix == ".zarr" or is_dir:
            ds = xr.open_zarr(path).load()
        else:
            with xr.open_dataset(path, engine="h5netcdf") as f:
                ds = f.load()
    except DatasetError:
        raise
    except Exception as e:  # h5py/zarr raise many types for truncated or foreign files
        raise DatasetError(
            f"{path}: cannot be read as a dataset ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from None
    verify_checksums(ds, str(path))
    return validate(ds, str(path))

"""Measuring finite networks: train and probe one run, sweep a size, grids of learning rates (docs/design.md).

The face of the package, loaded lazily (a name's module is imported on first use):
- configure: `make_run_config` (the same sections and keys as a config file or the CLI flags), `RunConfig`;
- train and probe one run: `train` (a `RunResult`; its probes in result.extra["recorder"]), `run_dataset` (the
  run as an xarray Dataset);
- grids: `run_sweep` (sizes x seeds along N, H or L, merged into one dataset, resumable), `coord_config` (the run
  config of a coordinate check), `run_lr_grid` (learning-rate transfer);
- your own model: `train_own_model` (one probed run of a model put under the parametrization,
  docs/own-model.md);
- files: `save` (atomic), `load` (with schema checks), `project_root` (the repository's folder, for run folders
  whatever the working directory).

    from probes import make_run_config, run_sweep
    cfg = make_run_config(model={"task": "vision", "N": 8, "H": 4, "L": 2}, param={"preset": "mup"})
    ds = run_sweep(cfg, "N", [4, 8, 16], seeds=2, out="runs/mup-N.nc")
"""

from __future__ import annotations

import importlib

_FACE = {
    "make_run_config": "experiment.config",
    "RunConfig": "experiment.run",
    "train": "experiment.run",
    "run_dataset": "experiment.dataset",
    "save": "experiment.dataset",
    "load": "experiment.dataset",
    "run_sweep": "grid.sweep",
    "coord_config": "grid.sweep",
    "run_lr_grid": "grid.lr_grid",
    "train_own_model": "experiment.own_run",
    "project_root": "experiment.out_paths",
}
__all__ = [
    "RunConfig",
    "coord_config",
    "load",
    "make_run_config",
    "project_root",
    "run_dataset",
    "run_lr_grid",
    "run_sweep",
    "save",
    "train",
    "train_own_model",
]


def __getattr__(name: str):
    """The face's names, each imported from its module on first use (PEP 562)."""
    if name not in _FACE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_FACE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

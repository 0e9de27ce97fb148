"""The coordinate check of your own model (docs/own-model.md): `dmft-probe coord`'s grid, rows and verdicts, with
a model you write in place of the built-in one.

`coord_check_model(build, ...)` trains `build`'s model at every size and seed (`probes.experiment.own_run.
train_own_model`: the model put under the parametrization by its roles, the built-in run's task, batches, loss,
optimizer rules and probes), merges the runs as a sweep does (`probes.experiment.dataset.combine_runs`) and reads
them with `dmft.coord.coord_verdicts`: the same sites, slopes and verdict rule as the built-in model's check.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import xarray as xr

from probes.experiment.config import make_run_config
from probes.experiment.dataset import combine_runs, run_dataset, save
from probes.experiment.own_run import Build, train_own_model
from probes.grid.sweep import check_grid, coord_config, value_config

from .coord import coord_verdicts
from .verdict import Verdict


def coord_check_model(
    build: Build,
    *,
    axis: str = "N",
    values: Sequence[int] = (4, 8, 16, 32),
    seeds: int = 3,
    steps: Sequence[int] = (0, 1, 3, 10),
    model: dict | None = None,
    param: dict | None = None,
    optim: dict | None = None,
    run: dict | None = None,
    probes: dict | None = None,
    out: str | Path | None = None,
) -> tuple[xr.Dataset, list[Verdict]]:
    """Coordinate-check your model along `axis` (N, H or L) at `values` x `seeds` seeds, probes at `steps` (training
    runs to the largest); returns (the merged dataset, its `dmft.verdict.Verdict` rows), and saves the dataset to
    `out` when given. build(model_cfg) returns (your nn.Module, its roles) for model_cfg's N, H, L and the task's
    sizes (`probes.experiment.own_run`). model, param, optim, run, probes: the sections of
    `probes.experiment.config.make_run_config` (e.g. model={"task": "vision", "N": 8, "H": 4, "L": 2},
    param={"preset": "mup"}, optim={"name": "adam", "eta0": 0.05}). Seeds are run.seed + 0..seeds-1. ValueError
    naming the option for a bad grid or config."""
    values, steps = [int(v) for v in values], [int(s) for s in steps]
    check_grid(axis, values, seeds, "off")
    base = coord_config(
        make_run_config(model={**(model or {}), "axis": axis}, param=param, optim=optim, run=run, probes=probes), steps
    )
    per_size = []
    for v in values:
        cfg = value_config(base, axis, v)
        runs = [run_dataset(train_own_model(replace(cfg, seed=base.seed + s), build)) for s in range(seeds)]
        per_size.append(combine_runs(runs, "seed"))
    ds = combine_runs(per_size, axis)
    ds.attrs["own_model"] = 1
    if out is not None:
        save(ds, out)
    return ds, coord_verdicts(ds)

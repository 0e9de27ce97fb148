"""One verdict table for a folder of sweeps: every prediction of the registry (`dmft.predictions.REGISTRY`) that
the folder's datasets can measure, as `dmft.verdict.Verdict` rows.

`folder_verdicts(folder)` reads every dataset in `folder` (`*.nc`, `*.zarr`; sweep-store part folders are
skipped): sweeps get `dmft.check.check` (P1-P4, P8, P10, the coordinate check) plus `trained_verdicts` (the
trained rates P5 along H, P6 along N, conv-L along L by the paired design, and P11 on H sweeps); learning-rate
grids (`probes.grid.lr_grid`) get P7; pairs of sweeps that differ only in alpha_L give P9, only in alpha_A give P12.
`summary_markdown` renders each prediction's primary row with its secondary rows listed and not counted
(`dmft.verdict.markdown`), the headline over primary rows (`dmft.verdict.headline`) and the predictions the
folder could not measure with what they need.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from . import compare, convergence, depth, fit, measure, power, verdict
from .check import MC_HEADS, check, read_run_attrs, row_verdict
from .predictions import CLAIMS, KEYS, RATE_KEYS, REGISTRY, Planned, planned_rows
from .verdict import Verdict


def datasets_in(folder: Path) -> list[Path]:
    """The dataset files of `folder` (sorted): `*.nc` files and `*.zarr` folders, not sweep-store parts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    out = sorted(p for p in folder.iterdir() if p.suffix in (".nc", ".zarr") and not p.name.startswith("."))
    if not out:
        raise ValueError(f"{folder}: holds no dataset (*.nc, *.zarr); run `dmft-probe reproduce` or `sweep` first")
    return out


def _estimate(p: Planned, ds: xr.Dataset, axis: str, step: int):
    """The estimator result of a trained-rate row at probe `step` (`dmft.convergence`)."""
    q, est = p.spec.quantity, p.spec.estimator
    if est == "seed-variance rate":
        return convergence.seed_variance_rate(ds, q, axis, step=step)
    if est == "bias rate":
        return convergence.bias_rate(ds, q, axis, step=step)
    if est == "plateau":
        return convergence.plateau_test(ds, q, axis, step=step)
    return convergence.convergence_rate(ds, q, axis, method="largest", step=step)


def rate_verdict(p: Planned, ds: xr.Dataset, a: dict, axis: str, step: int) -> Verdict:
    """One trained-rate row (P5, P6) at probe `step`: the estimate of its estimator with the joint jackknife
    interval and the band of its local slopes, decided against the registry's hypotheses; not measured with the
    reason when the estimator cannot run or fit."""
    try:
        r = _estimate(p, ds, axis, step)
    except ValueError as e:
        return row_verdict(p, axis, a["name"], note=str(e).splitlines()[0])
    value = r.ratio if p.spec.estimator == "plateau" else r.slope
    band = r.band if np.isfinite(value) else math.nan
    kw = {
        "diverged": r.diverged,
        "diverged_points": r.diverged_points,
        "n_sizes": len(r.sizes),
        "n_seeds": int(np.min(r.n_seeds)) if len(r.n_seeds) else 0,
    }
    if np.isfinite(value):
        kw["local"] = tuple(float(s) for s in r.local)
    return row_verdict(p, axis, a["name"], value, r.lo, r.hi, band, r.band_source, note=r.reason or "", **kw)


NO_IO_GROUPS = (
    "not measured: independent seeds carry an L-independent floor (the embedding and readout change "
    "with the seed), so depth convergence needs the paired design: rerun the L sweep with --io-seeds K"
)


def depth_verdicts(ds: xr.Dataset, a: dict, step: int) -> list[Verdict]:
    """conv-L's rows at probe `step` from a paired depth sweep (`dmft.depth.depth_rates`): the variance over block
    draws (primary: -1 at alpha_L = 1, 0 at 1/2) and the paired squared bias (-2, secondary), bands from their
    local exponents. A sweep without io groups gives both rows "not measured" with the reason."""
    rows = planned_rows(["conv-L"], a["alpha_A"], a["alpha_L"], a["standard"], "L", True, a["task"])
    if not rows:
        return []
    try:
        depth.io_groups(ds)
        st = depth.depth_rates(ds, rows[0].spec.quantity, [step])[0]
    except ValueError as e:
        return [row_verdict(p, "L", a["name"], note=f"{NO_IO_GROUPS} ({str(e).splitlines()[0]})") for p in rows]
    out = []
    for p, r in zip(rows, (st.variance, st.bias)):
        ok = np.isfinite(r.estimate)
        band = float(fit.band_of(np.asarray(r.estimate), np.asarray(r.local))) if ok and r.local else math.nan
        out.append(
            row_verdict(
                p,
                "L",
                a["name"],
                r.estimate,
                r.lo,
                r.hi,
                band if ok else math.nan,
                fit.BAND_SOURCE,
                local=tuple(r.local) if ok else (),
                n_sizes=r.n_sizes,
                n_seeds=r.n_seeds,
                note="; ".join(t for t in (r.reason, r.note) if t),
            )
        )
    return out


def trained_verdicts(ds: xr.Dataset) -> list[Verdict]:
    """The trained-regime rows of one sweep at its last probe step: the trained rates along its axis (P5 along H,
    P6 along N, conv-L along L) and P11 on H sweeps. Empty for an init-only sweep; SP has no rate rows."""
    ds = measure.with_seed_dim(ds)
    a = read_run_attrs(ds)
    if not a["trained"]:
        return []
    axis = measure.sweep_axis(ds)
    step = int(ds["step"].values[-1])
    if axis == "L":
        out = depth_verdicts(ds, a, step)
    else:
        out = [
            rate_verdict(p, ds, a, axis, step)
            for p in planned_rows(RATE_KEYS, a["alpha_A"], a["alpha_L"], a["standard"], axis, True, a["task"])
        ]
    if axis == "H":
        out.append(compare.p11_verdict(ds))
    return out


def p7_verdict(grid: xr.Dataset) -> Verdict:
    """P7 from a learning-rate grid (`probes.grid.lr_grid`): the exponent of the continuous optimum eta0* against the
    size, with its seed-bootstrap interval and support (`dmft.transfer.fit_optimum`), as a `dmft.verdict.Verdict`
    (`dmft.transfer.p7_verdict`: muP family 0 against SP's -1; SP, the control, -1 against 0), primary."""
    from .transfer import fit_optimum, losses_of
    from .transfer import p7_verdict as verdict_of

    a = read_run_attrs(grid)
    return replace(
        verdict_of(fit_optimum(losses_of(grid), grid.attrs["sweep_axis"]), a["standard"], a["name"]), primary=True
    )


def _named(path: Path, e: ValueError) -> ValueError:
    """e's first line, prefixed with `path` unless it names the file already."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ValueError(msg if path.name in msg else f"{path}: {msg}")


def load_dataset_checked(path: Path) -> xr.Dataset:
    """The dataset at `path`, checked for what folder_verdicts needs before any verdict is computed: it loads
    (`probes.experiment.dataset.load`: schema and checksums), its config has the param and model tables (`read_run_attrs`), and it
    is a complete learning-rate grid (`probes.grid.lr_grid.load_lr_grid`) or a sweep along one of N, H, L with at least
    3 sizes. ValueError (one line naming the file) otherwise."""
    from probes.experiment.dataset import load
    from probes.grid.lr_grid import KIND, load_lr_grid

    try:
        ds = load(path)
        read_run_attrs(ds)
        if ds.attrs.get("kind") == KIND:
            return load_lr_grid(path)
        axis = measure.sweep_axis(ds)
        if ds.sizes[axis] < 3:
            raise ValueError(f"a sweep needs at least 3 values of {axis} for a slope, got {ds.sizes[axis]}")
        return ds
    except ValueError as e:
        raise _named(path, e) from None


def check_other_datasets(folder: Path, skip: set[str]) -> None:
    """Before a command writes the datasets named in `skip` into `folder` (`dmft-probe reproduce`): every other
    dataset there, which the verdict table will read too, passes `load_dataset_checked`. ValueError naming --out
    and the first that does not; nothing to check when `folder` is not a folder yet."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".nc", ".zarr") and not p.name.startswith(".")):
        if path.name not in skip:
            try:
                load_dataset_checked(path)
            except ValueError as e:
                raise ValueError(
                    f"--out: {str(e).splitlines()[0]} (the verdict table reads every dataset in "
                    "the folder); move it away or choose another --out"
                ) from None


def folder_verdicts(folder: Path, n_heads_mc: int = MC_HEADS, progress=None) -> list[Verdict]:
    """Every verdict the datasets of `folder` support (module docstring), each tagged with its file name.
    Every dataset is loaded and checked first (`load_dataset_checked`): a bad one is refused (ValueError, one line
    naming it) before any verdict is computed or any progress reported. progress: an optional callable taking one
    line of text per dataset."""
    loaded = [(path, load_dataset_checked(path)) for path in datasets_in(folder)]
    sweeps: list[tuple[Path, xr.Dataset]] = []
    out: list[Verdict] = []
    for path, ds in loaded:
        if progress:
            progress(f"checking {path.name}")
        try:
            if ds.attrs.get("kind") == "lr_grid":
                out.append(replace(p7_verdict(ds), dataset=path.name))
                continue
            rows = check(ds, n_heads_mc=n_heads_mc) + trained_verdicts(ds)
        except ValueError as e:
            raise _named(path, e) from None
        out += [replace(v, dataset=path.name) for v in rows]
        sweeps.append((path, ds))
    for (pa, a), (pb, b) in [(x, y) for i, x in enumerate(sweeps) for y in sweeps[i + 1 :]]:
        axis = measure.sweep_axis(a)
        if not (read_run_attrs(a)["trained"] and read_run_attrs(b)["trained"]):
            continue
        for differ, key, fn in (("alpha_L", "L", compare.p9_verdict), ("alpha_A", "N", compare.p12_verdict)):
            if axis == key and compare.comparable(a, b, differ):
                one, half = (a, b) if read_run_attrs(a)[differ] > read_run_attrs(b)[differ] else (b, a)
                names = f"{pa.name} vs {pb.name}" if one is a else f"{pb.name} vs {pa.name}"
                out.append(replace(fn(one, half), dataset=names))
    preset = preset_of({path.name: ds for path, ds in loaded})
    if preset is not None:
        out = with_planned_power(out, preset_plan(preset))
    return out


def summary_markdown(verdicts: list[Verdict]) -> str:
    """The P1-P12 summary (the README's verdict table): per prediction (registry order) and setting, the primary
    row with its secondary rows listed and not counted (`dmft.verdict.markdown`); then the headline over primary
    rows and the predictions no dataset measured, with what they need."""
    missing = [k for k in KEYS if not any(v.key == k for v in verdicts)]
    out = verdict.markdown(verdicts, CLAIMS, KEYS) + "\n" + verdict.headline(verdicts) + "\n"
    if missing:
        out += (
            "\nNot measured (no dataset for it): "
            + "; ".join(f"{k}: needs {REGISTRY[k].needs}" for k in missing)
            + "\n"
        )
    return out


def full_lines(verdicts: list[Verdict]) -> list[str]:
    """Every verdict row, grouped by dataset, as plain-text tables (`dmft.verdict.lines`)."""
    out: list[str] = []
    for name in dict.fromkeys(v.dataset for v in verdicts):
        out += [f"== {name}", *verdict.lines([v for v in verdicts if v.dataset == name]), ""]
    return out


# ---- power planned before the data (`dmft-probe plan` on a preset's geometry) --------------------------------------

PLAN_REPS = 400  # simulated sweeps per case: power to about +-0.02 (binomial sd at 0.5 is 0.025)
# the estimator of a primary row -> the row kind `dmft.power` simulates for it
_PLAN_KIND = {
    "slope of the seed mean": "slope",
    "seed-variance rate": "variance",
    "paired block-draw variance": "variance",
    "plateau": "plateau",
}


def preset_of(datasets: dict[str, xr.Dataset]):
    """The preset (`probes.grid.reproduce.PRESETS`) whose every sweep job is among `datasets` ({file name: dataset})
    with the job's sizes, seeds and steps: the folder `reproduce --preset NAME` made; None otherwise."""
    from probes.grid.reproduce import PRESETS, job_config, job_seeds

    for preset in PRESETS.values():

        def is_job(job, preset=preset) -> bool:  # bound now, not at call time
            ds = datasets.get(f"{job.name}.nc")
            if ds is None or job.axis not in ds.coords:
                return False
            steps = int(json.loads(ds.attrs.get("config", "{}")).get("steps", -1))
            return (
                [int(v) for v in ds[job.axis].values] == list(job.values)
                and ds.sizes.get("seed", 1) == job_seeds(preset, job)
                and steps == job_config(preset, job).steps
            )

        if all(is_job(job) for job in preset.jobs if job.kind == "sweep"):
            return preset
    return None


_PLANS: dict[tuple[str, int], list] = {}  # preset_plan per (preset name, reps): presets are fixed in code


def preset_plan(preset, reps: int = PLAN_REPS) -> list[tuple[str, list[power.RowPower]]]:
    """The planned power of every sweep job of `preset` (`probes.grid.reproduce.Preset`), before any data: for each
    job, (file name, `dmft.power.plan` at its axis, sizes and seeds, with the noise the preset states for it,
    `Preset.noise`, measured on an earlier run of the preset). An init-only job keeps its init rows only."""
    from probes.grid.reproduce import job_config, job_seeds

    if (preset.name, reps) in _PLANS:
        return _PLANS[preset.name, reps]
    out = []
    for job in preset.jobs:
        if job.kind != "sweep":
            continue
        cfg = job_config(preset, job)
        stated = dict(preset.noise.get(job.name, {}))
        noise = power.Noise(**{"source": "stated by the preset", **stated})
        p = cfg.param
        plans = power.plan(
            job.axis,
            [float(v) for v in job.values],
            job_seeds(preset, job),
            noise,
            p.alpha_A,
            p.alpha_L,
            p.standard,
            reps=reps,
            seed=0,
        )
        if cfg.steps == 0:
            plans = [r for r in plans if r.row.kind == "slope"]
        out.append((f"{job.name}.nc", plans))
    _PLANS[preset.name, reps] = out
    return out


def plan_markdown(plans: list[tuple[str, list[power.RowPower]]]) -> str:
    """The planned power as Markdown: per dataset and simulated row, the hypotheses, the power, the rate at which
    the row comes out consistent when an alternative is true, and the seeds for power 0.8; rows below 0.8 are
    marked "underpowered in advance". Rows of estimators without a simulation model are named after the table."""
    out = [
        "| dataset | row | hypotheses | power | consistent if alternative true | seeds for power 0.8 | in advance |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in plans:
        for r in rows:
            false = ", ".join(f"{k}: {v:.2f}" for k, v in r.false_consistent.items())
            out.append(
                f"| {name} | {r.row.name} | {r.row.hypotheses_text()} | {r.power:.2f} | {false} | "
                f"{_need(r)} | {'ok' if r.power >= 0.8 else 'underpowered'} |"
            )
    out.append("")
    out.append(
        "Simulated by `dmft.power` (the estimators and the rule of `check`, synthetic sweeps at each job's "
        "sizes and seeds, with the noise the preset states). P2-P4, P7-P9, P11, P12 and the coordinate "
        "check have no simulation model: their power is not planned, and their verdict is the evidence."
    )
    return "\n".join(out) + "\n"


def _need(r: power.RowPower) -> str:
    if r.power >= 0.8:
        return f"{r.seeds} (these)"
    if r.seeds_needed is not None:
        return str(r.seeds_needed)
    wider = "".join(f"; {s} at sizes {', '.join(f'{x:g}' for x in w)}" for w, s in r.wider_needs)
    return f"more than {power.MAX_SEEDS} at these sizes{wider}"


def with_planned_power(verdicts: list[Verdict], plans: list[tuple[str, list[power.RowPower]]]) -> list[Verdict]:
    """verdicts with `power` set on each primary row that a plan simulated (matched by dataset, prediction key and
    estimator), and a note on those planned below 0.8 ("underpowered in advance"); the outcome stays the rule's."""
    by = {(name, r.row.name.split()[0], r.row.kind): r for name, rows in plans for r in rows}
    out = []
    for v in verdicts:
        r = by.get((v.dataset, v.key, _PLAN_KIND.get(v.estimator, ""))) if v.primary else None
        if r is not None:
            note = v.note
            if r.power < 0.8:
                note = "; ".join(
                    t
                    for t in (
                        note,
                        f"underpowered in advance: planned power {r.power:.2f} < 0.8, seeds for 0.8: {_need(r)}",
                    )
                    if t
                )
            v = replace(v, power=float(r.power), note=note)
        out.append(v)
    return out


def write_report(folder: Path, say=print, n_heads_mc: int = MC_HEADS, preset=None) -> Path:
    """The verdicts of `folder` as `verdicts.md` (the P1-P12 summary) and `verdicts-full.md` (every row), each
    written to a temporary file and renamed into place; returns the summary's path. say(line): progress. preset:
    the `probes.grid.reproduce.Preset` that made the folder; its planned power (`preset_plan`, also set on the primary
    rows it covers by `folder_verdicts`) is written to `plan.md`."""
    folder = Path(folder)
    verdicts = folder_verdicts(folder, n_heads_mc=n_heads_mc, progress=say)
    if preset is not None:
        _write_text(folder / "plan.md", plan_markdown(preset_plan(preset)))
    summary = folder / "verdicts.md"
    _write_text(summary, summary_markdown(verdicts))
    _write_text(folder / "verdicts-full.md", "```\n" + "\n".join(full_lines(verdicts)) + "\n```\n")
    return summary


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    tmp.replace(path)

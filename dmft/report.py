"""One verdict table for a folder of sweeps: every prediction P1-P12 that the folder's datasets can measure.

`folder_verdicts(folder)` reads every dataset in `folder` (`*.nc`, `*.zarr`; sweep-store part folders are
skipped): sweeps get `dmft.check.check` (P1-P4, P8, P10, the coordinate check) plus the trained convergence
rates (P5 along H, P6 along N, conv-L along L; `dmft.convergence`) and P11 on H sweeps; learning-rate grids
(`probes.lr_grid`) get P7; pairs of sweeps that differ only in alpha_L give P9, only in alpha_A give P12.
`summary_lines` condenses the rows into one line per prediction, with the predictions the folder could not
measure named and the reason given.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import xarray as xr

from . import compare, convergence, measure
from .check import Verdict, check, run_attrs
from .predictions import trained_rate
from .verdict import Verdict as NewVerdict

KEYS = ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9", "P10", "P11", "P12", "conv-L", "coord")
CLAIMS = {
    "P1": "Var over heads of A(0) ~ N^(1-2 alpha_A)",
    "P2": "Var over heads of A after training vs N",
    "P3": "law of A(0) over heads: variance-gamma(N)",
    "P4": "init kernels -> H->oo limit at H^-1 (mean square)",
    "P5": "trained model -> H->oo limit at H^-1 (mean square, seed variance)",
    "P6": "N->oo at fixed H: N^-1 for alpha_A=1, no convergence for alpha_A=1/2",
    "P7": "best eta0 transfers across N (SP shifts)",
    "P8": "W_Q, W_K movement ~ L^(alpha_L-1)",
    "P9": "alpha_L=1 beats alpha_L=1/2 at equal compute, large L",
    "P10": "residual growth at init ~ L^(1-2 alpha_L)",
    "P11": "dynamics across H: similar (ViT) or improving (C4)",
    "P12": "trained kernels equal across alpha_A",
    "conv-L": "trained model -> L->oo limit (alpha_L=1: L^-1)",
    "coord": "feature updates O(1) in N and H",
}
# Quantities whose distance from the size -> oo limit is fitted (dmft.convergence); the LM adds its last-token
# kernel.
RATE_QUANTITIES = ("kernel_pooled", "probe_outputs", "heldout_loss", "attn_prob_var_heads")
SEED_VAR_QUANTITIES = ("probe_outputs", "heldout_loss")
# A variance over 3-4 seeds gives unbounded or undefined bootstrap intervals (dmft.convergence); from 5 on they
# are finite, if wide.
MIN_SEEDS_SEED_VAR = 5
INCONCLUSIVE = "inconclusive"


def datasets_in(folder: Path) -> list[Path]:
    """The dataset files of `folder` (sorted): `*.nc` files and `*.zarr` folders, not sweep-store parts."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a folder")
    out = sorted(p for p in folder.iterdir() if p.suffix in (".nc", ".zarr") and not p.name.startswith("."))
    if not out:
        raise ValueError(f"{folder}: holds no dataset (*.nc, *.zarr); run `dmft-probe reproduce` or `sweep` first")
    return out


def at_step(rate, step: int):
    """A ConvergenceRate / SeedVarianceRate read at another probe step (slope, interval and reason of that step;
    the rates carry every step, so nothing is refitted)."""
    i = list(np.asarray(rate.slope_by_step["step"].values)).index(step)
    return replace(rate, step=step, slope=float(rate.slope_by_step[i]), lo=float(rate.lo_by_step[i]),
                   hi=float(rate.hi_by_step[i]), reason=rate.reasons[i])


def _rates(ds: xr.Dataset, axis: str, quantity: str, seed_variance: bool):
    """(the rate, the Richardson rate or None), every probe step; or the ValueError that says why not."""
    try:
        if seed_variance:
            return convergence.seed_variance_rate(ds, quantity, axis), None
        return (convergence.convergence_rate(ds, quantity, axis, method="largest"),
                convergence.convergence_rate(ds, quantity, axis, method="richardson"))
    except ValueError as e:
        return e, None


def _rate_verdict(pred, a: dict, axis: str, quantity: str, seed_variance: bool, rates, step: int) -> Verdict:
    """One convergence-rate row at probe `step`: the slope of the distance from the limit ("largest", with the
    Richardson estimate and the agreement of the two in the note) or of the seed variance, against the prediction
    `pred` (`trained_rate`); "not fitted" with the reason where the step gives no slope."""
    label = f"{quantity} {'seed variance' if seed_variance else 'distance'} @{step}"
    predicted = "+0 (no convergence)" if pred.exponent == 0 else f"{pred.exponent:+g}"
    rate, rich = rates
    if isinstance(rate, ValueError):
        return Verdict(pred.key, label, axis, a["name"], predicted, "not fitted", np.nan, np.nan, np.nan, pred.tol,
                       False, f"{INCONCLUSIVE}: not fitted", f"{pred.note}; {str(rate).splitlines()[0]}")
    r = at_step(rate, step)
    if not np.isfinite(r.slope) or np.isnan(r.lo) or np.isnan(r.hi):
        meas = "not fitted" if not np.isfinite(r.slope) else f"{r.slope:+.3f} (no interval)"
        return Verdict(pred.key, label, axis, a["name"], predicted, meas, r.slope, np.nan, np.nan, pred.tol,
                       False, f"{INCONCLUSIVE}: {meas}", f"{pred.note}; {r.reason}")
    extra = "" if rich is None else f"; Richardson limit: {convergence.agreement(r, at_step(rich, step))}"
    ok = r.lo - pred.tol <= pred.exponent <= r.hi + pred.tol
    # the alternative a rate has to be told from: no convergence (0) for a predicted rate, the generic -1 for a
    # predicted "no convergence"; an interval that holds both cannot test the prediction
    alternative = 0.0 if pred.exponent != 0 else -1.0
    inconclusive = ok and r.lo - pred.tol <= alternative <= r.hi + pred.tol
    by_step = ", ".join(f"{int(t)}: {v:+.2f}" for t, v in zip(rate.slope_by_step["step"].values,
                                                               np.asarray(rate.slope_by_step)) if np.isfinite(v))
    return Verdict(pred.key, label, axis, a["name"], predicted, f"{r.slope:+.3f} [{r.lo:+.3f}, {r.hi:+.3f}]",
                   r.slope, r.lo, r.hi, pred.tol, bool(ok and not inconclusive),
                   f"{INCONCLUSIVE}: the interval also holds {alternative:+g}" if inconclusive else "",
                   f"{pred.note}{extra}; slope by step: {by_step}")


def rate_steps(ds: xr.Dataset) -> list[int]:
    """The probe steps the convergence rows are read at: the first after initialisation ("early": fluctuations
    have had little time to grow) and the last ("trained")."""
    steps = [int(s) for s in ds["step"].values if s > 0]
    return sorted({steps[0], steps[-1]}) if steps else []


def trained_verdicts(ds: xr.Dataset) -> list[Verdict]:
    """The trained-regime rows of one sweep: convergence rates and seed-variance rates along its axis (P5, P6,
    conv-L) at the early and the last probe step, and P11 on H sweeps. Empty for an init-only sweep or one
    without a prediction (SP)."""
    ds = measure.with_seed_dim(ds)
    a = run_attrs(ds)
    if not a["trained"]:
        return []
    axis = measure.sweep_axis(ds)
    out = []
    pred = trained_rate(a["alpha_A"], a["alpha_L"], a["standard"], axis)
    if pred is not None:
        kinds = [(q, False) for q in RATE_QUANTITIES + (("kernel_last_token",) if a["task"] == "lm" else ())]
        if ds.sizes.get("seed", 1) >= MIN_SEEDS_SEED_VAR:
            kinds += [(q, True) for q in SEED_VAR_QUANTITIES]
        rates = {k: _rates(ds, axis, *k) for k in kinds}
        for step in rate_steps(ds):
            out += [_rate_verdict(pred, a, axis, q, sv, rates[(q, sv)], step) for q, sv in kinds]
    if axis == "H":
        out.append(compare.p11_verdict(ds))
    return out


def p7_verdict(grid: xr.Dataset) -> "NewVerdict":
    """P7 from a learning-rate grid (`probes.lr_grid`): the exponent of the continuous optimum eta0* against the
    size, with its seed-bootstrap interval and support (`dmft.transfer.fit_optimum`), as a `dmft.verdict.Verdict`
    (`dmft.transfer.p7_verdict`: muP family 0 against SP's -1; SP, the control, -1 against 0)."""
    from .transfer import fit_optimum, losses_of
    from .transfer import p7_verdict as verdict_of

    a = run_attrs(grid)
    return verdict_of(fit_optimum(losses_of(grid), grid.attrs["sweep_axis"]), a["standard"], a["name"])


def p7_row(grid: xr.Dataset) -> Verdict:
    """`p7_verdict` as a row of the tables `dmft.check` still renders (a bridge until every row is a
    `dmft.verdict.Verdict`): quantity "eta0* exponent", measured with its interval and band, consistent only when
    the new rule says consistent, an underpowered or refuted outcome named in `supported`."""
    v = p7_verdict(grid)
    why = "" if v.consistent else f"{INCONCLUSIVE}: {v.needs}" if v.outcome == "underpowered" else v.outcome
    return Verdict(v.key, v.row, v.axis, v.setting, v.hypotheses_text(), f"{v.measured()} {v.mark} {v.outcome}",
                   v.estimate, v.lo, v.hi, v.band, v.consistent, why,
                   "; ".join(t for t in (v.note, f"band {v.band:.3g}: {v.band_source}", v.diverged_points) if t))


def _named(path: Path, e: ValueError) -> ValueError:
    """e's first line, prefixed with `path` unless it names the file already."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return ValueError(msg if path.name in msg else f"{path}: {msg}")


def load_dataset_checked(path: Path) -> xr.Dataset:
    """The dataset at `path`, checked for what folder_verdicts needs before any verdict is computed: it loads
    (`probes.dataset.load`: schema and checksums), its config has the param and model tables (`run_attrs`), and it
    is a complete learning-rate grid (`probes.lr_grid.load_lr_grid`) or a sweep along one of N, H, L with at least
    3 sizes. ValueError (one line naming the file) otherwise."""
    from probes.dataset import load
    from probes.lr_grid import KIND, load_lr_grid

    try:
        ds = load(path)
        run_attrs(ds)
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
                raise ValueError(f"--out: {str(e).splitlines()[0]} (the verdict table reads every dataset in "
                                 "the folder); move it away or choose another --out") from None


def folder_verdicts(folder: Path, n_heads_mc: int = 8192, progress=None) -> list[Verdict]:
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
                out.append(replace(p7_row(ds), dataset=path.name))
                continue
            rows = check(ds, n_heads_mc=n_heads_mc) + trained_verdicts(ds)
        except ValueError as e:
            raise _named(path, e) from None
        out += [replace(v, dataset=path.name) for v in rows]
        sweeps.append((path, ds))
    for (pa, a), (pb, b) in [(x, y) for i, x in enumerate(sweeps) for y in sweeps[i + 1:]]:
        axis = measure.sweep_axis(a)
        if not (run_attrs(a)["trained"] and run_attrs(b)["trained"]):
            continue
        for differ, key, fn in (("alpha_L", "L", compare.p9_verdict), ("alpha_A", "N", compare.p12_verdict)):
            if axis == key and compare.comparable(a, b, differ):
                one, half = (a, b) if run_attrs(a)[differ] > run_attrs(b)[differ] else (b, a)
                names = f"{pa.name} vs {pb.name}" if one is a else f"{pb.name} vs {pa.name}"
                out.append(replace(fn(one, half), dataset=names))
    return out


def _not_measured(key: str) -> str:
    return {"P7": "needs a learning-rate grid (`dmft-probe reproduce` makes one)",
            "P9": "needs two trained L sweeps that differ only in alpha_L",
            "P12": "needs two trained N sweeps that differ only in alpha_A",
            "P11": "needs a trained H sweep", "P5": "needs a trained H sweep",
            "P6": "needs a trained N sweep", "conv-L": "needs a trained L sweep with alpha_L = 1 or 1/2",
            "P4": "needs an H sweep", "P2": "needs a trained N sweep", "P8": "needs a trained L sweep",
            "P10": "needs an L sweep"}.get(key, "no sweep measures it")


SHORT = {"kernel_pooled": "K", "kernel_last_token": "K_last", "probe_outputs": "f", "heldout_loss": "loss",
         "attn_prob_var_heads": "Var_h softmax(A)"}


def _short(v: Verdict) -> str:
    """A compact name of a row's quantity: "K @30" (distance of the pooled kernel from its limit at step 30),
    "Var_seed f @300" (seed variance of the outputs); other quantities keep their name."""
    name, _, step = v.quantity.partition(" @")
    for kind, fmt in ((" distance", "{}"), (" seed variance", "Var_seed {}")):
        if name.endswith(kind):
            q = name[: -len(kind)]
            return fmt.format(SHORT.get(q, q)) + (f" @{step}" if step else "")
    return v.quantity


def _measured(v: Verdict) -> str:
    mark = "✓" if v.consistent else "?" if v.supported.startswith(INCONCLUSIVE) else "✗"
    if np.isfinite(v.slope) and np.isfinite(v.lo) and v.key not in ("P7", "P12"):
        meas = f"{v.slope:+.2f} [{v.lo:+.2f}, {v.hi:+.2f}]"
    else:
        meas = v.measured
    return f"{_short(v)}: {meas} {mark}"


def summary_rows(verdicts: list[Verdict]) -> list[tuple[str, str, str, str, str, str]]:
    """The summary, KEYS order, one row per (prediction, parametrization, axis): (key, claim, setting,
    predicted, measured rows condensed with a mark each: ✓ consistent, ✗ not, ? inconclusive, verdict "k of n
    consistent[, m inconclusive]"); a prediction no dataset measured gets one row saying what it needs."""
    rows = []
    for key in KEYS:
        vs = [v for v in verdicts if v.key == key]
        if not vs:
            rows.append((key, CLAIMS[key], "-", "-", "-", "not measured: " + _not_measured(key)))
            continue
        groups: dict[tuple[str, str], list[Verdict]] = defaultdict(list)
        for v in vs:
            groups[(v.parametrization, v.axis)].append(v)
        for n, ((param, axis), gs) in enumerate(groups.items()):
            predicted = "; ".join(dict.fromkeys(v.predicted for v in gs))
            n_ok = sum(v.consistent for v in gs)
            n_open = sum(v.supported.startswith(INCONCLUSIVE) for v in gs)
            verdict = f"{n_ok} of {len(gs)} consistent" + (f", {n_open} inconclusive" if n_open else "")
            rows.append((key if n == 0 else "", CLAIMS[key] if n == 0 else "", f"{param}, {axis}", predicted,
                         "; ".join(_measured(v) for v in gs), verdict))
    return rows


def summary_markdown(verdicts: list[Verdict]) -> str:
    """The summary as a Markdown table (the README's verdict table)."""
    lines = ["| P | claim | setting | predicted | measured [95% CI] | verdict |", "|---|---|---|---|---|---|"]
    for row in summary_rows(verdicts):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    return "\n".join(lines) + "\n"


def full_lines(verdicts: list[Verdict]) -> list[str]:
    """Every verdict row, grouped by dataset, as plain-text tables."""
    from .check import verdict_lines

    out: list[str] = []
    for name in dict.fromkeys(v.dataset for v in verdicts):
        out += [f"== {name}", *verdict_lines([v for v in verdicts if v.dataset == name]), ""]
    return out


def write_report(folder: Path, say=print, n_heads_mc: int = 8192) -> Path:
    """The verdicts of `folder` as `verdicts.md` (the P1-P12 summary) and `verdicts-full.md` (every row), each
    written to a temporary file and renamed into place; returns the summary's path. say(line): progress."""
    folder = Path(folder)
    verdicts = folder_verdicts(folder, n_heads_mc=n_heads_mc, progress=say)
    summary = folder / "verdicts.md"
    _write_text(summary, summary_markdown(verdicts))
    _write_text(folder / "verdicts-full.md", "```\n" + "\n".join(full_lines(verdicts)) + "\n```\n")
    return summary


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(text)
    tmp.replace(path)

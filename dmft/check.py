"""Verdicts: each prediction that applies to a sweep, next to the measured value with its bootstrap CI.

A slope prediction is consistent when the predicted exponent lies within the 95% seed-bootstrap interval of
the fitted slope widened by the prediction's stated finite-size allowance `tol`. A "nonzero" prediction (SP)
needs |slope| > threshold with an interval that excludes 0. A density prediction (P3) needs every size's KS
p-value above 0.01 / (number of sizes).

Diverged points (runs whose loss or probes became NaN/inf; `dmft.divergence`) are handled explicitly: the slopes
of trained quantities are fitted over the points that did not diverge; quantities at initialisation use every
point with a step-0 record (initialisation does not depend on training). Each verdict counts and names the
points it left out (`diverged`, `diverged_points`); a prediction left with fewer than 3 sizes is reported as not
fitted, with a note naming the divergence ("N=32, 64 diverged (seeds 0-3 at steps 12-40); a slope needs at
least 3 sizes, got 2").
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace

import numpy as np
import xarray as xr

from . import divergence, measure
from .fit import consistent, loglog_fit
from .predictions import Prediction, predictions


@dataclass(frozen=True)
class Verdict:
    key: str
    quantity: str
    axis: str
    parametrization: str
    predicted: str
    measured: str
    slope: float
    lo: float
    hi: float
    tol: float
    consistent: bool
    supported: str
    note: str
    diverged: int = 0              # (size, seed) points left out of this verdict because they diverged
    diverged_points: str = ""      # which: "N=32, 64 diverged (seeds 0-3 at steps 12-40)"
    dataset: str = ""              # the file the verdict was measured on (`dmft.report`, a folder of sweeps)


def run_attrs(ds: xr.Dataset) -> dict:
    """alpha_A, alpha_L, beta0, L0, standard, parametrization, task, trained from a sweep dataset's attrs."""
    try:
        cfg = json.loads(ds.attrs["config"])
        p, m = cfg["param"], cfg["model"]
        steps = int(cfg.get("steps", 0))
        return {"alpha_A": float(p["alpha_A"]), "alpha_L": float(p["alpha_L"]), "beta0": p["beta0"], "L0": p["L0"],
                "standard": bool(p["standard"]), "name": p["name"], "task": m["task"], "N": m["N"], "L": m["L"],
                "trained": steps > 0 and ds.sizes.get("step", 1) > 1}
    except (KeyError, ValueError, TypeError):
        raise ValueError("dataset has no readable 'config' attribute with 'param' and 'model' tables; "
                         "is it a dmft-probe dataset?") from None


def _predicted_text(pred: Prediction) -> str:
    if pred.kind == "nonzero":
        return f"|slope| > {pred.threshold:g}"
    if pred.kind == "hypotheses":
        return " or ".join(f"{e:+g} ({h})" for h, e in pred.hypotheses.items())
    return f"{pred.exponent:+g}"


def _slope_verdict(pred: Prediction, ds: xr.Dataset, axis: str, name: str, sizes, values) -> Verdict:
    fit = loglog_fit(sizes, values)
    meas = f"{fit.slope:+.3f} [{fit.lo:+.3f}, {fit.hi:+.3f}]"
    if pred.kind == "nonzero":
        ok = abs(fit.slope) > pred.threshold and (fit.lo > 0 or fit.hi < 0)
        return Verdict(pred.key, pred.quantity, axis, name, f"|slope| > {pred.threshold:g}", meas, fit.slope,
                       fit.lo, fit.hi, 0.0, ok, "", pred.note)
    if pred.kind == "hypotheses":
        fits = {h: consistent(fit, e, pred.tol) for h, e in pred.hypotheses.items()}
        supported = [h for h, ok in fits.items() if ok]
        text = " or ".join(f"{e:+g} ({h})" for h, e in pred.hypotheses.items())
        return Verdict(pred.key, pred.quantity, axis, name, text, meas, fit.slope, fit.lo, fit.hi, pred.tol,
                       bool(supported), ", ".join(supported) or "neither", pred.note)
    ok = consistent(fit, pred.exponent, pred.tol)
    note = pred.note
    if pred.constant is not None:
        ratio = np.nanmean(values, axis=1) / (pred.constant * np.asarray(sizes, float) ** pred.exponent)
        note += f"; measured / predicted law per size: {', '.join(f'{r:.2f}' for r in ratio)}"
    return Verdict(pred.key, pred.quantity, axis, name, f"{pred.exponent:+g}", meas, fit.slope, fit.lo, fit.hi,
                   pred.tol, ok, "", note)


def _density_verdict(pred: Prediction, ds: xr.Dataset, axis: str, a: dict) -> Verdict:
    from .solvers import attention_law

    samples = {s: x for s, x in measure.attn_raw_init(ds, axis).items() if len(x)}   # sizes with a step-0 record
    if not samples:
        return Verdict(pred.key, pred.quantity, axis, a["name"], "variance-gamma(N)", "not tested", np.nan, np.nan,
                       np.nan, 0.0, False, "", "no size has a step-0 record of A")
    pvals = []
    for size, x in samples.items():
        N = int(size) if axis == "N" else int(a["N"])
        pvals.append(attention_law(N, a["alpha_A"]).ks_test(x)[1])
    pmin = float(np.min(pvals))
    level = 0.01 / len(pvals)
    n = min(len(x) for x in samples.values())
    return Verdict(pred.key, pred.quantity, axis, a["name"], "variance-gamma(N)", f"KS p min {pmin:.3g} (n={n}/size)",
                   np.nan, np.nan, np.nan, 0.0, pmin > level, "", pred.note + f"; pass if every p > {level:.3g}")


def kernel_limit(ds: xr.Dataset, a: dict | None = None, n_heads_mc: int = 8192) -> xr.Dataset:
    """The H -> oo kernels at initialisation for the sweep's probe inputs and parametrization (the P4 reference;
    `dmft.solvers.infinite_head_kernels`, seeded, `n_heads_mc` Monte Carlo heads)."""
    from .solvers import infinite_head_kernels

    a = a or run_attrs(ds)

    inputs = ds.probe_inputs
    for d in [d for d in inputs.dims if d not in ("sample", "token", "feature")]:
        inputs = inputs.isel({d: 0})
    return infinite_head_kernels(inputs.values, task=a["task"], N=int(a["N"]), L=int(a["L"]), alpha_A=a["alpha_A"],
                                 alpha_L=a["alpha_L"], beta0=a["beta0"], L0=a["L0"], standard=a["standard"],
                                 mode="finite_N", n_heads_mc=n_heads_mc, seed=0)


MAX_MC_HEADS = 10**7      # Monte Carlo heads of the H -> oo solver: 10^7 takes minutes already


def check_mc_heads(n_heads_mc: object) -> None:
    """ValueError naming --mc-heads unless it is an integer in [1, MAX_MC_HEADS] (before any work)."""
    if isinstance(n_heads_mc, bool) or not isinstance(n_heads_mc, (int, np.integer)) \
            or not 1 <= n_heads_mc <= MAX_MC_HEADS:
        raise ValueError(f"--mc-heads must be a positive integer <= {MAX_MC_HEADS}, got {n_heads_mc!r}"[:200])


def check(ds: xr.Dataset, n_heads_mc: int = 8192, limit: xr.Dataset | None = None) -> list[Verdict]:
    """All verdicts for a sweep dataset (see module docstring). limit: a precomputed `kernel_limit(ds)` (P4)."""
    check_mc_heads(n_heads_mc)
    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    if ds.sizes[axis] < 3:
        raise ValueError(f"a sweep needs at least 3 values of {axis} for a slope, got {ds.sizes[axis]}")
    a = run_attrs(ds)
    points = divergence.diverged_points(ds, axis)
    seeds = ds["seed"].values
    out = []
    for pred in predictions(a["alpha_A"], a["alpha_L"], a["standard"], axis, a["trained"]):
        if pred.kind == "density":
            v = _density_verdict(pred, ds, axis, a)
            if _with_step0_record(ds, axis, points):
                v = replace(v, note=v.note + "; step-0 records of diverged points used")
            out.append(v)
            continue
        if pred.quantity == "kernel_mse_init":
            if limit is None:
                limit = kernel_limit(ds, a, n_heads_mc)
            sizes, values = measure.kernel_mse_init(ds, axis, limit)
        else:
            sizes, values = measure.QUANTITIES[pred.quantity](ds, axis)
        out.append(_verdict_over_stable_points(pred, ds, axis, a["name"], sizes, values, points, seeds))
    return out


def _verdict_over_stable_points(pred: Prediction, ds: xr.Dataset, axis: str, name: str, sizes, values,
                                points: list, seeds) -> Verdict:
    """The slope verdict over the points that did not diverge (trained quantities), or over every point with a
    step-0 record (quantities at initialisation); not fitted, naming the divergence, when fewer than 3 sizes
    are left because of it."""
    values, left_out = stable_values(pred.trained, sizes, values, points, seeds)
    text = divergence.describe(left_out, axis)
    n_left = int(np.isfinite(values).any(axis=1).sum())
    if left_out and n_left < 3:
        note = f"{text}; a slope needs at least 3 sizes, got {n_left}"
        tol = 0.0 if pred.kind == "nonzero" else pred.tol
        return Verdict(pred.key, pred.quantity, axis, name, _predicted_text(pred), "not fitted", np.nan, np.nan,
                       np.nan, tol, False, "", note, len(left_out), text)
    finite = values[np.isfinite(values)]
    if finite.size and np.any(finite <= 0):
        # e.g. the stream growth of nGPT, whose residual stream is normalised by construction (it is 0 up to
        # rounding): no log-log slope exists, and the prediction does not apply to such a block
        tol = 0.0 if pred.kind == "nonzero" else pred.tol
        return Verdict(pred.key, pred.quantity, axis, name, _predicted_text(pred), "not fitted", np.nan, np.nan,
                       np.nan, tol, False, "", f"{pred.note}; the measured values are <= 0 at some size "
                       f"(min {finite.min():.3g}): no log-log slope", len(left_out), text)
    v = _slope_verdict(pred, ds, axis, name, sizes, values)
    note = v.note
    if left_out:
        note += f"; {text}: left out of the fit"
    if not pred.trained and _with_step0_record(ds, axis, points):
        note += "; step-0 records of diverged points used"
    return replace(v, note=note, diverged=len(left_out), diverged_points=text)


def stable_values(trained: bool, sizes, values, points: list, seeds) -> tuple[np.ndarray, list]:
    """(values with the left-out points set to NaN, the left-out diverged points): for a trained quantity every
    diverged point is left out; at initialisation only those without a step-0 record (a diverged point's step-0
    record is still a record of the initialisation)."""
    values = np.asarray(values, dtype=float)
    values = values[:, None] if values.ndim == 1 else values
    if trained:
        return divergence.mask_values(sizes, values, points, seeds)[0], list(points)
    return values, [p for p in points if _no_record(sizes, values, p, seeds)]


def _with_step0_record(ds: xr.Dataset, axis: str, points: list) -> list:
    """The diverged points that have a step-0 record (a finite held-out loss at step 0)."""
    if not points or "step" not in ds.dims or 0 not in ds["step"].values:
        return []
    h0 = ds["heldout_loss"].sel(step=0)
    return [p for p in points if np.isfinite(float(h0.sel({axis: p.size, "seed": p.seed})))]


def _no_record(sizes, values, point, seeds) -> bool:
    """True when `point` (a diverged point) has no finite value in `values` (it diverged before its step-0
    record)."""
    rows = np.flatnonzero(np.isclose(np.asarray(sizes, dtype=float), point.size))
    seeds = list(np.atleast_1d(seeds).astype(int))
    if point.seed not in seeds:
        return False
    return not np.isfinite(values[rows, seeds.index(point.seed)]).any()


def verdict_dataset(verdicts: list[Verdict]) -> xr.Dataset:
    """The verdict table as an xarray Dataset along `row`."""
    rows = [asdict(v) for v in verdicts]
    data = {k: ("row", [r[k] for r in rows]) for k in rows[0]}
    data["consistent"] = ("row", np.asarray([r["consistent"] for r in rows], dtype=np.int8))
    return xr.Dataset(data, coords={"row": np.arange(len(rows))}, attrs={"title": "dmft-probe verdicts"})


def verdict_lines(verdicts: list[Verdict]) -> list[str]:
    """Plain-text table: quantity, axis, parametrization, predicted, measured [95% CI], consistent."""
    head = ("pred", "quantity", "axis", "param", "predicted", "measured slope [95% CI]", "tol", "consistent")
    rows = [(v.key, v.quantity, v.axis, v.parametrization, v.predicted, v.measured, f"{v.tol:g}",
             ("yes" if v.consistent else "NO") + (f" ({v.supported})" if v.supported else "")) for v in verdicts]
    if any(v.diverged for v in verdicts):      # how many (size, seed) points each row left out as diverged
        head += ("diverged",)
        rows = [(*r, str(v.diverged)) for r, v in zip(rows, verdicts)]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    lines += [f"  {v.key} {v.quantity}: {v.note}" for v in verdicts if v.note]
    return lines

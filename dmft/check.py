"""Verdicts: each prediction that applies to a sweep, next to the measured value with its bootstrap CI.

A slope prediction is consistent when the predicted exponent lies within the 95% seed-bootstrap interval of
the fitted slope widened by the prediction's stated finite-size allowance `tol`. A "nonzero" prediction (SP)
needs |slope| > threshold with an interval that excludes 0. A density prediction (P3) needs every size's KS
p-value above 0.01 / (number of sizes).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np
import xarray as xr

from . import measure
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

    samples = measure.attn_raw_init(ds, axis)
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


def check(ds: xr.Dataset, n_heads_mc: int = 8192, limit: xr.Dataset | None = None) -> list[Verdict]:
    """All verdicts for a sweep dataset (see module docstring). limit: a precomputed `kernel_limit(ds)` (P4)."""
    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    if ds.sizes[axis] < 3:
        raise ValueError(f"a sweep needs at least 3 values of {axis} for a slope, got {ds.sizes[axis]}")
    a = run_attrs(ds)
    out = []
    for pred in predictions(a["alpha_A"], a["alpha_L"], a["standard"], axis, a["trained"]):
        if pred.kind == "density":
            out.append(_density_verdict(pred, ds, axis, a))
            continue
        if pred.quantity == "kernel_mse_init":
            if limit is None:
                limit = kernel_limit(ds, a, n_heads_mc)
            sizes, values = measure.kernel_mse_init(ds, axis, limit)
        else:
            sizes, values = measure.QUANTITIES[pred.quantity](ds, axis)
        out.append(_slope_verdict(pred, ds, axis, a["name"], sizes, values))
    return out


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
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    lines += [f"  {v.key} {v.quantity}: {v.note}" for v in verdicts if v.note]
    return lines

"""Verdicts of one sweep: every row of the registry (`dmft.predictions.REGISTRY`) that the sweep measures, as
`dmft.verdict.Verdict` rows decided by the one rule (`dmft.verdict.decide`; docs/predictions.md, "The verdict
rule").

A slope row fits log(seed mean) against log(size) (`dmft.fit.slope_fit`: the joint jackknife interval over seeds,
the local slopes between adjacent sizes and the band derived from them); its hypotheses and its primary flag come
from the registry. P3 is the mean log-likelihood ratio of A(0) under variance-gamma(N) against the Gaussian of the
same variance, with a t interval over (seed, layer, head) clusters (`p3_verdict`).

Diverged points (runs whose loss or probes became NaN/inf; `dmft.divergence`) are handled explicitly: the slopes
of trained quantities are fitted over the points that did not diverge; quantities at initialisation use every
point with a step-0 record (initialisation does not depend on training). Each verdict counts and names the
points it left out (`diverged`, `diverged_points`); a row left with fewer than 3 sizes is "not measured", with a
note naming the divergence ("N=32, 64 diverged (seeds 0-3 at steps 12-40); a slope needs at least 3 sizes, got
2").
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr

from probes.experiment.progress import Progress

from . import divergence, measure
from .fit import slope_fit
from .predictions import COORD_CORRECTION, SWEEP_KEYS, Planned, planned_rows
from .verdict import NOT_MEASURED, Verdict, lines, to_dataset

P3_LEVEL = 0.95  # two-sided level of P3's t interval over clusters


def read_run_attrs(ds: xr.Dataset) -> dict:
    """Read alpha_A, alpha_L, beta0, L0, standard, parametrization, task, trained (a dict) back from the config
    attr of a sweep dataset (written by `probes.experiment.dataset.run_attrs`)."""
    try:
        cfg = json.loads(ds.attrs["config"])
        p, m = cfg["param"], cfg["model"]
        steps = int(cfg.get("steps", 0))
        return {
            "alpha_A": float(p["alpha_A"]),
            "alpha_L": float(p["alpha_L"]),
            "beta0": p["beta0"],
            "L0": p["L0"],
            "standard": bool(p["standard"]),
            "name": p["name"],
            "task": m["task"],
            "N": m["N"],
            "L": m["L"],
            "trained": steps > 0 and ds.sizes.get("step", 1) > 1,
        }
    except (KeyError, ValueError, TypeError):
        raise ValueError(
            "dataset has no readable 'config' attribute with 'param' and 'model' tables; is it a dmft-probe dataset?"
        ) from None


def row_verdict(
    p: Planned,
    axis: str,
    setting: str,
    est: float = math.nan,
    lo: float = math.nan,
    hi: float = math.nan,
    band: float = math.nan,
    band_source: str = "",
    **kw,
) -> Verdict:
    """A `dmft.verdict.Verdict` for planned row `p` (`dmft.predictions.planned_rows`) with an estimate, its
    interval and the band of its hypotheses (not measured when any is NaN); kw: further Verdict fields."""
    b = band if np.isfinite(band) else 0.0
    pred, alts = p.hypotheses.regions(b)
    note = kw.pop("note", "")
    if not np.isfinite(band) and "outcome" not in kw:
        kw["outcome"] = NOT_MEASURED
    return Verdict(
        p.key,
        p.spec.name,
        p.spec.quantity,
        axis,
        setting,
        p.spec.estimator,
        float(est),
        float(lo),
        float(hi),
        pred,
        alts,
        band=float(band),
        band_source=band_source,
        primary=p.primary,
        note=note,
        **kw,
    )


def slope_verdict(
    p: Planned,
    axis: str,
    setting: str,
    sizes,
    values,
    note: str = "",
    band: float | None = None,
    band_source: str = "",
    **kw,
) -> Verdict:
    """The slope row of `p` from per-seed positive values (size, seed): `dmft.fit.slope_fit`, decided against the
    registry's hypotheses with the band derived from the local slopes, or a stated `band` (its reason in
    `band_source`); not measured (with the reason) when no slope can be fitted."""
    # the coordinate check's row: its band covers a 1/n approach, as in `dmft-probe coord` (COORD_CORRECTION)
    correction = (COORD_CORRECTION, p.hypotheses.exponent) if p.key == "coord" and band is None else None
    try:
        f = slope_fit(sizes, values, band=band, correction=correction)
    except ValueError as e:
        return row_verdict(p, axis, setting, note="; ".join(t for t in (note, str(e)) if t), **kw)
    if not (f.lo <= f.hi):
        note = "; ".join(t for t in (note, "no interval (fewer than 2 seeds)") if t)
    return row_verdict(
        p,
        axis,
        setting,
        f.slope,
        f.lo,
        f.hi,
        f.band,
        band_source or f.band_source,
        local=f.local,
        n_sizes=f.n_sizes,
        n_seeds=f.n_seeds,
        note=note,
        **kw,
    )


def p3_llr(clusters: dict[float, np.ndarray], N_of, alpha_A: float, level: float = P3_LEVEL):
    """P3's estimate from `measure.attn_raw_init_clusters`: per value of A(0) the log-likelihood ratio
    l = log p_VG(N)(A) - log p_Gauss(A), the Gaussian having the same variance (exact at every N: both laws are
    fixed by N and alpha_A). l is averaged within each (seed, layer, head) cluster over its points and over the
    sizes (the same cluster index at every size, so draws shared across sizes stay in one cluster), and the
    cluster means get a t interval. Returns (mean, lo, hi, clusters, values), units nats per value of A.
    E[l] = KL(VG || Gauss) > 0 when A is variance-gamma; E[l] = -KL(Gauss || VG) < 0 when it is Gaussian.
    N_of(size): the key/query dimension N at that size."""
    from scipy import stats

    from .solvers import attention_law

    total, count = None, None
    n_values = 0
    for size, x in clusters.items():
        law = attention_law(int(N_of(size)), alpha_A)
        ok = np.isfinite(x)
        with np.errstate(divide="ignore"):
            l = np.where(
                ok,
                np.log(law.pdf(np.where(ok, x, 0.0))) - stats.norm.logpdf(np.where(ok, x, 0.0), scale=law.std()),
                0.0,
            )
        if total is None:  # one dataset: every size has the same (seed, layer, head) dims, NaN where absent
            total, count = np.zeros(x.shape[:3]), np.zeros(x.shape[:3])
        total += l.sum(-1)
        count += ok.sum(-1)
        n_values += int(ok.sum())
    if total is None or count is None:  # set together
        return math.nan, math.nan, math.nan, 0, 0
    means = (total / np.where(count > 0, count, 1))[count > 0]  # (clusters,)
    k = means.size
    if k < 2:
        return (float(means.mean()) if k else math.nan), math.nan, math.nan, k, n_values
    m, se = float(means.mean()), float(means.std(ddof=1) / math.sqrt(k))
    t = float(stats.t.ppf(0.5 + level / 2, k - 1))
    return m, m - t * se, m + t * se, k, n_values


def p3_ks_pvalues(ds: xr.Dataset, axis: str, a: dict | None = None) -> dict[float, float]:
    """Per size: the KS p-value of A(0) against variance-gamma(N) (`dmft.solvers.attention_law`) over the
    independent draws `measure.attn_raw_init` gives (one point per head, heads, layers and seeds pooled), the
    values the attention-density figure draws; sizes without a finite value are left out. The points of one head
    share W_Q, W_K: a KS test over every point treats dependent values as independent, so its p-value is not
    calibrated (small too often; P3's note once read 0.0003 where the figure of the same sweep, one point per head,
    read 0.76); P3's note and the figure both read this one."""
    from .solvers import attention_law

    a = a or read_run_attrs(ds)
    out = {}
    for s, x in measure.attn_raw_init(measure.with_seed_dim(ds), axis).items():
        if x.size:
            N = int(s) if axis == "N" else int(a["N"])
            out[s] = float(attention_law(N, a["alpha_A"]).ks_test(x)[1])
    return out


def p3_verdict(p: Planned, ds: xr.Dataset, axis: str, a: dict) -> Verdict:
    """P3: is A(0) over heads variance-gamma(N) rather than Gaussian? The mean log-likelihood ratio of the two
    laws per value of A(0) (`p3_llr`: pooled over sizes, t interval over (seed, layer, head) clusters).
    Prediction: > 0 (variance-gamma is closer in Kullback-Leibler divergence); alternative: <= 0 (the Gaussian
    fits as well). The band is 0, stated: the sign of an expected log-likelihood ratio. The likelihood ratio is the
    most powerful test of one law against the other (Neyman-Pearson); at the preset's 48 values per size a
    Kolmogorov-Smirnov comparison had almost no power (docs/predictions.md, P3). The note gives the KS p-value
    against variance-gamma at every size (`p3_ks_pvalues`)."""
    clusters = measure.attn_raw_init_clusters(ds, axis)
    clusters = {s: x for s, x in clusters.items() if np.isfinite(x).any()}
    if not clusters:
        return row_verdict(p, axis, a["name"], note="no size has a step-0 record of A")

    def N_of(size: float) -> int:
        return int(size) if axis == "N" else int(a["N"])

    est, lo, hi, k, n = p3_llr(clusters, N_of, a["alpha_A"])
    pvals = p3_ks_pvalues(ds, axis, a)
    note = (
        f"{n} values in {k} (seed, layer, head) clusters over {len(clusters)} sizes; KS p against "
        "variance-gamma per size (one point per head): " + ", ".join(f"{s:g}: {v:.3g}" for s, v in pvals.items())
    )
    if not (lo <= hi):
        return row_verdict(p, axis, a["name"], note=note + "; fewer than 2 clusters: no interval")
    return row_verdict(
        p,
        axis,
        a["name"],
        est,
        lo,
        hi,
        0.0,
        "stated: the sign of a log-likelihood ratio",
        n_sizes=len(clusters),
        note=note,
    )


# Monte Carlo heads of the P4 reference by default. Its error adds a floor Var_head / MC_HEADS to the mean-square
# distance Var_head / H being fitted: at H = 32 and 2048 heads the floor is 1.6% of it, a slope bias of
# log(1.016) / log(16) = 0.006 over H = 2..32, against bands of 0.1 or more. The cost is O(heads P^2 S^3) per layer:
# 8192 heads took 106 s of the cpu preset's check at P = 32 probe samples, 2048 a quarter of that.
MC_HEADS = 2048


def kernel_limit(ds: xr.Dataset, a: dict | None = None, n_heads_mc: int = MC_HEADS) -> xr.Dataset:
    """The H -> oo kernels at initialisation for the sweep's probe inputs and parametrization (the P4 reference;
    `dmft.solvers.infinite_head_kernels`, seeded, `n_heads_mc` Monte Carlo heads)."""
    from .solvers import infinite_head_kernels

    a = a or read_run_attrs(ds)

    inputs = ds.probe_inputs
    for d in [d for d in inputs.dims if d not in ("sample", "token", "feature")]:
        inputs = inputs.isel({d: 0})
    return infinite_head_kernels(
        inputs.values,
        task=a["task"],
        N=int(a["N"]),
        L=int(a["L"]),
        alpha_A=a["alpha_A"],
        alpha_L=a["alpha_L"],
        beta0=a["beta0"],
        L0=a["L0"],
        standard=a["standard"],
        mode="finite_N",
        n_heads_mc=n_heads_mc,
        seed=0,
    )


MAX_MC_HEADS = 10**7  # Monte Carlo heads of the H -> oo solver: 10^7 takes minutes already


def check_mc_heads(n_heads_mc: object) -> None:
    """ValueError naming --mc-heads unless it is an integer in [1, MAX_MC_HEADS] (before any work)."""
    if (
        isinstance(n_heads_mc, bool)
        or not isinstance(n_heads_mc, (int, np.integer))
        or not 1 <= n_heads_mc <= MAX_MC_HEADS
    ):
        raise ValueError(f"--mc-heads must be a positive integer <= {MAX_MC_HEADS}, got {n_heads_mc!r}"[:200])


def check(
    ds: xr.Dataset, n_heads_mc: int = MC_HEADS, limit: xr.Dataset | None = None, progress: bool | None = None
) -> list[Verdict]:
    """The registry's rows of one sweep (`dmft.predictions.SWEEP_KEYS`: P1-P4, P8, P10, the coordinate check) as
    `dmft.verdict.Verdict` rows (module docstring). limit: a precomputed `kernel_limit(ds)` (P4). progress: a bar
    over the rows with an ETA on stderr (`probes.experiment.progress`; None: on a terminal, False: never)."""
    check_mc_heads(n_heads_mc)
    ds = measure.with_seed_dim(ds)
    axis = measure.sweep_axis(ds)
    if ds.sizes[axis] < 3:
        raise ValueError(f"a sweep needs at least 3 values of {axis} for a slope, got {ds.sizes[axis]}")
    a = read_run_attrs(ds)
    points = divergence.diverged_points(ds, axis)
    seeds = ds["seed"].values
    out = []
    rows = planned_rows(SWEEP_KEYS, a["alpha_A"], a["alpha_L"], a["standard"], axis, a["trained"], a["task"])
    for p in Progress("check", len(rows), unit="rows", enabled=progress).iter(rows, lambda p: p.key):  # P4: minutes
        if p.key == "P3":
            v = p3_verdict(p, ds, axis, a)
            if _with_step0_record(ds, axis, points):
                v = replace(v, note=v.note + "; step-0 records of diverged points used")
            out.append(v)
            continue
        if p.spec.quantity == "kernel_mse_init":
            if limit is None:
                limit = kernel_limit(ds, a, n_heads_mc)
            sizes, values = measure.kernel_mse_init(ds, axis, limit)
        else:
            sizes, values = measure.QUANTITIES[p.spec.quantity](ds, axis)
        out.append(_verdict_over_stable_points(p, ds, axis, a["name"], sizes, values, points, seeds))
    return out


def _unresolved_sizes(sizes, values: np.ndarray, level: float = 0.95) -> list:
    """The sizes whose seed mean is not above 0 at `level` (t interval of the mean over the finite seeds); a size
    whose values are all positive is resolved."""
    from scipy import stats

    out = []
    for size, row in zip(sizes, values):
        x = row[np.isfinite(row)]
        if x.size == 0 or np.all(x > 0):
            continue
        se = x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else np.inf
        if not x.mean() - stats.t.ppf(0.5 + level / 2, max(x.size - 1, 1)) * se > 0:
            out.append(float(size) if float(size) != int(size) else int(size))
    return out


def _verdict_over_stable_points(
    p: Planned, ds: xr.Dataset, axis: str, name: str, sizes, values, points: list, seeds
) -> Verdict:
    """The slope verdict over the points that did not diverge (trained quantities), or over every point with a
    step-0 record (quantities at initialisation); not measured, naming the divergence, when fewer than 3 sizes
    are left because of it."""
    trained = p.spec.step != "init"
    values, left_out = stable_values(trained, sizes, values, points, seeds)
    text = divergence.describe(left_out, axis)
    n_left = int(np.isfinite(values).any(axis=1).sum())
    div: dict[str, Any] = {"diverged": len(left_out), "diverged_points": text}
    if left_out and n_left < 3:
        return row_verdict(p, axis, name, note=f"{text}; a slope needs at least 3 sizes, got {n_left}", **div)
    unresolved = _unresolved_sizes(sizes, values)
    if unresolved:
        # a signed quantity (the stream growth |h_L|^2 - |h_0|^2) may be <= 0 for some seeds; its log-log slope
        # needs the seed mean resolved above 0 at every size. The stream growth of nGPT, whose residual stream is
        # normalised by construction, is 0 up to rounding: no slope, and the prediction does not apply to it
        return row_verdict(
            p,
            axis,
            name,
            note=f"the seed mean is not resolved above 0 at {axis} = {unresolved} "
            "(95% t interval of the mean): no log-log slope",
            **div,
        )
    note = f"{text}: left out of the fit" if left_out else ""
    if not trained and _with_step0_record(ds, axis, points):
        note = "; ".join(t for t in (note, "step-0 records of diverged points used") if t)
    return slope_verdict(p, axis, name, sizes, values, note=note, **div)


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


# The one renderer (dmft.verdict), under the names the notebooks import from here.
verdict_lines = lines
verdict_dataset = to_dataset

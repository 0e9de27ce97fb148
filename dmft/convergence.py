"""How fast trained models approach their size -> oo limit along N, H or L (pure numpy / xarray).

A sweep dataset (`dmft-probe sweep`, `probes.experiment.dataset.load`) holds a quantity Q_s(n) per size n on the swept axis
and seed s (plus `step` and the quantity's own entries: kernel entries, probe outputs, layers, ...). In DMFT a
seed's Q_s(n) has a mean mu(n) = Q_oo + c n^-1 + ... and fluctuations of variance v(n) about it, so the theory
predicts two things with two exponents, and they are estimated separately (docs/predictions.md, "The verdict
rule"; the per-size estimates are `dmft.estimators`'):

- **Seed-to-seed variance** (`seed_variance_rate`): the unbiased variance over seeds per size, averaged over
  entries, fitted against n. No limit estimate is involved: the cleanest test of "the network becomes
  deterministic as the size grows" (1/H along H; 1/N along N at alpha_A = 1; flat along N at alpha_A = 1/2).
- **Bias** (`bias_rate`): the squared distance of the seed mean from the limit, ||mu(n) - Q_oo||^2 ~ n^-2q for a
  bias c n^-q (q = 1 in DMFT: exponent -2). It is estimated without a limit estimate, from the differences of the
  seed means of adjacent sizes per unit log size, noise-corrected (`dmft.estimators.bias_pairs`): for sizes in a
  geometric progression they are exactly proportional to the bias at the pair's geometric mean. (The distance of
  the seed mean from the largest size's, the old estimator, is c^2 (1/n - 1/n_max)^2: steeper than -2 near n_max,
  e.g. -2.8 over L = 1..8 for an exact 1/L bias.)
- **Plateau** (`plateau_test`): "no convergence" as a tested statement. The seed variance is fitted as
  v(n) = v_inf + c n^-p with p fixed (1 by default: the rate of the alternative "converges"; 4 noisy sizes
  cannot carry a free p), reported as v_inf / v(n_min) with an interval. Near 1: the variance does not fall
  (alpha_A = 1/2 along N); near 0: it falls at least as n^-p. A slower fall (n^-1/2) reads as a partial plateau
  (about 0.3 over 4..32).
- **Distance from the limit** (`convergence_rate`): the mean-square distance over a quantity's entries of each
  seed's Q_s(n) from an estimate of the limit Q_oo, averaged over seeds: bias^2 + variance (noise-corrected),
  fitted as one log-log slope. v(n) ~ 1/n alone gives -1, a bias alone -2: a mixture of the two has no single
  exponent, which is why the bias and the variance are also fitted separately. The limit is estimated
  (`limit_estimate`) from the largest size ("largest") or by Richardson extrapolation over every size
  ("richardson").

Every slope comes with its local slopes between adjacent sizes (point estimates: whether the asymptotic regime is
reached) and the band derived from them (`dmft.fit.band_of`), which the verdict rule uses as the half-width of the
row's hypotheses.

**Seeds are paired across sizes.** Seed s is the same draw at every size (the N = 4 embedding is the first rows of
N = 8's; the shared draws are listed in docs/predictions.md), so one seed's values at two sizes are correlated.
Every estimate here uses the covariance of one seed's values across sizes, and the interval deletes a seed at every
size at once.

**Noise of the limit estimate and its correction.** A limit estimate here is linear in the per-size seed means,
L = sum_k b_k m_k (largest: b = 1 at n_max, 0 elsewhere; Richardson: the least-squares weights of
m(n) = Q_oo + c n^-order), so it carries its own noise. The seed mean of the distances of size n_i is
||m_i - L||^2 + (S-1)/S s_i^2, whose expectation carries Var(m_i - L) on top of the bias. With `corrected=True`
(the default) the fit uses ||m_i - L||^2 - Var^(m_i - L) + s_i^2: an unbiased estimate of
||mu_i - E L||^2 + v_i, with Var^(m_i - L) = sum_jk w_j w_k C_jk S_jk / (S_j S_k) (w = e_i - b; C_jk the
covariance of one seed's values at sizes j and k over the S_jk seeds present at both, mean over entries). The
uncorrected seed-mean distance and what the correction subtracts are both kept (`mean_distance`, `floor`), and
`corrected=False` fits the raw distances.

- "largest": the largest size itself is not fitted (its distance from its own seed mean has no bias term). Its
  remaining bias is that mu(n) - mu(n_max) stands for mu(n) - Q_oo: with a 1/n bias the bias term is
  c^2 (1/n - 1/n_max)^2, steeper than -2 near n_max when the bias dominates the variance.
- "richardson": every size is fitted. It removes the O(n^-order) bias when the model holds exactly, at a noise
  cost: the weights b sum to 1 and are negative at the smallest sizes; for sizes 8..128 (doubling) they are
  (-0.21, 0.13, 0.29, 0.38, 0.42). A higher-order term biases the extrapolation, which no correction removes.
  Where the two methods agree (`agreement`) neither of these dominates.

**Confidence intervals.** The interval of every slope and of the plateau ratio is the jackknife over seeds: each
seed is left out at every size at once, everything is recomputed without it (seed means, covariances, the limit,
its noise correction, the per-size estimates and the slope), and the interval is estimate +- t SE with
SE^2 = (S-1)/S sum_s (slope_(s) - mean)^2 and t the (1 + level)/2 quantile of Student's t with S - 1 degrees of
freedom. Coverage of the 95% intervals, measured on synthetic sweeps at the cpu preset's geometry (sizes 4..32,
6 seeds, entries and sizes correlated, 4000 sweeps; `python bench/verdict_calibration.py coverage`, and
docs/predictions.md): 0.95-0.97 for the seed variance, the bias once it is resolved above the noise (0.98 when
it barely is: conservative), the distance and the plateau ratio with moderate correlations (rho 0.3 across
entries, 0.5 across sizes); the distance's falls to 0.91-0.93 when the entries are strongly correlated (rho 0.5
and more: the distribution of its slope is skewed). A percentile bootstrap that resamples seeds jointly covers
0.77-0.90 at 6 seeds; resampling each size's seeds independently ignores the pairing. A leave-one-out replicate
whose estimate is <= 0 at some fitted size (the quantity is not resolved above the noise without that seed) makes
the interval unbounded (-inf, +inf): `boot_unresolved` is their fraction. An estimate (not a replicate) with a
value <= 0 is not fitted: NaN slope and a reason. `n_boot` and `seed` are kept for old callers (n_boot = 0
skips the interval).

**What is left out.** Diverged points (`status`, `dmft.divergence`) are set to NaN at every step before anything
is computed (a trained quantity of a diverged run is not a sample of the limit; the same rule as
`dmft.check`), and so is any seed that is NaN at some step without a recorded status (an older sweep). A size
with no usable seed (e.g. a variance over heads at H = 1) is left out. Entries that are NaN at some step for a
usable seed (padding) are left out of that step. Steps where the quantity is the same at every size and seed
(e.g. `probe_outputs` = f - f0 = 0 at step 0, or `attn_prob_mean_heads`, which is 1/T identically because each
row of softmax(A) sums to 1) give a NaN slope with a reason instead of an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import xarray as xr

from . import divergence, estimators, fit, measure
from .estimators import richardson_weights
from .fit import SlopeFit

__all__ = [
    "CONVERGENCE_QUANTITIES",
    "METHODS",
    "Agreement",
    "ConvergenceRate",
    "Quantity",
    "BiasRate",
    "PlateauTest",
    "SeedVarianceRate",
    "agreement",
    "bias_rate",
    "convergence_rate",
    "distance",
    "limit_estimate",
    "plateau_test",
    "richardson_weights",
    "seed_variance_rate",
]

METHODS = ("largest", "richardson")


class Quantity(NamedTuple):
    """One row of `CONVERGENCE_QUANTITIES`: the dataset variable, the dims a distance is averaged over (its
    entries), the one of them a user may select (`depth` for kernels, `layer` for head statistics; None when
    there is none) and a description."""

    variable: str
    entry_dims: tuple[str, ...]
    level: str | None
    text: str


CONVERGENCE_QUANTITIES: dict[str, Quantity] = {
    "kernel_pooled": Quantity(
        "kernel_pooled",
        ("depth", "sample", "sample_"),
        "depth",
        "residual-stream kernel pooled over tokens (default: depths >= 1 averaged)",
    ),
    "kernel_last_token": Quantity(
        "kernel_last_token",
        ("depth", "sample", "sample_"),
        "depth",
        "last-token kernel across samples, LM only (default: depths >= 1 averaged)",
    ),
    "kernel_spatial": Quantity(
        "kernel_spatial",
        ("depth", "token", "token_"),
        "depth",
        "token x token kernel of probe sample 0 (default: depths >= 1 averaged)",
    ),
    "heldout_loss": Quantity("heldout_loss", (), None, "held-out loss (distance: the squared deviation)"),
    "probe_outputs": Quantity(
        "probe_outputs", ("sample", "output"), None, "outputs on the probe batch, f(theta_t) - f(theta_0)"
    ),
    "attn_prob_mean_heads": Quantity(
        "attn_prob_mean_heads",
        ("layer",),
        "layer",
        "mean over heads of softmax(A), per layer averaged (1/T identically: softmax "
        "rows sum to 1, so it reads as constant)",
    ),
    "attn_prob_var_heads": Quantity(
        "attn_prob_var_heads", ("layer",), "layer", "variance over heads of softmax(A), per layer averaged"
    ),
    "attn_var_heads": Quantity(
        "attn_var_heads", ("layer",), "layer", "variance over heads of A, per layer averaged (NaN at H = 1)"
    ),
    "attn_mean_heads": Quantity("attn_mean_heads", ("layer",), "layer", "mean over heads of A, per layer averaged"),
}

CONSTANT_EPS = 16  # a quantity whose spread is below this many ulps of its storage dtype reads as constant


# ---- limit estimates and distances (entrywise, xarray) -------------------------------------------------------


def _check_axis(da: xr.DataArray, axis: str) -> None:
    if axis not in da.dims:
        raise ValueError(f"axis {axis!r} is not a dimension of {da.name or 'the data'} (dims {tuple(da.dims)})")
    if "seed" not in da.dims:
        raise ValueError(f"{da.name or 'the data'} has no 'seed' dimension (dims {tuple(da.dims)})")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def limit_estimate(da: xr.DataArray, axis: str, method: str = "largest", order: float = 1.0) -> xr.DataArray:
    """The size -> oo limit of the seed mean of `da` (dims axis, seed, rest...), entrywise; dims: rest, units
    those of `da`. NaN seeds (diverged) are left out of the seed means.

    method "largest": the seed mean at the largest size that has a finite seed mean (per entry).
    method "richardson": Richardson extrapolation generalised to all sizes: per entry, the least-squares fit of
    the seed means m(n) = Q_oo + c n^-order over the sizes where m is finite, returning Q_oo (NaN where fewer
    than 2 sizes are finite). Order 1 by default: in DMFT the leading finite-size correction of a mean is 1/size.
    """
    _check_axis(da, axis)
    _check_method(method)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = da.mean("seed", skipna=True)
    ok = xr.apply_ufunc(np.isfinite, m)  # a DataArray (numpy's stubs say ndarray)
    if method == "largest":
        sizes = m[axis].astype(float)
        last = sizes.where(ok).max(axis)  # per entry: the largest size with a finite mean
        out = m.where(sizes == last).sum(axis, min_count=1)
    else:
        x = (m[axis].astype(float) ** -float(order)).broadcast_like(m).where(ok)
        k = ok.sum(axis)
        with np.errstate(invalid="ignore", divide="ignore"):
            xbar = x.sum(axis) / k
            ybar = m.where(ok).sum(axis) / k
            sxx = ((x - xbar) ** 2).sum(axis)
            sxy = ((x - xbar) * (m - ybar)).sum(axis)
            out = (ybar - sxy / sxx * xbar).where((k >= 2) & (sxx > 0))
    return out.assign_attrs(
        units=da.attrs.get("units", ""),
        method=method,
        order=float(order),
        long_name=f"{axis} -> oo limit ({method}) of {da.name or 'the quantity'}",
    )


def distance(da: xr.DataArray, axis: str, limit: xr.DataArray, entry_dims) -> xr.DataArray:
    """Mean-square distance over `entry_dims` of each seed's `da` (dims axis, seed, ...) from `limit` (entrywise;
    NaN entries are skipped); dims: axis, seed and the dims not averaged (e.g. step). Units: those of `da`
    squared. entry_dims: () for a scalar quantity (the squared deviation)."""
    _check_axis(da, axis)
    entry_dims = tuple(entry_dims)
    missing = [d for d in entry_dims if d not in da.dims]
    if missing:
        raise ValueError(f"entry dims {missing} are not dimensions of {da.name or 'the data'}")
    sq = (da - limit) ** 2
    out = sq.mean(entry_dims, skipna=True) if entry_dims else sq
    units = da.attrs.get("units", "")
    return out.assign_attrs(units=f"({units})^2" if units else "", long_name="mean-square distance from the limit")


# ---- selection of a quantity from a sweep -----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Selected:
    da: xr.DataArray  # (axis, seed, step, entries...), diverged points NaN
    axis: str
    entry_dims: tuple[str, ...]
    selection: str
    units: str
    eps: float  # the storage dtype's machine epsilon
    diverged: int
    diverged_points: str


def _level_arg(q: Quantity, quantity: str, depth, layer):
    if q.level is None:
        if depth is not None or layer is not None:
            raise ValueError(f"{quantity} has no depth or layer to select")
        return None
    other, given = ("layer", layer) if q.level == "depth" else ("depth", depth)
    if given is not None:
        raise ValueError(f"{quantity} is indexed by {q.level}, not {other}: pass {q.level}=...")
    return depth if q.level == "depth" else layer


def _select_level(da: xr.DataArray, q: Quantity, axis: str, which) -> tuple[xr.DataArray, str]:
    """The entries of `da` along the quantity's level dim (depth or layer) that the distance is taken over."""
    dim = q.level
    vals = da[dim].values
    if which is None:
        which = "last" if axis == "L" else ("all_but_0" if dim == "depth" else "all")
    if which == "all":
        return da, f"all {dim}s"
    if which == "all_but_0":
        if len(vals) < 2:
            raise ValueError(f"{da.name} has only depth 0 (the embedding); pass depth=0 to use it")
        return da.sel({dim: vals[vals >= 1]}), "depths >= 1 averaged"
    if which == "last":
        if axis != "L":
            return da.sel({dim: vals.max()}), f"last {dim} ({int(vals.max())})"
        offset = 0 if dim == "depth" else 1  # depth L is the output of block L = layer L - 1
        parts = []
        for v in da[axis].values:
            want = int(v) - offset
            if want not in vals:
                raise ValueError(f"{da.name} has no {dim} {want} for L={int(v)}")
            parts.append(da.sel({axis: [v]}).sel({dim: want}, drop=True))
        return xr.concat(parts, dim=axis), f"last {dim} of each model (the same relative depth)"
    if isinstance(which, (bool, np.bool_)) or not isinstance(which, (int, np.integer)):
        # one error type (ValueError) for every bad input, as everywhere in dmft
        raise ValueError(f"{dim} must be an integer, 'all' or 'last', got {which!r}")
    if int(which) not in vals:
        raise ValueError(f"{da.name} has no {dim} {int(which)} (available: {', '.join(str(int(v)) for v in vals)})")
    return da.sel({dim: int(which)}, drop=True), f"{dim} {int(which)}"


def _select(ds: xr.Dataset, quantity: str, axis: str | None, depth=None, layer=None) -> _Selected:
    if quantity not in CONVERGENCE_QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; known: {', '.join(CONVERGENCE_QUANTITIES)}")
    q = CONVERGENCE_QUANTITIES[quantity]
    ds = measure.with_seed_dim(ds)
    if axis is None:
        axis = measure.sweep_axis(ds)
    if axis not in ("N", "H", "L"):
        raise ValueError(f"axis must be N, H or L, got {axis!r}")
    if axis not in ds.dims:
        raise ValueError(
            f"axis {axis} is not a dimension of this dataset (a sweep along "
            f"{', '.join(a for a in ('N', 'H', 'L') if a in ds.dims) or 'none of N, H, L'})"
        )
    if q.variable not in ds.data_vars:
        task = ds.attrs.get("task")
        if task is None:
            try:
                task = _task(ds)
            except ValueError:
                task = "unknown"
        if quantity == "kernel_last_token":
            raise ValueError(f"kernel_last_token is recorded for the LM task only; this sweep's task is {task!r}")
        raise ValueError(f"the dataset has no {q.variable!r} (task {task!r}); it was not recorded by the runs")
    which = _level_arg(q, quantity, depth, layer)
    da = ds[q.variable]
    if q.level is not None:
        da, selection = _select_level(da, q, axis, which)
    else:
        selection = "all entries" if q.entry_dims else "the scalar"
    entry_dims = tuple(d for d in q.entry_dims if d in da.dims)
    if "step" not in da.dims:
        da = da.expand_dims(step=[0])
    extra = [d for d in da.dims if d not in (axis, "seed", "step", *entry_dims)]
    if extra:
        raise ValueError(f"{q.variable} has dims {extra} besides ({axis}, seed, step, {', '.join(entry_dims)})")
    eps = float(np.finfo(da.dtype).eps) if np.issubdtype(da.dtype, np.floating) else float(np.finfo(float).eps)
    da = da.astype(float)
    da = da.where(np.isfinite(da))  # inf -> NaN
    points = divergence.diverged_points(ds, axis)
    mask = divergence.diverged_mask(ds)
    n_div = 0
    if mask is not None and bool(mask.any()):
        da = da.where(~mask)
        n_div = int(mask.sum())
    da = da.transpose(axis, "seed", "step", *entry_dims)
    units = str(da.attrs.get("units", ds[q.variable].attrs.get("units", "")))
    return _Selected(da, axis, entry_dims, selection, units, eps, n_div, divergence.describe(points, axis))


def _task(ds: xr.Dataset) -> str:
    """The task ('lm', 'vision', ...) of a dmft-probe dataset, from its attrs or its config."""
    from .check import read_run_attrs

    return str(ds.attrs.get("task") or read_run_attrs(ds)["task"])


# ---- the jackknife engine: per-size estimates of the usable points and their leave-one-seed-out replicates ----


@dataclass(frozen=True, eq=False)
class _Prepared:
    sel: _Selected
    sizes: np.ndarray  # usable sizes (n,)
    size_idx: np.ndarray  # their indices into da[axis]
    seed_idx: np.ndarray  # the seeds usable at some usable size (S,), indices into da.seed
    usable: np.ndarray  # (n, S) bool: usable seeds of each usable size
    steps: np.ndarray


def _prepare(sel: _Selected) -> _Prepared:
    x = sel.da.values  # (n, S, T, E...)
    n, S, T = x.shape[:3]
    flat = x.reshape(n, S, T, -1)
    usable = np.isfinite(flat).any(axis=3).all(axis=2)  # a finite entry at every step
    keep = usable.any(axis=1)
    seeds = usable[keep].any(axis=0)
    return _Prepared(
        sel,
        sel.da[sel.axis].values[keep].astype(float),
        np.flatnonzero(keep),
        np.flatnonzero(seeds),
        usable[keep][:, seeds],
        sel.da["step"].values,
    )


@dataclass(frozen=True, eq=False)
class _Step:
    m: estimators.Moments  # J = 1 + S rows: every seed, then each seed left out (at every size)
    constant: bool  # the quantity is the same at every size and seed to within rounding
    tol: float  # per-size estimates at or below this are 0 (units: the quantity's squared)


def _step(p: _Prepared, t: int) -> _Step | None:
    """The moments at step index t over the usable points and the entries finite at all of them (None when no
    entry is). Values <= 1e-12 times the largest mean square (over entries) of a centred point count as 0."""
    x = p.sel.da.values[:, :, t][p.size_idx][:, p.seed_idx]  # (n, S, E...)
    n, S = x.shape[:2]
    x = x.reshape(n, S, -1)
    x = np.where(p.usable[..., None], x, np.nan)
    ent = np.isfinite(x[p.usable]).all(axis=0)
    if not ent.any():
        return None
    x = x[..., ent]
    vals = x[p.usable]
    scale = float(np.max(np.abs(vals)))
    centred = vals - vals.mean(axis=0)
    constant = bool(np.max(np.abs(centred)) <= CONSTANT_EPS * p.sel.eps * scale)
    tol = 1e-12 * max(float(np.max(np.mean(centred**2, axis=1))), np.finfo(float).tiny)
    return _Step(estimators.moments(x, estimators.jackknife_weights(S)), constant, tol)


@dataclass(frozen=True)
class _StepFit:
    slope: float
    intercept: float
    lo: float
    hi: float
    unresolved: float  # fraction of leave-one-seed-out replicates with an estimate <= 0 at some size
    reason: str
    local: tuple = ()  # local slopes between adjacent fitted sizes
    band: float = float("nan")


def _not_fitted(reason: str, pairs: int) -> _StepFit:
    nan = float("nan")
    return _StepFit(nan, nan, nan, nan, nan, reason, (nan,) * pairs, nan)


def _fit(
    sizes: np.ndarray, y: np.ndarray, tol: float, level: float, what: str, axis: str, interval: bool = True
) -> _StepFit:
    """The slope of row 0 of y (1 + S, P) (the estimate) against sizes, its local slopes and band, and the joint
    jackknife interval from rows 1.. (`dmft.fit.fit_rows`).

    Values <= tol count as 0. The estimate with a value <= 0 is not fitted (NaN, with the reason). A replicate
    with one (the estimate is not resolved above the noise without that seed) makes the interval unbounded
    (-inf, +inf): the honest answer when the distance or variance is not resolved above the noise at some size.
    interval=False (n_boot = 0): no interval (NaN)."""
    pairs = len(sizes) - 1
    if not np.all(np.isfinite(y[0])):
        return _not_fitted(f"the {what} is not finite at every fitted size", pairs)
    bad = np.flatnonzero(y[0] <= tol)
    if len(bad):
        where = f"{axis}=" + ", ".join(f"{s:g}" for s in sizes[bad])
        return _not_fitted(f"the {what} is <= 0 at {where} (not resolved above the noise)", pairs)
    yy = np.where(np.isfinite(y) & (y > tol), y, np.nan)
    r = fit.fit_rows(sizes, yy, level)
    lo, hi = (float(r.lo), float(r.hi)) if interval else (float("nan"), float("nan"))
    unresolved = float(np.mean(np.isnan(yy[1:]).any(axis=1))) if y.shape[0] > 1 else 0.0
    return _StepFit(
        float(r.slope), float(r.intercept), lo, hi, unresolved, "", tuple(float(s) for s in r.local), float(r.band)
    )


def _step_index(steps: np.ndarray, step) -> int:
    if step is None:
        return len(steps) - 1
    hits = np.flatnonzero(steps == step)
    if isinstance(step, (bool, np.bool_)) or not len(hits):
        raise ValueError(f"step {step!r} is not a probe step (steps: {', '.join(str(int(s)) for s in steps)})")
    return int(hits[0])


def _check_boot(n_boot: int, level: float) -> None:
    if isinstance(n_boot, (bool, np.bool_)) or not isinstance(n_boot, (int, np.integer)) or n_boot < 0:
        raise ValueError(f"n_boot must be a non-negative integer, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def _sizes_text(sizes) -> str:
    return ", ".join(f"{s:g}" for s in sizes)


def _notes(r) -> str:
    i = int(np.flatnonzero(r.steps == r.step)[0])
    u = float(r.boot_unresolved.values[i])
    notes = [r.reason] if r.reason else []
    if u > 0:
        notes.append(f"{u:.0%}" if u >= 0.005 else "<1%")
        notes[-1] += " of the leave-one-seed-out estimates not resolved above the noise at some size"
    return f" ({'; '.join(notes)})" if notes else ""


# ---- results ------------------------------------------------------------------------------------------------


class _AtStep:
    """The local estimates and the band at the chosen `step` of a row fitted per step (local_by_step,
    band_by_step)."""

    local_by_step: xr.DataArray  # declared by the dataclasses that mix this in
    band_by_step: xr.DataArray
    step: int

    @property
    def local(self) -> tuple[float, ...]:
        """The estimates between adjacent fitted sizes at the chosen step (point estimates)."""
        return tuple(float(s) for s in self.local_by_step.sel(step=self.step).values)

    @property
    def band(self) -> float:
        """The band at the chosen step: `dmft.fit.band_of` the local estimates (`band_source`)."""
        return float(self.band_by_step.sel(step=self.step))


@dataclass(frozen=True, eq=False, kw_only=True)
class _SlopeRow(_AtStep):
    """What every slope result shares: the chosen step's slope, interval and reason, the same over `step`, the
    local slopes and the band, and one line of text (field meanings: `ConvergenceRate`)."""

    quantity: str
    variable: str
    axis: str
    selection: str
    units: str
    step: int
    slope: float
    lo: float
    hi: float
    intercept: float
    reason: str
    steps: np.ndarray
    slope_by_step: xr.DataArray
    lo_by_step: xr.DataArray
    hi_by_step: xr.DataArray
    reasons: tuple[str, ...]
    boot_unresolved: xr.DataArray
    sizes: np.ndarray
    n_seeds: np.ndarray
    level: float
    diverged: int
    diverged_points: str
    local_by_step: xr.DataArray
    band_by_step: xr.DataArray
    band_source: str = fit.BAND_SOURCE

    @property
    def fit(self) -> SlopeFit:
        """The chosen step's fit as a `dmft.fit.SlopeFit` (NaN fields where it was not fitted)."""
        sizes = getattr(self, "fit_sizes", self.sizes)
        return SlopeFit(
            self.slope,
            self.intercept,
            self.lo,
            self.hi,
            self.level,
            len(sizes),
            int(np.min(self.n_seeds)),
            self.local,
            self.band,
            self.band_source,
        )

    def _line(self, head: str) -> str:
        if np.isnan(self.slope):
            return head + f"not fitted ({self.reason})"
        return (
            head
            + f"slope {self.slope:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}], band {self.band:.2g}, local "
            + ", ".join(f"{s:+.2f}" for s in self.local)
            + _notes(self)
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class ConvergenceRate(_SlopeRow):
    """The log-log slope against size of the mean-square distance of a trained quantity from its size -> oo
    limit (module docstring), at every probe step and at the chosen one.

    slope, lo, hi, intercept: at the chosen `step` (floats; lo, hi: the joint jackknife interval at `level`;
    intercept: log of the distance at size 1, in log of the quantity's units squared); NaN with `reason` when
    the step cannot be fitted. slope_by_step, lo_by_step, hi_by_step: the same over `step` (DataArrays);
    reasons: per step, '' where fitted; boot_unresolved: per step, the fraction of leave-one-seed-out
    replicates with a corrected distance <= 0 at some fitted size (the interval is then unbounded).
    local_by_step (step, pair), band_by_step: the local slopes between adjacent fitted sizes and the band
    (`band_source`). sizes: the usable sizes; fit_sizes: those fitted ("largest": all but the largest);
    n_seeds: usable seeds per usable size. distance (axis, seed, step): each seed's mean-square distance over the
    entries from the point limit estimate, uncorrected; mean_distance (axis, step): its seed mean; floor (axis,
    step): what the correction subtracts (0 with corrected=False); fitted_distance = mean_distance - floor at
    the fitted sizes (NaN elsewhere): what the slope is fitted to, bias^2 + variance. All distances are in
    `units` (the quantity's squared). limit: the limit estimate (step, entries...), in the quantity's units.
    diverged: (size, seed) points left out as diverged (named in diverged_points)."""

    method: str
    order: float
    corrected: bool
    fit_sizes: np.ndarray
    distance: xr.DataArray
    mean_distance: xr.DataArray
    floor: xr.DataArray
    limit: xr.DataArray
    n_boot: int

    @property
    def fitted_distance(self) -> xr.DataArray:
        """mean_distance - floor at the fitted sizes, NaN at the others (units: the quantity's squared)."""
        fitted = np.isin(self.mean_distance[self.axis].values, self.fit_sizes)
        return (self.mean_distance - self.floor).where(xr.DataArray(fitted, dims=self.axis))

    def text(self) -> str:
        """One line: the slope, interval, band and local slopes at the chosen step, or why it is not fitted."""
        return self._line(
            f"{self.quantity} ({self.selection}) along {self.axis}, {self.method}"
            f"{'' if self.corrected else ' uncorrected'}, step {self.step}: "
        )


@dataclass(frozen=True, eq=False, kw_only=True)
class SeedVarianceRate(_SlopeRow):
    """The log-log slope against size of the seed-to-seed variance of a trained quantity (module docstring).

    slope, lo, hi, intercept, reason: at the chosen `step`; slope_by_step, lo_by_step, hi_by_step, reasons,
    boot_unresolved, local_by_step, band_by_step: over `step` (as `ConvergenceRate`). variance (axis, step): the
    unbiased variance over seeds (ddof = 1) per entry, averaged over the entries, in `units` (the quantity's
    squared); sizes: those fitted (>= 2 usable seeds); n_seeds: their usable seeds. The interval is the joint
    jackknife over seeds."""

    variance: xr.DataArray
    n_boot: int

    def text(self) -> str:
        return self._line(f"{self.quantity} seed variance along {self.axis}, step {self.step}: ")


@dataclass(frozen=True, eq=False, kw_only=True)
class BiasRate(_SlopeRow):
    """The log-log slope of the squared bias of the seed mean (module docstring, "Bias"), estimated from the
    noise-corrected squared differences of the seed means of adjacent sizes per unit log size
    (`dmft.estimators.bias_pairs`), placed at the geometric mean of each pair (`sizes`). For a bias c n^-q the
    slope is -2q. Fields as `SeedVarianceRate`; bias (pair, step): the estimates, in `units` (the quantity's
    squared); n_seeds: usable seeds per usable size."""

    bias: xr.DataArray

    def text(self) -> str:
        return self._line(f"{self.quantity} squared bias along {self.axis}, step {self.step}: ")


@dataclass(frozen=True, eq=False)
class PlateauTest(_AtStep):
    """The plateau test of the seed variance v(n) (module docstring, "Plateau"): the least-squares fit
    v(n) = v_inf + c n^-order over the sizes, reported as ratio = v_inf / v(n_min) (dimensionless) with its joint
    jackknife interval [lo, hi] at `level`; near 0: the variance falls at least as n^-order; near 1: it does not
    fall. local: the two-point estimates of the ratio from adjacent sizes; band: `dmft.fit.band_of` them (the
    largest distance of a local estimate from the ratio; `band_source`). The same over `step` in *_by_step;
    variance (axis, step) in `units`."""

    quantity: str
    variable: str
    axis: str
    selection: str
    units: str
    order: float
    step: int
    ratio: float
    lo: float
    hi: float
    reason: str
    steps: np.ndarray
    ratio_by_step: xr.DataArray
    lo_by_step: xr.DataArray
    hi_by_step: xr.DataArray
    reasons: tuple[str, ...]
    local_by_step: xr.DataArray
    band_by_step: xr.DataArray
    sizes: np.ndarray
    n_seeds: np.ndarray
    variance: xr.DataArray
    level: float
    diverged: int
    diverged_points: str
    band_source: str = fit.BAND_SOURCE

    def text(self) -> str:
        head = f"{self.quantity} seed variance plateau along {self.axis} (n^-{self.order:g} fit), step {self.step}: "
        if np.isnan(self.ratio):
            return head + f"not fitted ({self.reason})"
        return (
            head + f"v_inf / v({self.sizes[0]:g}) = {self.ratio:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}], band "
            f"{self.band:.2g}, local " + ", ".join(f"{s:+.2f}" for s in self.local)
        )


# ---- the rates ------------------------------------------------------------------------------------------------


def _by_step(values, steps, name: str) -> xr.DataArray:
    return xr.DataArray(np.asarray(values, dtype=float), dims="step", coords={"step": steps}, name=name)


def _local_by_step(fits: list, steps) -> xr.DataArray:
    return xr.DataArray(
        np.array([f.local for f in fits], dtype=float),
        dims=("step", "pair"),
        coords={"step": steps},
        name="local_slope",
    )


def _row_fields(quantity: str, sel, units: str, fits: list, steps, it: int, sizes, n_seeds, level: float) -> dict:
    """The `_SlopeRow` fields, as keywords, of a row fitted per step (`fits`, one `_StepFit` a step) and reported
    at step index `it`: its names, the chosen step's fit, every step's, and the sizes and seeds it used."""
    f = fits[it]
    return dict(
        quantity=quantity,
        variable=CONVERGENCE_QUANTITIES[quantity].variable,
        axis=sel.axis,
        selection=sel.selection,
        units=units,
        step=int(steps[it]),
        slope=f.slope,
        lo=f.lo,
        hi=f.hi,
        intercept=f.intercept,
        reason=f.reason,
        steps=steps,
        slope_by_step=_by_step([x.slope for x in fits], steps, "slope"),
        lo_by_step=_by_step([x.lo for x in fits], steps, "lo"),
        hi_by_step=_by_step([x.hi for x in fits], steps, "hi"),
        reasons=tuple(x.reason for x in fits),
        boot_unresolved=_by_step([x.unresolved for x in fits], steps, "boot_unresolved"),
        sizes=sizes,
        n_seeds=n_seeds,
        level=float(level),
        diverged=sel.diverged,
        diverged_points=sel.diverged_points,
        local_by_step=_local_by_step(fits, steps),
        band_by_step=_by_step([x.band for x in fits], steps, "band"),
    )


def _per_size(values, p: _Prepared, name: str, units: str, sizes=None, dim: str | None = None) -> xr.DataArray:
    """(n_steps, n_sizes) -> DataArray (axis, step) over usable sizes (or `sizes` along `dim`)."""
    dim = dim or p.sel.axis
    sizes = p.sizes if sizes is None else sizes
    return xr.DataArray(
        np.asarray(values, dtype=float).T,
        dims=(dim, "step"),
        coords={dim: sizes, "step": p.steps},
        name=name,
        attrs={"units": units},
    )


def _constant(what: str) -> str:
    return f"the quantity is the same at every size and seed (to rounding) at this step: {what}"


def convergence_rate(
    ds: xr.Dataset,
    quantity: str,
    axis: str | None = None,
    method: str = "largest",
    step: int | None = None,
    *,
    depth=None,
    layer=None,
    order: float = 1.0,
    corrected: bool = True,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> ConvergenceRate:
    """The rate at which `quantity` approaches its size -> oo limit along `axis` (module docstring).

    ds: a sweep dataset; quantity: a key of `CONVERGENCE_QUANTITIES`; axis: N, H or L (None: the swept one);
    method: "largest" or "richardson" (`limit_estimate`); step: the probe step reported in slope/lo/hi (None:
    the last; every step is fitted anyway). depth (kernels) / layer (head statistics): which entries, an integer,
    "all" or "last"; default: depths >= 1 (the blocks; depth 0 is the embedding) or all layers, averaged in the
    mean square, and along L the last depth / layer of each model (the same relative depth: depth l means
    different things at different L). order: the exponent of the Richardson correction (1: DMFT's 1/size).
    corrected: subtract the noise of the limit estimate (module docstring; False: fit the raw seed-mean
    distances). n_boot: 0 skips the interval (any other value: the joint jackknife; kept for old callers);
    level: of the interval; seed: unused (kept for old callers). Units of the distances: the quantity's squared.

    ValueError (one line) for an unknown quantity or method, an axis that is not a dimension, a variable the
    dataset lacks (kernel_last_token: naming the task), a bad depth/layer/step, or fewer than 3 fitted sizes
    ("largest" fits the sizes below the largest, so it needs 4 usable sizes)."""
    del seed
    _check_method(method)
    _check_boot(n_boot, level)
    if not np.isfinite(order) or order <= 0:
        raise ValueError(f"order must be a positive number, got {order!r}")
    sel = _select(ds, quantity, axis, depth, layer)
    axis = sel.axis
    p = _prepare(sel)
    need = 4 if method == "largest" else 3
    if len(p.sizes) < need:
        lost = sorted(set(sel.da[axis].values.astype(float)) - set(p.sizes))
        why = f" ({axis}={_sizes_text(lost)} left out: no usable seed)" if lost else ""
        extra = (
            f"; method 'largest' fits the sizes below the largest, so it needs {need}" if method == "largest" else ""
        )
        raise ValueError(
            f"{quantity} along {axis}: fewer than {need} usable sizes, got {len(p.sizes)} "
            f"({_sizes_text(p.sizes)}){why}{extra}"
        )
    n = len(p.sizes)
    S_k = p.usable.sum(axis=1).astype(float)
    fit_mask = np.arange(n) < n - 1 if method == "largest" else np.ones(n, dtype=bool)
    fit_sizes = p.sizes[fit_mask]
    T = len(p.steps)
    raw = np.full((T, n), np.nan)
    floors = np.zeros((T, n))
    fits = []
    for t in range(T):
        st = _step(p, t)
        if st is None:
            fits.append(_not_fitted("no entry is finite at every usable size and seed", len(fit_sizes) - 1))
            continue
        _, corrected_d = estimators.distance(st.m, p.sizes, method, order)  # (J, n): bias^2 + variance
        v = estimators.seed_variance(st.m)
        b = np.eye(n)[-1] if method == "largest" else richardson_weights(p.sizes, order)
        comb = st.m.mean - np.einsum("k,Jke->Je", b, st.m.mean)[:, None, :]
        c = st.m.count
        raw_d = np.mean(comb**2, axis=-1) + np.nan_to_num((c - 1) / c * v)  # seed mean of the distances
        raw[t], floors[t] = raw_d[0], (raw_d[0] - corrected_d[0]) if corrected else 0.0
        if st.constant:
            fits.append(_not_fitted(_constant("there is no distance to fit"), len(fit_sizes) - 1))
            continue
        y = (corrected_d if corrected else raw_d)[:, fit_mask]
        what = "floor-corrected distance" if corrected else "distance"
        fits.append(_fit(fit_sizes, y, st.tol, level, what, axis, interval=n_boot > 0))
    it = _step_index(p.steps, step)
    # the per-seed distances from the point estimate of the limit, over the usable sizes and seeds and the
    # entries finite for all of them (per step), as in the fit
    da = sel.da.isel({axis: p.size_idx})
    mask = np.zeros((n, da.sizes["seed"]), dtype=bool)
    mask[:, p.seed_idx] = p.usable
    usable = xr.DataArray(mask, dims=(axis, "seed"), coords={axis: da[axis], "seed": da["seed"]})
    da = da.where(usable)
    da = da.where((da.notnull() | ~usable).all((axis, "seed")))
    limit = limit_estimate(da, axis, method, order)
    dist = distance(da, axis, limit, sel.entry_dims)
    units = f"({sel.units})^2" if sel.units else ""
    return ConvergenceRate(
        **_row_fields(quantity, sel, units, fits, p.steps, it, p.sizes, S_k.astype(int), level),
        method=method,
        order=float(order),
        corrected=bool(corrected),
        fit_sizes=fit_sizes,
        distance=dist,
        mean_distance=_per_size(raw, p, "mean_distance", units),
        floor=_per_size(floors, p, "floor", units),
        limit=limit,
        n_boot=int(n_boot),
    )


def _variance_setup(ds, quantity, axis, depth, layer, need: int, what: str):
    """The selection, the prepared points and the mask of sizes with >= 2 usable seeds (at least `need`)."""
    sel = _select(ds, quantity, axis, depth, layer)
    p = _prepare(sel)
    S_k = p.usable.sum(axis=1)
    keep = S_k >= 2
    if keep.sum() < need:
        raise ValueError(
            f"{quantity} along {sel.axis}: {what} needs at least {need} sizes with 2 or more usable "
            f"seeds, got {int(keep.sum())} ({sel.axis}: {_sizes_text(p.sizes)}, seeds "
            f"{', '.join(str(int(s)) for s in S_k)})"
        )
    return sel, p, keep


def _kept(st: _Step, keep: np.ndarray) -> estimators.Moments:
    """The moments restricted to the sizes in `keep`."""
    m = st.m
    return estimators.Moments(
        m.mean[:, keep], m.count[:, keep], m.cov[:, keep][:, :, keep], m.cross[:, keep][:, :, keep]
    )


def seed_variance_rate(
    ds: xr.Dataset,
    quantity: str,
    axis: str | None = None,
    step: int | None = None,
    *,
    depth=None,
    layer=None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> SeedVarianceRate:
    """The rate at which the seed-to-seed variance of `quantity` falls with size along `axis`: the unbiased
    variance over seeds (ddof = 1) of each entry, averaged over entries, per size (sizes with >= 2 usable seeds),
    fitted as a log-log slope; units: the quantity's squared. Meant for `probe_outputs` and `heldout_loss` (any
    key of `CONVERGENCE_QUANTITIES` works). No limit estimate is needed. The interval is the joint jackknife
    (module docstring); a leave-one-seed-out replicate that leaves one seed at some size has no variance there
    and makes the interval unbounded (`boot_unresolved`). Arguments and ValueErrors as `convergence_rate`
    (fewer than 3 sizes with 2 usable seeds)."""
    del seed
    _check_boot(n_boot, level)
    sel, p, keep = _variance_setup(ds, quantity, axis, depth, layer, 3, "a seed variance")
    axis = sel.axis
    T = len(p.steps)
    var = np.full((T, len(p.sizes)), np.nan)
    fits = []
    for t in range(T):
        st = _step(p, t)
        if st is None:
            fits.append(_not_fitted("no entry is finite at every usable size and seed", int(keep.sum()) - 1))
            continue
        v = estimators.seed_variance(st.m)
        var[t] = v[0]
        if st.constant:
            fits.append(_not_fitted(_constant("its seed variance is 0"), int(keep.sum()) - 1))
            continue
        fits.append(_fit(p.sizes[keep], v[:, keep], st.tol, level, "seed variance", axis, interval=n_boot > 0))
    it = _step_index(p.steps, step)
    units = f"({sel.units})^2" if sel.units else ""
    variance = _per_size(var, p, "seed_variance", units).sel({axis: p.sizes[keep]})
    return SeedVarianceRate(
        **_row_fields(
            quantity, sel, units, fits, p.steps, it, p.sizes[keep], p.usable.sum(axis=1)[keep].astype(int), level
        ),
        variance=variance,
        n_boot=int(n_boot),
    )


def bias_rate(
    ds: xr.Dataset,
    quantity: str,
    axis: str | None = None,
    step: int | None = None,
    *,
    depth=None,
    layer=None,
    level: float = 0.95,
) -> BiasRate:
    """The rate at which the bias of the seed mean of `quantity` falls with size along `axis` (module docstring,
    "Bias"): the log-log slope of the noise-corrected squared differences of adjacent seed means per unit log
    size, -2q for a bias c n^-q, with the joint jackknife interval. Needs 4 sizes with 2 or more usable seeds
    (3 pairs). The sizes should be a geometric progression (4, 8, 16, 32): then the slope is exactly the squared
    bias's; otherwise to second order in the steps. Arguments and ValueErrors as `seed_variance_rate`."""
    _check_boot(1, level)
    sel, p, keep = _variance_setup(ds, quantity, axis, depth, layer, 4, "a bias rate")
    axis = sel.axis
    sizes = p.sizes[keep]
    x = np.sqrt(sizes[1:] * sizes[:-1])
    T = len(p.steps)
    est = np.full((T, len(x)), np.nan)
    fits = []
    for t in range(T):
        st = _step(p, t)
        if st is None:
            fits.append(_not_fitted("no entry is finite at every usable size and seed", len(x) - 1))
            continue
        _, b = estimators.bias_pairs(_kept(st, keep), sizes)
        est[t] = b[0]
        if st.constant:
            fits.append(_not_fitted(_constant("its seed mean does not change with size"), len(x) - 1))
            continue
        fits.append(_fit(x, b, st.tol, level, "squared bias", axis))
    it = _step_index(p.steps, step)
    units = f"({sel.units})^2" if sel.units else ""
    return BiasRate(
        **_row_fields(quantity, sel, units, fits, p.steps, it, x, p.usable.sum(axis=1)[keep].astype(int), level),
        bias=_per_size(est, p, "squared_bias", units, x, f"{axis}_pair"),
    )


def plateau_test(
    ds: xr.Dataset,
    quantity: str,
    axis: str | None = None,
    step: int | None = None,
    *,
    depth=None,
    layer=None,
    order: float = 1.0,
    level: float = 0.95,
) -> PlateauTest:
    """The plateau test of the seed variance of `quantity` along `axis` (module docstring, "Plateau"): v_inf /
    v(n_min) from the least-squares fit v(n) = v_inf + c n^-order (order fixed: 1, the rate of the alternative
    "converges"), with the joint jackknife interval, the two-point local estimates and the band. Needs 3 sizes
    with 2 or more usable seeds. Arguments and ValueErrors as `seed_variance_rate`."""
    _check_boot(1, level)
    if not np.isfinite(order) or order <= 0:
        raise ValueError(f"order must be a positive number, got {order!r}")
    sel, p, keep = _variance_setup(ds, quantity, axis, depth, layer, 3, "a plateau test")
    axis = sel.axis
    sizes = p.sizes[keep]
    T = len(p.steps)
    nan = float("nan")
    var = np.full((T, len(sizes)), np.nan)
    rows = []  # (ratio, lo, hi, local, band, reason) per step
    for t in range(T):
        st = _step(p, t)
        if st is None:
            rows.append(
                (nan, nan, nan, (nan,) * (len(sizes) - 1), nan, "no entry is finite at every usable size and seed")
            )
            continue
        v = estimators.seed_variance(_kept(st, keep))
        var[t] = v[0]
        if st.constant or not np.all(v[0] > st.tol):
            rows.append(
                (
                    nan,
                    nan,
                    nan,
                    (nan,) * (len(sizes) - 1),
                    nan,
                    _constant("its seed variance is 0") if st.constant else "the seed variance is 0 at some size",
                )
            )
            continue
        r = estimators.plateau(v, sizes, order)
        r_lo, r_hi = fit.jackknife_interval(r[0], r[1:], level)
        r_local = estimators.plateau_local(v[0], sizes, order)
        band = float(fit.band_of(np.asarray(r[0]), r_local))
        rows.append((float(r[0]), float(r_lo), float(r_hi), tuple(float(s) for s in r_local), band, ""))
    it = _step_index(p.steps, step)
    ratio, lo, hi, _, _, reason = rows[it]
    units = f"({sel.units})^2" if sel.units else ""
    local = xr.DataArray(
        np.array([r[3] for r in rows], dtype=float),
        dims=("step", "pair"),
        coords={"step": p.steps},
        name="local_plateau",
    )
    variance = _per_size(var, p, "seed_variance", units, sizes)
    return PlateauTest(
        quantity,
        CONVERGENCE_QUANTITIES[quantity].variable,
        axis,
        sel.selection,
        units,
        float(order),
        int(p.steps[it]),
        ratio,
        lo,
        hi,
        reason,
        p.steps,
        _by_step([r[0] for r in rows], p.steps, "ratio"),
        _by_step([r[1] for r in rows], p.steps, "lo"),
        _by_step([r[2] for r in rows], p.steps, "hi"),
        tuple(r[5] for r in rows),
        local,
        _by_step([r[4] for r in rows], p.steps, "band"),
        sizes,
        p.usable.sum(axis=1)[keep].astype(int),
        variance,
        float(level),
        sel.diverged,
        sel.diverged_points,
    )


# ---- agreement of two estimates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """Whether two rates agree: `agree` is True when both are fitted and their intervals overlap; `text` says
    so with both slopes. bool(agreement) is `agree`; str(agreement) is `text`."""

    agree: bool
    text: str

    def __bool__(self) -> bool:
        return self.agree

    def __str__(self) -> str:
        return self.text


def _label(r) -> str:
    return getattr(r, "method", "seed variance") + ("" if getattr(r, "corrected", True) else " uncorrected")


def agreement(rate_a, rate_b) -> Agreement:
    """Whether two rates (e.g. `convergence_rate` with method "largest" and "richardson") give consistent slopes
    at their chosen steps: their intervals overlap (an unbounded side, -inf or +inf, counts as such). Not
    comparable (False, saying why) when either is not fitted or has no interval."""
    a, b = rate_a, rate_b
    la, lb = _label(a), _label(b)
    for r, lab in ((a, la), (b, lb)):
        if np.isnan(r.slope):
            return Agreement(False, f"not comparable: {lab} is not fitted ({r.reason})")
        if np.isnan(r.lo) or np.isnan(r.hi):
            return Agreement(False, f"not comparable: {lab} has no slope interval ({r.reason or 'n_boot = 0'})")
    both = f"{la} {a.slope:+.2f} [{a.lo:+.2f}, {a.hi:+.2f}] vs {lb} {b.slope:+.2f} [{b.lo:+.2f}, {b.hi:+.2f}]"
    if a.lo <= b.hi and b.lo <= a.hi:
        return Agreement(True, f"agree: {both} overlap")
    return Agreement(False, f"disagree: {both} do not overlap")

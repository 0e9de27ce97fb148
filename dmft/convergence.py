"""How fast trained models approach their size -> oo limit along N, H or L (pure numpy / xarray).

A sweep dataset (`dmft-probe sweep`, `probes.dataset.load`) holds a quantity Q_s(n) per size n on the swept axis
and seed s (plus `step` and the quantity's own entries: kernel entries, probe outputs, layers, ...). Two rates:

- **Distance from the limit** (`convergence_rate`): the mean-square distance over a quantity's entries of each
  seed's Q_s(n) from an estimate of the limit Q_oo, averaged over seeds, fitted as a log-log slope against n.
  Units: those of the quantity squared. In DMFT, with per-seed fluctuations of variance v(n) and a mean
  mu(n) = Q_oo + c n^-1 + ..., the expected distance is (mu(n) - Q_oo)^2 + v(n): v(n) ~ 1/n gives slope -1
  (the usual case: H^-1 along H), a pure bias gives -2. The limit is estimated (`limit_estimate`) either from
  the largest size ("largest") or by Richardson extrapolation over every size ("richardson").
- **Seed-to-seed variance** (`seed_variance_rate`): the unbiased variance over seeds per size, averaged over
  entries, fitted against n. No limit estimate is involved, so it is the cleanest test of "the network becomes
  deterministic as the size grows" (1/H along H; 1/N along N at alpha_A = 1; flat along N at alpha_A = 1/2,
  where H random attention matrices survive).

**Bias of a noisy limit estimate and its correction.** Any limit estimate here is linear in the per-size seed
means, L = sum_k b_k m_k (largest: b = 1 at n_max, 0 elsewhere; Richardson: the least-squares weights below),
so it carries its own noise. The expected distance of a seed at size n_i from it is

    E D_i = (mu_i - E L)^2 + v_i + Var(L) - 2 Cov(Q_s(n_i), L),
    Var(L) = sum_k b_k^2 v_k / S_k,   Cov(Q_s(n_i), L) = b_i v_i / S_i      (S_k: usable seeds at size k)

The floor Var(L) is the same at every size and flattens the fitted slope (most at the largest sizes, whose
distances are smallest). With `corrected=True` (the default) the fit uses D_i - F_i, with F_i the same
expression with v_k replaced by the unbiased seed variance at size k (ddof = 1, mean over entries): an unbiased
estimate of (mu_i - E L)^2 + v_i. The uncorrected seed-mean distance and the subtracted floor are both kept in
the result (`mean_distance`, `floor`), and `corrected=False` fits the raw distances.

- "largest": F_i = s^2(n_max) / S_max at every size below n_max, i.e. the limit's own variance. The largest size
  itself is not fitted: its distance from its own seed mean is only its within-size spread (its bias term is 0
  by construction). The remaining bias of this method is that mu(n) - mu(n_max) is used for mu(n) - Q_oo: with
  a 1/n bias the bias term is c^2 (1/n - 1/n_max)^2, which steepens the slope near n_max when the bias
  dominates the variance.
- "richardson": a per-entry least-squares fit of the seed means m(n) = Q_oo + c n^-order over all sizes, so
  every size is fitted, including the largest. It removes the O(n^-order) bias when the model holds exactly, at
  a noise cost Var(L) = sum_k b_k^2 v_k/S_k. The weights b sum to 1 and are negative at the smallest sizes; for
  sizes 8..128 (doubling) they are (-0.21, 0.13, 0.29, 0.38, 0.42): with v ~ 1/n the extrapolated limit has 1.6
  times the variance of the largest size's mean (1.8 times for sizes 1..8), with constant v 0.39 times. That
  noise is a floor like the one above (corrected the same way) and also a source of spread in the fitted slope;
  a higher-order term (n^-2, or a 1/n law that has not set in at the small sizes) biases the extrapolation,
  which no correction removes. Where the two methods agree (`agreement`) neither of these dominates.

**Confidence intervals.** The interval of every slope is a seed bootstrap (`n_boot` resamples, percentile
interval at `level`) that resamples the usable seeds of each size independently with replacement and recomputes
everything from the resample: the seed means, the limit estimate, the floor and the distances (for the seed
variance: the variance itself). The resampled values are then recentred on the estimate, per size: in the
resampled world the limit estimate is noisy again, so each resampled distance carries the floor on top of a
distance that already contains it (its mean over resamples exceeds the estimate by about the floor), and a
resampled ddof = 1 variance has mean (S-1)/S times the estimate. Distances are shifted by the difference of the
means (the floor is additive); variances are rescaled by S/(S-1). Without this the interval of a precise
floor-corrected slope can miss its own estimate (measured: -1.000 with [-0.997, -0.980] at 16 seeds and 3072
entries). It does not use `dmft.fit.loglog_fit`, which resamples fixed per-seed values: it would hold the limit
estimate and the floor fixed, and cannot take floor-corrected per-seed values (which may be negative for one
seed while their mean is positive). The point estimate is the same least-squares log-log fit of the seed means
as `loglog_fit`'s. A resample whose (recentred) distance or variance is <= 0 at some fitted size has log -oo
there, and its slope is the limit of the fit: -oo when that happens at sizes above the mean log size (the
distance is not resolved above the noise at the large sizes), +oo below it. Their fraction is `boot_unresolved`;
when it exceeds (1 - level)/2 the interval is unbounded on that side (lo = -inf, say), which is the honest
statement with few seeds: "at least this steep". Resamples with such values on both sides are indeterminate
(left out; the interval is NaN with a reason when more than (1 - level)/2 are). An estimate (not a resample)
with a value <= 0 is not fitted: NaN slope and a reason.

Calibration, measured on synthetic sweeps (5 sizes 8..128, noise variance 1/n, independent sweeps): with 24
seeds and 40 entries (c = 0.3, 40 sweeps) the intervals held the true exponent in 95% ("largest"), 97%
("richardson") and 95% (seed variance) of the sweeps, with half-widths 1.4, 1.05 and 1.1 times 1.96 sd of the
slope over sweeps; with 16 seeds and 576 entries (c = 0, 30 sweeps) in 100% of them, half-widths 1.3 and 1.5
times. So the distance intervals are honest to conservative (the resampled limit moves every distance together).
With 6 seeds the seed-variance interval is conservative (half-width 1.7 times; resampling fixed per-seed squared
deviations instead gives 0.8 times and too-narrow intervals); with 3-4 seeds some resamples draw one seed only
at some size and the interval is unbounded or not resolved. Expect finite, useful intervals from about 6 seeds
per size.

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

from . import divergence, measure
from .fit import SlopeFit

__all__ = [
    "CONVERGENCE_QUANTITIES",
    "METHODS",
    "Agreement",
    "ConvergenceRate",
    "Quantity",
    "SeedVarianceRate",
    "agreement",
    "convergence_rate",
    "distance",
    "limit_estimate",
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
    "kernel_pooled": Quantity("kernel_pooled", ("depth", "sample", "sample_"), "depth",
                              "residual-stream kernel pooled over tokens (default: depths >= 1 averaged)"),
    "kernel_last_token": Quantity("kernel_last_token", ("depth", "sample", "sample_"), "depth",
                                  "last-token kernel across samples, LM only (default: depths >= 1 averaged)"),
    "kernel_spatial": Quantity("kernel_spatial", ("depth", "token", "token_"), "depth",
                               "token x token kernel of probe sample 0 (default: depths >= 1 averaged)"),
    "heldout_loss": Quantity("heldout_loss", (), None, "held-out loss (distance: the squared deviation)"),
    "probe_outputs": Quantity("probe_outputs", ("sample", "output"), None,
                              "outputs on the probe batch, f(theta_t) - f(theta_0)"),
    "attn_prob_mean_heads": Quantity("attn_prob_mean_heads", ("layer",), "layer",
                                     "mean over heads of softmax(A), per layer averaged (1/T identically: softmax "
                                     "rows sum to 1, so it reads as constant)"),
    "attn_prob_var_heads": Quantity("attn_prob_var_heads", ("layer",), "layer",
                                    "variance over heads of softmax(A), per layer averaged"),
    "attn_var_heads": Quantity("attn_var_heads", ("layer",), "layer",
                               "variance over heads of A, per layer averaged (NaN at H = 1)"),
    "attn_mean_heads": Quantity("attn_mean_heads", ("layer",), "layer",
                                "mean over heads of A, per layer averaged"),
}

CONSTANT_EPS = 16       # a quantity whose spread is below this many ulps of its storage dtype reads as constant


# ---- limit estimates and distances (entrywise, xarray) -------------------------------------------------------


def _check_axis(da: xr.DataArray, axis: str) -> None:
    if axis not in da.dims:
        raise ValueError(f"axis {axis!r} is not a dimension of {da.name or 'the data'} (dims {tuple(da.dims)})")
    if "seed" not in da.dims:
        raise ValueError(f"{da.name or 'the data'} has no 'seed' dimension (dims {tuple(da.dims)})")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def richardson_weights(sizes, order: float = 1.0) -> np.ndarray:
    """The weights b_k with Q_oo = sum_k b_k m_k of the least-squares fit m(n) = Q_oo + c n^-order over `sizes`
    (they sum to 1; dimensionless). ValueError with fewer than 2 distinct sizes."""
    x = np.asarray(sizes, dtype=float) ** -float(order)
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"Richardson extrapolation needs at least 2 distinct sizes, got {list(sizes)}")
    xc = x - x.mean()
    return 1.0 / len(x) - x.mean() * xc / np.sum(xc ** 2)


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
    ok = np.isfinite(m)
    if method == "largest":
        sizes = m[axis].astype(float)
        last = sizes.where(ok).max(axis)                       # per entry: the largest size with a finite mean
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
    return out.assign_attrs(units=da.attrs.get("units", ""), method=method, order=float(order),
                            long_name=f"{axis} -> oo limit ({method}) of {da.name or 'the quantity'}")


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
    da: xr.DataArray            # (axis, seed, step, entries...), diverged points NaN
    axis: str
    entry_dims: tuple[str, ...]
    selection: str
    units: str
    eps: float                  # the storage dtype's machine epsilon
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
        offset = 0 if dim == "depth" else 1          # depth L is the output of block L = layer L - 1
        parts = []
        for v in da[axis].values:
            want = int(v) - offset
            if want not in vals:
                raise ValueError(f"{da.name} has no {dim} {want} for L={int(v)}")
            parts.append(da.sel({axis: [v]}).sel({dim: want}, drop=True))
        return xr.concat(parts, dim=axis), f"last {dim} of each model (the same relative depth)"
    if isinstance(which, (bool, np.bool_)) or not isinstance(which, (int, np.integer)):
        # one error type (ValueError) for every bad input, as everywhere in dmft
        raise ValueError(f"{dim} must be an integer, 'all' or 'last', got {which!r}")  # noqa: TRY004
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
        raise ValueError(f"axis {axis} is not a dimension of this dataset (a sweep along "
                         f"{', '.join(a for a in ('N', 'H', 'L') if a in ds.dims) or 'none of N, H, L'})")
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
    da = da.where(np.isfinite(da))                                   # inf -> NaN
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
    from .check import run_attrs

    return str(ds.attrs.get("task") or run_attrs(ds)["task"])


# ---- the bootstrap engine: seed means, variances and distances from Gram matrices ---------------------------


@dataclass(frozen=True, eq=False)
class _Prepared:
    sel: _Selected
    sizes: np.ndarray           # usable sizes (n,)
    size_idx: np.ndarray        # their indices into da[axis]
    usable: np.ndarray          # (n, S) bool: usable seeds of each usable size
    counts: list                # per usable size: (n_boot + 1, S_i) resample counts; row 0 = each seed once
    steps: np.ndarray


def _prepare(sel: _Selected, n_boot: int, seed: int) -> _Prepared:
    da = sel.da
    x = da.values                                                   # (n, S, T, E...)
    n, S, T = x.shape[:3]
    flat = x.reshape(n, S, T, -1)
    usable = np.isfinite(flat).any(axis=3).all(axis=2)              # a finite entry at every step
    keep = usable.any(axis=1)
    rng = np.random.default_rng(seed)
    counts = []
    for i in np.flatnonzero(keep):
        s_i = int(usable[i].sum())
        c = rng.multinomial(s_i, np.full(s_i, 1.0 / s_i), size=n_boot) if n_boot else np.empty((0, s_i))
        counts.append(np.vstack([np.ones((1, s_i)), c]).astype(float))
    return _Prepared(sel, da[sel.axis].values[keep].astype(float), np.flatnonzero(keep), usable[keep], counts,
                     da["step"].values)


def _step_moments(p: _Prepared, t: int):
    """Seed-mean inner products at step index t for the point estimate (row 0) and every resample.

    Returns (MM, diag, s2, constant, n_entries): MM (B+1, n, n) the mean over entries of m_i . m_k (seed means of
    resampled seeds), diag (B+1, n) the resampled mean over seeds of the mean over entries of Q^2, s2 (B+1, n)
    the unbiased seed variance (mean over entries) of each resample (NaN with one seed), constant: the quantity
    is the same at every size and seed to within rounding. Values are centred on their overall mean first (the
    distances and variances do not change), which keeps the Gram differences accurate."""
    x = p.sel.da.values[:, :, t][p.size_idx]                         # (n, S, E...)
    n = len(p.sizes)
    rows = x.reshape(n, x.shape[1], -1)
    vecs = [rows[i][p.usable[i]] for i in range(n)]
    allv = np.concatenate(vecs)
    ent = np.isfinite(allv).all(axis=0)
    if not ent.any():
        return None
    scale = np.max(np.abs(allv[:, ent]))
    allv = allv[:, ent] - allv[:, ent].mean(axis=0)
    constant = bool(np.max(np.abs(allv)) <= CONSTANT_EPS * p.sel.eps * scale)
    G = allv @ allv.T / ent.sum()
    g = np.diag(G)
    offs = np.cumsum([0] + [len(v) for v in vecs])
    blocks = [slice(offs[i], offs[i + 1]) for i in range(n)]
    U = [c / c.shape[1] for c in p.counts]
    B1 = U[0].shape[0]
    MM = np.empty((B1, n, n))
    diag = np.empty((B1, n))
    for i in range(n):
        T = U[i] @ G[blocks[i], :]
        diag[:, i] = U[i] @ g[blocks[i]]
        for k in range(n):
            MM[:, i, k] = np.einsum("bj,bj->b", T[:, blocks[k]], U[k])
    S = np.array([c.shape[1] for c in p.counts], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        s2 = (diag - np.einsum("bii->bi", MM)) * np.where(S > 1, S / (S - 1), np.nan)
    return MM, diag, s2, constant, int(ent.sum())


def _loglog_rows(sizes: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of log(y) against log(sizes), per row of y.

    A value y <= 0 has log -oo; the slope takes its limit: -oo when such values sit above the mean log size
    only, +oo below it only, unaffected at the mean log size itself (weight 0), NaN when both sides have one
    (indeterminate)."""
    lx = np.log(sizes)
    w = (lx - lx.mean()) / np.sum((lx - lx.mean()) ** 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        ly = np.where(y > 0, np.log(np.where(y > 0, y, 1.0)), -np.inf)
        slope = np.where(w == 0, 0.0, w * ly).sum(axis=1)
        intercept = ly.mean(axis=1) - slope * lx.mean()
    return slope, intercept


@dataclass(frozen=True)
class _StepFit:
    slope: float
    intercept: float
    lo: float
    hi: float
    unresolved: float           # fraction of resamples with a value <= 0 at some fitted size (slope +-oo or NaN)
    reason: str


def _fit_rows(sizes: np.ndarray, y: np.ndarray, tol: float, level: float, what: str, axis: str,
              hint: str = "more seeds") -> _StepFit:
    """Slope of row 0 (the estimate) and the percentile interval over rows 1.. (the resamples) of log y.

    Values <= tol count as 0. The estimate with a value <= 0 is not fitted (NaN, with the reason). A resample
    with one has an infinite slope (`_loglog_rows`), so the interval becomes unbounded on that side when more
    than (1 - level)/2 of the resamples have one: the honest answer when the distance is not resolved above the
    noise at the largest sizes. Indeterminate resamples (NaN) are left out; when more than (1 - level)/2 are,
    the interval is NaN with the reason."""
    nan = float("nan")
    if not np.all(np.isfinite(y[0])):
        return _StepFit(nan, nan, nan, nan, nan, f"the {what} is not finite at every fitted size")
    bad = np.flatnonzero(y[0] <= tol)
    if len(bad):
        where = f"{axis}=" + ", ".join(f"{s:g}" for s in sizes[bad])
        return _StepFit(nan, nan, nan, nan, nan, f"the {what} is <= 0 at {where} (not resolved above the noise)")
    slope, intercept = _loglog_rows(sizes, y[:1])
    if y.shape[0] == 1:
        return _StepFit(float(slope[0]), float(intercept[0]), nan, nan, 0.0, "")
    boots = np.where(np.isfinite(y[1:]) & (y[1:] > tol), y[1:], 0.0)
    unresolved = float(np.mean(np.any(boots <= 0, axis=1)))
    bs = _loglog_rows(sizes, boots)[0]
    a = (1 - level) / 2
    ok = ~np.isnan(bs)
    if 1 - ok.mean() > a:
        return _StepFit(float(slope[0]), float(intercept[0]), nan, nan, unresolved,
                        f"{1 - ok.mean():.0%} of the resamples have a {what} <= 0 at both small and large sizes: "
                        f"the interval is not resolved ({hint})")
    bs = bs[ok]
    if np.all(np.isfinite(bs)):
        lo, hi = np.quantile(bs, [a, 1 - a])
    else:       # no interpolation next to an infinite slope (it would give inf - inf); the wider order statistics
        lo, hi = np.quantile(bs, a, method="lower"), np.quantile(bs, 1 - a, method="higher")
    return _StepFit(float(slope[0]), float(intercept[0]), float(lo), float(hi), unresolved, "")


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
        notes[-1] += " of the resamples not resolved above the noise at some size"
    return f" ({'; '.join(notes)})" if notes else ""


# ---- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ConvergenceRate:
    """The log-log slope against size of the mean-square distance of a trained quantity from its size -> oo
    limit (module docstring), at every probe step and at the chosen one.

    slope, lo, hi, intercept: at the chosen `step` (floats; lo, hi: the seed-bootstrap percentile interval at
    `level`; intercept: log of the distance at size 1, in log of the quantity's units squared); NaN with
    `reason` when the step cannot be fitted. slope_by_step, lo_by_step, hi_by_step: the same over `step`
    (DataArrays); reasons: per step, '' where fitted; boot_unresolved: per step, the fraction of resamples with a
    corrected distance <= 0 at some fitted size (their slope is -oo or +oo: module docstring).
    sizes: the usable sizes; fit_sizes: those fitted ("largest": all but the largest); n_seeds: usable seeds per
    usable size. distance (axis, seed, step): each seed's mean-square distance over the entries from the point
    limit estimate, uncorrected; mean_distance (axis, step): its seed mean; floor (axis, step): what the
    correction subtracts (0 with corrected=False); fitted_distance = mean_distance - floor at the fitted sizes
    (NaN elsewhere): what the slope is fitted to. All distances are in `units` (the quantity's squared).
    limit: the limit estimate (step, entries...), in the quantity's units. diverged: (size, seed) points left
    out as diverged (named in diverged_points)."""

    quantity: str
    variable: str
    axis: str
    method: str
    order: float
    corrected: bool
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
    fit_sizes: np.ndarray
    n_seeds: np.ndarray
    distance: xr.DataArray
    mean_distance: xr.DataArray
    floor: xr.DataArray
    limit: xr.DataArray
    level: float
    n_boot: int
    diverged: int
    diverged_points: str

    @property
    def fitted_distance(self) -> xr.DataArray:
        """mean_distance - floor at the fitted sizes, NaN at the others (units: the quantity's squared)."""
        fitted = np.isin(self.mean_distance[self.axis].values, self.fit_sizes)
        return (self.mean_distance - self.floor).where(xr.DataArray(fitted, dims=self.axis))

    @property
    def fit(self) -> SlopeFit:
        """The chosen step's fit as a `dmft.fit.SlopeFit` (NaN fields where it was not fitted)."""
        return SlopeFit(self.slope, self.intercept, self.lo, self.hi, self.level, len(self.fit_sizes),
                        int(self.n_seeds.min()))

    def text(self) -> str:
        """One line: the slope and interval at the chosen step, or the reason it is not fitted."""
        head = (f"{self.quantity} ({self.selection}) along {self.axis}, {self.method}"
                f"{'' if self.corrected else ' uncorrected'}, step {self.step}: ")
        if np.isnan(self.slope):
            return head + f"not fitted ({self.reason})"
        return head + f"slope {self.slope:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]" + _notes(self)


@dataclass(frozen=True, eq=False)
class SeedVarianceRate:
    """The log-log slope against size of the seed-to-seed variance of a trained quantity (module docstring).

    slope, lo, hi, intercept, reason: at the chosen `step`; slope_by_step, lo_by_step, hi_by_step, reasons,
    boot_unresolved: over `step`. variance (axis, step): the unbiased variance over seeds (ddof = 1) per entry,
    averaged over the entries, in `units` (the quantity's squared); sizes: those fitted (>= 2 usable seeds);
    n_seeds: their usable seeds. The interval resamples seeds and recomputes the variance."""

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
    variance: xr.DataArray
    level: float
    n_boot: int
    diverged: int
    diverged_points: str

    @property
    def fit(self) -> SlopeFit:
        return SlopeFit(self.slope, self.intercept, self.lo, self.hi, self.level, len(self.sizes),
                        int(self.n_seeds.min()))

    def text(self) -> str:
        head = f"{self.quantity} seed variance along {self.axis}, step {self.step}: "
        if np.isnan(self.slope):
            return head + f"not fitted ({self.reason})"
        return head + f"slope {self.slope:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]" + _notes(self)


# ---- the rates ------------------------------------------------------------------------------------------------


def _by_step(values, steps, name: str) -> xr.DataArray:
    return xr.DataArray(np.asarray(values, dtype=float), dims="step", coords={"step": steps}, name=name)


def _per_size(values, p: _Prepared, name: str, units: str) -> xr.DataArray:
    """(n_steps, n_usable) -> DataArray (axis, step) over usable sizes."""
    return xr.DataArray(np.asarray(values, dtype=float).T, dims=(p.sel.axis, "step"),
                        coords={p.sel.axis: p.sizes, "step": p.steps}, name=name, attrs={"units": units})


def convergence_rate(ds: xr.Dataset, quantity: str, axis: str | None = None, method: str = "largest",
                     step: int | None = None, *, depth=None, layer=None, order: float = 1.0, corrected: bool = True,
                     n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> ConvergenceRate:
    """The rate at which `quantity` approaches its size -> oo limit along `axis` (module docstring).

    ds: a sweep dataset; quantity: a key of `CONVERGENCE_QUANTITIES`; axis: N, H or L (None: the swept one);
    method: "largest" or "richardson" (`limit_estimate`); step: the probe step reported in slope/lo/hi (None:
    the last; every step is fitted anyway). depth (kernels) / layer (head statistics): which entries, an integer,
    "all" or "last"; default: depths >= 1 (the blocks; depth 0 is the embedding) or all layers, averaged in the
    mean square, and along L the last depth / layer of each model (the same relative depth: depth l means
    different things at different L). order: the exponent of the Richardson correction (1: DMFT's 1/size).
    corrected: subtract the noise floor of the limit estimate (module docstring; False: fit the raw seed-mean
    distances). n_boot, level, seed: the seed bootstrap. Units of the distances: the quantity's squared.

    ValueError (one line) for an unknown quantity or method, an axis that is not a dimension, a variable the
    dataset lacks (kernel_last_token: naming the task), a bad depth/layer/step, or fewer than 3 fitted sizes
    ("largest" fits the sizes below the largest, so it needs 4 usable sizes)."""
    _check_method(method)
    _check_boot(n_boot, level)
    if not np.isfinite(order) or order <= 0:
        raise ValueError(f"order must be a positive number, got {order!r}")
    sel = _select(ds, quantity, axis, depth, layer)
    axis = sel.axis
    p = _prepare(sel, n_boot, seed)
    need = 4 if method == "largest" else 3
    if len(p.sizes) < need:
        lost = sorted(set(sel.da[axis].values.astype(float)) - set(p.sizes))
        why = f" ({axis}={_sizes_text(lost)} left out: no usable seed)" if lost else ""
        extra = (f"; method 'largest' fits the sizes below the largest, so it needs {need}" if method == "largest"
                 else "")
        raise ValueError(f"{quantity} along {axis}: fewer than {need} usable sizes, got {len(p.sizes)} "
                         f"({_sizes_text(p.sizes)}){why}{extra}")
    n = len(p.sizes)
    if method == "largest":
        b = np.zeros(n)
        b[-1] = 1.0
        fit_mask = np.arange(n) < n - 1
    else:
        b = richardson_weights(p.sizes, order)
        fit_mask = np.ones(n, dtype=bool)
    S = p.usable.sum(axis=1).astype(float)
    fit_sizes = p.sizes[fit_mask]
    T = len(p.steps)
    raw = np.full((T, n), np.nan)
    floors = np.zeros((T, n))
    fits = []
    for t in range(T):
        mom = _step_moments(p, t)
        if mom is None:
            fits.append(_StepFit(*[np.nan] * 5, "no entry is finite at every usable size and seed"))
            continue
        MM, diag, s2, constant, _ = mom
        D = diag - 2 * np.einsum("bik,k->bi", MM, b) + np.einsum("bik,i,k->b", MM, b, b)[:, None]
        F = np.zeros_like(D)
        if corrected:
            w = np.where(b != 0, s2 / S, 0.0)          # sizes with b = 0 do not enter the limit (S = 1 allowed)
            F = np.einsum("k,bk->b", b ** 2, w)[:, None] - 2 * b * w
        raw[t], floors[t] = D[0], F[0]
        if constant:
            fits.append(_StepFit(*[np.nan] * 5, "the quantity is the same at every size and seed (to rounding) "
                                                "at this step: there is no distance to fit"))
            continue
        tol = 1e-12 * max(float(np.max(np.abs(diag[0]))), np.finfo(float).tiny)
        what = "floor-corrected distance" if corrected else "distance"
        y = (D - F)[:, fit_mask]
        if y.shape[0] > 1:      # recentre the resamples on the estimate (module docstring, "Confidence intervals")
            y[1:] -= y[1:].mean(axis=0) - y[0]
        fits.append(_fit_rows(fit_sizes, y, tol, level, what, axis,
                              "more seeds, or corrected=False" if corrected else "more seeds"))
    it = _step_index(p.steps, step)
    # the per-seed distances from the point estimate of the limit, over the usable sizes and seeds and the
    # entries finite for all of them (per step), as in the fit
    da = sel.da.isel({axis: p.size_idx})
    usable = xr.DataArray(p.usable, dims=(axis, "seed"), coords={axis: da[axis], "seed": da["seed"]})
    da = da.where(usable)
    da = da.where((da.notnull() | ~usable).all((axis, "seed")))
    limit = limit_estimate(da, axis, method, order)
    dist = distance(da, axis, limit, sel.entry_dims)
    units = f"({sel.units})^2" if sel.units else ""
    f = fits[it]
    return ConvergenceRate(
        quantity, CONVERGENCE_QUANTITIES[quantity].variable, axis, method, float(order), bool(corrected),
        sel.selection, units, int(p.steps[it]), f.slope, f.lo, f.hi, f.intercept, f.reason, p.steps,
        _by_step([x.slope for x in fits], p.steps, "slope"), _by_step([x.lo for x in fits], p.steps, "lo"),
        _by_step([x.hi for x in fits], p.steps, "hi"), tuple(x.reason for x in fits),
        _by_step([x.unresolved for x in fits], p.steps, "boot_unresolved"), p.sizes, fit_sizes, S.astype(int), dist,
        _per_size(raw, p, "mean_distance", units), _per_size(floors, p, "floor", units), limit, float(level),
        int(n_boot), sel.diverged, sel.diverged_points)


def seed_variance_rate(ds: xr.Dataset, quantity: str, axis: str | None = None, step: int | None = None, *,
                       depth=None, layer=None, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> SeedVarianceRate:
    """The rate at which the seed-to-seed variance of `quantity` falls with size along `axis`: the unbiased
    variance over seeds (ddof = 1) of each entry, averaged over entries, per size (sizes with >= 2 usable seeds),
    fitted as a log-log slope; units: the quantity's squared. Meant for `probe_outputs` and `heldout_loss` (any
    key of `CONVERGENCE_QUANTITIES` works). No limit estimate is needed. The interval resamples the seeds of
    each size with replacement and recomputes the variance from the resample (rescaled by S/(S-1), which
    centres the resampled variances on the estimate); a resample that draws one seed only at some size has
    variance 0 there and an infinite slope (`boot_unresolved`; with 3 seeds that is 1 in 9 per size, and 3
    seeds give no usable interval; module docstring for the calibration). Arguments and ValueErrors as
    `convergence_rate` (fewer than 3 sizes with 2 usable seeds)."""
    _check_boot(n_boot, level)
    sel = _select(ds, quantity, axis, depth, layer)
    axis = sel.axis
    p = _prepare(sel, n_boot, seed)
    S = p.usable.sum(axis=1).astype(float)
    keep = S >= 2
    if keep.sum() < 3:
        raise ValueError(f"{quantity} along {axis}: a seed variance needs at least 3 sizes with 2 or more usable "
                         f"seeds, got {int(keep.sum())} ({axis}: {_sizes_text(p.sizes)}, seeds "
                         f"{', '.join(str(int(s)) for s in S)})")
    T = len(p.steps)
    var = np.full((T, len(p.sizes)), np.nan)
    fits = []
    rescale = np.where(keep, S / np.where(S > 1, S - 1, 1), np.nan)
    for t in range(T):
        mom = _step_moments(p, t)
        if mom is None:
            fits.append(_StepFit(*[np.nan] * 5, "no entry is finite at every usable size and seed"))
            continue
        _, diag, s2, constant, _ = mom
        var[t] = s2[0]
        if constant:
            fits.append(_StepFit(*[np.nan] * 5, "the quantity is the same at every size and seed (to rounding) "
                                                "at this step: its seed variance is 0"))
            continue
        y = s2[:, keep].copy()
        y[1:] *= rescale[keep]
        tol = 1e-12 * max(float(np.max(np.abs(diag[0]))), np.finfo(float).tiny)
        fits.append(_fit_rows(p.sizes[keep], y, tol, level, "seed variance", axis))
    it = _step_index(p.steps, step)
    f = fits[it]
    units = f"({sel.units})^2" if sel.units else ""
    variance = _per_size(var, p, "seed_variance", units).sel({axis: p.sizes[keep]})
    return SeedVarianceRate(
        quantity, CONVERGENCE_QUANTITIES[quantity].variable, axis, sel.selection, units, int(p.steps[it]),
        f.slope, f.lo, f.hi, f.intercept, f.reason, p.steps, _by_step([x.slope for x in fits], p.steps, "slope"),
        _by_step([x.lo for x in fits], p.steps, "lo"), _by_step([x.hi for x in fits], p.steps, "hi"),
        tuple(x.reason for x in fits), _by_step([x.unresolved for x in fits], p.steps, "boot_unresolved"),
        p.sizes[keep], S[keep].astype(int), variance, float(level), int(n_boot), sel.diverged, sel.diverged_points)


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

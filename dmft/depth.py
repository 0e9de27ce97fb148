"""Convergence in depth by a paired design (conv-L; docs/predictions.md, "conv-L: convergence in depth").

A paired depth sweep (`dmft-probe sweep --axis L --io-seeds K`) groups its seeds by io seed: the seeds of one io
group share their embedding, positions and readout (drawn from generators keyed by the io seed, independent of L;
`parametrizations.transformer.init_key`) and differ only in their blocks, which are keyed by the seed (block l
of seed s is the same draw at every depth). The dataset holds a quantity Q(L, s) per depth L and seed s, and the
coordinate `io_seed` along `seed`. Per probe step, two estimates per depth, each fitted against L:

- **variance over block draws** (`DepthRate`, what = "block-draw variance"): per io group g, the unbiased variance
  (ddof = 1) of Q over its block draws, per entry; averaged over entries and io groups. Predicted at fixed N:
  ~ 1/(N L) at alpha_L = 1 (slope -1), flat at alpha_L = 1/2 (slope 0).
- **paired squared bias** (what = "paired squared bias"): per io group, the squared distance of the block-draw
  mean at depth L from the same group's block-draw mean at the deepest L (L_ref), averaged over entries, minus
  its noise: the draws are paired (seed s at L and at L_ref share their io weights and first blocks), so the noise
  of the difference of the two means is Var_s(Q(L, s) - Q(L_ref, s)) / B_g, estimated unbiasedly (ddof = 1) and
  subtracted; then averaged over io groups. It estimates (mu_L - mu_ref)^2, mu the block-average at fixed io.
  With a bias c L^-q, (mu_L - mu_ref)^2 = c^2 (L^-q - L_ref^-q)^2, whose log-log slope is steeper than -2q near
  L_ref (the slope of (1/L - 1/8)^2 over L = 1, 2, 4 is -2.8); so the exponent is fitted in that form: the
  least-squares fit of log b(L) = a + 2 log|L^-q - L_ref^-q| over the depths below L_ref, reported as -2q
  (predicted -2 at alpha_L = 1: the O(1/L) Euler bias of the depth ODE, squared). q is searched on a grid over
  [0, Q_MAX] (at 0 the form is c^2 log(L_ref/L)^2: no power-law decay); an estimate at an end of that range is
  flagged in `note`.

**Intervals.** Two-stage bootstrap, jointly across L: each resample draws G io groups with replacement and, in
each drawn group, its block draws with replacement; the same draws (seeds) are used at every depth, so the
correlations across L (shared io weights, shared first blocks) are kept. Every quantity is recomputed from the
resample: means, variances, the paired noise correction, the fit. The resampled values are recentred per depth
on the estimate, as in `dmft.convergence`: variances multiplicatively (a resampled ddof = 1 variance has mean
(B-1)/B times the estimate), squared biases additively (a resampled paired mean carries its noise floor once
more). Resampling the block draws as well as the groups double-counts the within-group noise, so the intervals
are conservative when the groups are many. A resample whose (recentred) value is <= 0 at some fitted depth has
an unbounded exponent: -inf when that happens only above the geometric mean depth (not resolved above noise at
large L: "at least this steep"), +inf when only below it, indeterminate otherwise (left out); their fraction is
`boot_unresolved`. An estimate with a value <= 0 is not fitted (NaN, with a reason).

**What is left out.** Diverged points (`status`; `dmft.divergence`) are NaN. A seed is used at a step only if the
quantity is finite at every depth there (the pairing needs it at all L); an io group with fewer than 2 usable
draws is left out. Local exponents (`local`) are the same fits over each pair of adjacent depths.

Everything returned is plain numbers and dataclasses; `dmft.verdict.Verdict` rows are made from them elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from . import divergence

__all__ = [
    "DEPTH_QUANTITIES",
    "Q_MAX",
    "DepthRate",
    "DepthStep",
    "block_variance_rate",
    "bias_exponent",
    "depth_rates",
    "io_groups",
    "paired_bias_rate",
]

# quantity -> its entry dims; the kernels are read at depth = L, the output of the last block (the same relative
# depth at every L)
DEPTH_QUANTITIES: dict[str, tuple[str, ...]] = {
    "probe_outputs": ("sample", "output"),
    "kernel_pooled": ("sample", "sample_"),
    "kernel_last_token": ("sample", "sample_"),
    "kernel_spatial": ("token", "token_"),
    "heldout_loss": (),
}
Q_MAX = 4.0  # the bias amplitude exponent q is searched on [0, Q_MAX]
Q_GRID = np.linspace(0.0, Q_MAX, 2001)
CHUNK_FLOATS = 1 << 21  # bootstrap resamples are computed in chunks of about this many gathered values


@dataclass(frozen=True)
class DepthRate:
    """One fitted depth exponent at one probe step.

    what: "block-draw variance" or "paired squared bias"; quantity: the dataset variable; step: the probe step.
    sizes: the depths fitted (the bias leaves out `reference`, the deepest L); values: the estimate per depth
    (variance, or noise-corrected squared bias; units of the quantity squared). estimate: the exponent (variance:
    log-log slope; bias: -2q of the form c^2 (L^-q - L_ref^-q)^2); lo, hi: its bootstrap interval at `level`;
    local: the exponent over each pair of adjacent depths. n_sizes, n_io (io groups), n_draws (block draws per io
    group, smallest), n_seeds (seeds used), n_boot, boot_unresolved (fraction of resamples with an unbounded
    exponent). reason: why the estimate is NaN ("" when it is not); note: e.g. the estimate at an end of the
    exponent range."""

    what: str
    quantity: str
    step: int
    sizes: tuple[int, ...]
    values: tuple[float, ...]
    estimate: float
    lo: float
    hi: float
    local: tuple[float, ...]
    level: float
    n_sizes: int
    n_io: int
    n_draws: int
    n_seeds: int
    n_boot: int
    boot_unresolved: float = 0.0
    reference: int | None = None
    reason: str = ""
    note: str = ""


@dataclass(frozen=True)
class DepthStep:
    """Both depth exponents of one probe step."""

    step: int
    variance: DepthRate
    bias: DepthRate


# ---- selection --------------------------------------------------------------------------------------------------


def io_groups(ds: xr.Dataset) -> dict[int, list[int]]:
    """{io seed: [seeds]} of a sweep dataset, from its `io_seed` coordinate (along `seed`, or a scalar when every
    seed shares one). ValueError when the dataset has none (a sweep made without --io-seeds), or when no io seed
    has 2 seeds (no variance over block draws)."""
    if "seed" not in ds.dims:
        raise ValueError("the dataset has no seed dimension: the paired depth design needs a sweep with seeds")
    if "io_seed" not in ds.coords:
        raise ValueError(
            "the dataset has no io_seed coordinate: it was made before the paired design; rerun the "
            "sweep with --io-seeds K (K io groups of seeds/K block draws)"
        )
    seeds = [int(s) for s in ds["seed"].values]
    io = (
        np.broadcast_to(np.asarray(ds["io_seed"].values), (len(seeds),))
        if ds["io_seed"].ndim == 0
        else ds["io_seed"].transpose("seed").values
    )
    groups: dict[int, list[int]] = {}
    for s, g in zip(seeds, io):
        groups.setdefault(int(g), []).append(s)
    if max(len(v) for v in groups.values()) < 2:
        raise ValueError(
            f"no io seed has 2 seeds (io groups {sorted(groups)} of one seed each): every seed draws "
            f"its own embedding and readout, so there is no variance over block draws; rerun the "
            f"sweep with --io-seeds K, K at most half the seeds"
        )
    return groups


def _quantity(ds: xr.Dataset, quantity: str) -> xr.DataArray:
    """The quantity as (L, seed, step, entries...), floats, diverged points and inf NaN; kernels at depth L."""
    if quantity not in DEPTH_QUANTITIES:
        raise ValueError(f"unknown quantity {quantity!r}; known: {', '.join(DEPTH_QUANTITIES)}")
    if "L" not in ds.dims:
        raise ValueError("the dataset is not a depth sweep (no L dimension); run dmft-probe sweep --axis L")
    if ds.sizes["L"] < 3:
        raise ValueError(f"a depth exponent needs at least 3 depths, the dataset has {ds.sizes['L']}")
    if quantity not in ds.data_vars:
        raise ValueError(f"the dataset has no {quantity!r}; it was not recorded by the runs")
    da = ds[quantity]
    if "depth" in da.dims:
        da = xr.concat([da.sel(L=[L]).sel(depth=int(L), drop=True) for L in da["L"].values], dim="L")
    if "step" not in da.dims:
        da = da.expand_dims(step=[0])
    entries = DEPTH_QUANTITIES[quantity]
    extra = [d for d in da.dims if d not in ("L", "seed", "step", *entries)]
    if extra:
        raise ValueError(f"{quantity} has dims {extra} besides (L, seed, step, {', '.join(entries)})")
    da = da.astype(float)
    da = da.where(np.isfinite(da))
    mask = divergence.diverged_mask(ds)
    if mask is not None and bool(mask.any()):
        da = da.where(~mask)
    return da.transpose("L", "seed", "step", *entries)


@dataclass(frozen=True)
class _Step:
    """One step's data in the paired layout: X (nL, G, B, E) with zeros past each group's draws, n (G,) draws."""

    X: np.ndarray
    n: np.ndarray
    depths: np.ndarray
    n_seeds: int


def _paired(da: xr.DataArray, groups: dict[int, list[int]], t: int) -> _Step | None:
    """The usable draws of step index t in the paired layout (`_Step`), or None when fewer than one io group has
    2 usable draws. A seed is usable when finite at every depth and entry."""
    x = da.isel(step=t).values.reshape(da.sizes["L"], da.sizes["seed"], -1)  # (nL, S, E)
    seeds = [int(s) for s in da["seed"].values]
    usable = np.isfinite(x).all(axis=(0, 2))
    cols = []
    for g in sorted(groups):
        idx = [seeds.index(s) for s in groups[g] if usable[seeds.index(s)]]
        if len(idx) >= 2:
            cols.append(idx)
    if not cols:
        return None
    B = max(len(c) for c in cols)
    X = np.zeros((x.shape[0], len(cols), B, x.shape[2]))
    for j, idx in enumerate(cols):
        X[:, j, : len(idx)] = x[:, idx]
    return _Step(X, np.array([len(c) for c in cols]), da["L"].values.astype(int), int(sum(len(c) for c in cols)))


# ---- the statistics of one (re)sample ---------------------------------------------------------------------------


def _statistics(X: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per depth, the block-draw variance and the paired squared bias against the last depth, from X (..., nL, G,
    B, E) with zeros past each group's n (..., G) draws: two arrays (..., nL) (the bias is 0 at the last depth)."""
    k = n[..., None, :, None].astype(float)  # (..., 1, G, 1)
    m = X.sum(-2) / k  # (..., nL, G, E)
    var = ((X**2).sum(-2) - k * m**2) / (k - 1)
    D = X - X[..., -1:, :, :, :]  # paired differences to the deepest model
    md = m - m[..., -1:, :, :]
    var_d = ((D**2).sum(-2) - k * md**2) / (k - 1)
    bias = md**2 - var_d / k
    return var.mean((-1, -2)), bias.mean((-1, -2))


def _resample(step: _Step, rng: np.random.Generator, n_boot: int) -> tuple[np.ndarray, np.ndarray]:
    """n_boot two-stage resamples (io groups, then draws within each drawn group; the same draws at every depth):
    the statistics of `_statistics` per resample, (n_boot, nL) each."""
    G, B = step.X.shape[1], step.X.shape[2]
    chunk = max(1, CHUNK_FLOATS // step.X.size)
    out_v, out_b = [], []
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        g = rng.integers(0, G, size=(m, G))  # the drawn groups
        n = step.n[g]  # (m, G) draws in each
        r = np.floor(rng.random((m, G, B)) * n[..., None]).astype(int)  # draws within, < n
        valid = np.arange(B)[None, None, :] < n[..., None]  # (m, G, B)
        Xb = step.X[:, g[..., None], r]  # (nL, m, G, B, E)
        Xb = np.moveaxis(Xb, 0, 1) * valid[:, None, :, :, None]  # (m, nL, G, B, E), zeros past n
        v, b = _statistics(Xb, n)
        out_v.append(v)
        out_b.append(b)
    return np.concatenate(out_v), np.concatenate(out_b)


# ---- fits -------------------------------------------------------------------------------------------------------


def _slope(logx: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """Least-squares slopes of logy (..., n) against logx (n,)."""
    xc = logx - logx.mean()
    return (logy - logy.mean(-1, keepdims=True)) @ xc / (xc @ xc)


def _bias_shape(sizes: np.ndarray, ref: float, q: np.ndarray) -> np.ndarray:
    """log((L^-q - ref^-q) / q) per q (rows) and depth (cols), continuous at q = 0 (log log(ref/L) there)."""
    u = np.log(sizes / ref)[None, :]  # < 0
    qq = q[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        core = np.where(qq > 0, -np.expm1(qq * u) / np.where(qq > 0, qq, 1.0), -u)
    return -qq * np.log(sizes)[None, :] + np.log(core)


def bias_exponent(sizes: Sequence[float] | np.ndarray, values: np.ndarray, reference: float) -> np.ndarray:
    """The exponent -2q of the least-squares fit of log values = a + 2 log|L^-q - reference^-q| (q on a grid over
    [0, Q_MAX]); values (..., n) > 0 at the depths `sizes` (all below `reference`). Returns an array (...)."""
    x = np.asarray(sizes, dtype=float)
    y = np.log(np.asarray(values, dtype=float))
    S = 2 * _bias_shape(x, float(reference), Q_GRID)  # (nq, n); the 2 log q is in the intercept
    yc = y - y.mean(-1, keepdims=True)
    Sc = S - S.mean(-1, keepdims=True)
    sse = -2 * yc @ Sc.T + (Sc**2).sum(-1)  # + |yc|^2, the same for every q
    return -2 * Q_GRID[np.argmin(sse, axis=-1)]


def _exponents(sizes: np.ndarray, values: np.ndarray, bias: bool, reference: float) -> np.ndarray:
    """The exponent of each row of values (..., n) (all > 0): log-log slope, or `bias_exponent`."""
    if bias:
        return bias_exponent(sizes, values, reference)
    return _slope(np.log(sizes), np.log(values))


def _boot_exponents(sizes: np.ndarray, boot: np.ndarray, bias: bool, reference: float) -> np.ndarray:
    """Per resample, the exponent; -inf / +inf where a value <= 0 sits only above / below the geometric mean
    depth, NaN where on both sides."""
    ok = (boot > 0).all(-1)
    out = np.full(boot.shape[0], np.nan)
    if ok.any():
        out[ok] = _exponents(sizes, boot[ok], bias, reference)
    big = np.log(sizes) > np.log(sizes).mean()
    bad = ~(boot > 0)
    out[~ok & bad[:, big].any(-1) & ~bad[:, ~big].any(-1)] = -np.inf
    out[~ok & bad[:, ~big].any(-1) & ~bad[:, big].any(-1)] = np.inf
    return out


def _interval(boot: np.ndarray, level: float) -> tuple[float, float, float]:
    """(lo, hi, unresolved fraction) of resampled exponents (inf allowed, NaN = indeterminate): the percentile
    interval, or NaN when more than (1 - level)/2 of them are indeterminate."""
    unresolved = float(np.mean(~np.isfinite(boot)))
    keep = boot[~np.isnan(boot)]
    if np.mean(np.isnan(boot)) > (1 - level) / 2 or keep.size == 0:
        return math.nan, math.nan, unresolved
    a = (1 - level) / 2
    big = np.finfo(float).max / 4  # +-inf as finite stand-ins: no inf - inf
    lo, hi = np.quantile(np.clip(keep, -big, big), [a, 1 - a], method="linear")
    return _unclip(lo, big), _unclip(hi, big), unresolved


def _unclip(x: float, big: float) -> float:
    """A quantile back from `_interval`'s stand-ins: +-inf where it lies at or beyond one."""
    return float(math.copysign(math.inf, x)) if abs(x) >= big else float(x)


# ---- the rates --------------------------------------------------------------------------------------------------


def _rate(
    what: str,
    quantity: str,
    step: int,
    sizes: np.ndarray,
    est: np.ndarray,
    boot: np.ndarray,
    multiplicative: bool,
    reference: int | None,
    st: _Step,
    level: float,
) -> DepthRate:
    """The DepthRate of one statistic: recentre the resamples on the estimate, fit, interval, local exponents."""
    bias = reference is not None
    common: dict[str, Any] = dict(
        what=what,
        quantity=quantity,
        step=step,
        sizes=tuple(int(s) for s in sizes),
        values=tuple(float(v) for v in est),
        level=level,
        n_sizes=len(sizes),
        n_io=len(st.n),
        n_draws=int(st.n.min()),
        n_seeds=st.n_seeds,
        n_boot=len(boot),
        reference=reference,
    )
    if len(sizes) < 2:
        return DepthRate(
            **common,
            estimate=math.nan,
            lo=math.nan,
            hi=math.nan,
            local=(),
            reason=f"{len(sizes)} depth(s) to fit; a slope needs 2 or more",
        )
    if not (est > 0).all():
        where = ", ".join(f"L={int(s)}" for s, v in zip(sizes, est) if not v > 0)
        return DepthRate(
            **common,
            estimate=math.nan,
            lo=math.nan,
            hi=math.nan,
            local=(),
            reason=f"not resolved above the noise (value <= 0 at {where})",
        )
    mean = boot.mean(0)
    boot = boot * (est / mean) if multiplicative else boot + (est - mean)
    ref = float(reference) if reference is not None else 0.0
    estimate = float(_exponents(sizes, est[None, :], bias, ref)[0]) + 0.0  # -0.0 -> 0.0
    lo, hi, unresolved = _interval(_boot_exponents(sizes, boot, bias, ref), level)
    local = tuple(
        float(_exponents(sizes[i : i + 2], est[None, i : i + 2], bias, ref)[0]) for i in range(len(sizes) - 1)
    )
    note = ""
    if bias and estimate in (0.0, -2 * Q_MAX):
        note = f"the exponent sits at an end of the searched range [{-2 * Q_MAX:g}, 0]"
    return DepthRate(**common, estimate=estimate, lo=lo, hi=hi, local=local, boot_unresolved=unresolved, note=note)


def _empty(what: str, quantity: str, step: int, reason: str, level: float, n_boot: int) -> DepthRate:
    return DepthRate(
        what, quantity, step, (), (), math.nan, math.nan, math.nan, (), level, 0, 0, 0, 0, n_boot, reason=reason
    )


def depth_rates(
    ds: xr.Dataset,
    quantity: str = "probe_outputs",
    steps: Sequence[int] | None = None,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> list[DepthStep]:
    """Per probe step (all of them, or `steps`), the exponent in L of the variance over block draws and of the
    paired squared bias (module docstring) of `quantity` (a key of DEPTH_QUANTITIES) in a paired depth sweep
    `ds`; returns one DepthStep per step. The same bootstrap resamples serve both. ValueError (one line) for a
    dataset that is not a paired depth sweep, an unknown quantity or step, n_boot < 100 or level outside (0, 1)."""
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 100):
        raise ValueError(f"n_boot must be an integer >= 100, got {n_boot!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    da = _quantity(ds, quantity)
    groups = io_groups(ds)
    all_steps = [int(s) for s in da["step"].values]
    wanted = all_steps if steps is None else [int(s) for s in steps]
    missing = [s for s in wanted if s not in all_steps]
    if missing:
        raise ValueError(f"no probe step {missing[0]} in the dataset (steps: {', '.join(map(str, all_steps))})")
    out = []
    for s in wanted:
        st = _paired(da, groups, all_steps.index(s))
        if st is None:
            reason = "no io group has 2 usable block draws at this step"
            out.append(
                DepthStep(
                    s,
                    _empty("block-draw variance", quantity, s, reason, level, n_boot),
                    _empty("paired squared bias", quantity, s, reason, level, n_boot),
                )
            )
            continue
        var_est, bias_est = _statistics(st.X, st.n)
        var_boot, bias_boot = _resample(st, np.random.default_rng([seed, s]), n_boot)
        ref = int(st.depths[-1])
        var = _rate("block-draw variance", quantity, s, st.depths, var_est, var_boot, True, None, st, level)
        bias = _rate(
            "paired squared bias", quantity, s, st.depths[:-1], bias_est[:-1], bias_boot[:, :-1], False, ref, st, level
        )
        out.append(DepthStep(s, var, bias))
    return out


def block_variance_rate(ds: xr.Dataset, quantity: str = "probe_outputs", step: int | None = None, **kw) -> DepthRate:
    """The exponent in L of the variance over block draws at one probe step (default: the last); `depth_rates`."""
    return _one(ds, quantity, step, kw).variance


def paired_bias_rate(ds: xr.Dataset, quantity: str = "probe_outputs", step: int | None = None, **kw) -> DepthRate:
    """The exponent in L of the paired squared bias at one probe step (default: the last); `depth_rates`."""
    return _one(ds, quantity, step, kw).bias


def _one(ds: xr.Dataset, quantity: str, step: int | None, kw: dict) -> DepthStep:
    if step is None:
        step = int(ds["step"].values[-1]) if "step" in ds.dims else 0
    return depth_rates(ds, quantity, [step], **kw)[0]

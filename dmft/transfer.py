"""Learning-rate transfer (the paper's Fig. 2a, P7): the optimum eta0* per size as a continuous quantity, its
exponent against the size, and the P7 verdict.

Input: final held-out losses as a DataArray with dims (eta0, <size axis>, seed). An UNSTABLE run is NaN or inf:
one that blew up (NaN/inf) or whose held-out loss ended above the chance level ln(n_out) (`losses_of` marks both,
from the grid's `status`; `probes.grid.lr_grid`). A (size, eta0) point where any seed is unstable counts as unstable,
in the seed mean and in every bootstrap resample alike, so an unstable eta0 never wins.

**eta0* (`fit_optimum`).** Per size, the seed-mean loss over the eta0 grid; its minimum m among the stable
points. The optimum is *interior* when m is neither the smallest nor the largest eta0 of the grid and both its
neighbours are stable (an optimum next to a blow-up is the edge of stability, not a minimum). log10 eta0* is then
the vertex of the parabola through the minimum and its two neighbours (in log10 eta0), so it moves continuously
between grid points. The exponent of eta0* against the size is the least-squares slope of log eta0* against
log size. Seeds are resampled with replacement, the same seed indices at every size and eta0 (seed s shares its
draws across the grid); every resample repeats the whole fit. Its *support* is the fraction of resamples in
which every size has an interior optimum with a positive curvature; the interval is the percentile interval of
the exponent over those resamples.

**The verdict (`p7_verdict`, a `dmft.verdict.Verdict`).** Prediction for the muP family: exponent 0 (the optimum
transfers), against SP's -1; for SP, the negative control: -1 (a width-independent learning rate must shrink as
1/d, docs/predictions.md P7), against 0 (along N or H; SP has no depth rule, so its row along L is not measured). The band's half-width is half a grid step in log10 eta0 over the log10
size range: the exponent of a drift of eta0* by half a grid step across the whole size range. Only with support
>= 0.9 does `dmft.verdict.decide` judge the interval; otherwise the row is underpowered, with the reason.

`best_eta0` is the descriptive grid view: the argmin per size, its bootstrap frequencies and the largest stable
eta0 per size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from .verdict import NOT_MEASURED, UNDERPOWERED, Verdict, point

MIN_SUPPORT = 0.9  # P7 gives a verdict only when this fraction of resamples has an interior optimum


@dataclass(frozen=True)
class Transfer:
    """best: best eta0 per size (seed mean; NaN where every eta0 diverged); freq: (size, eta0) fraction of
    bootstrap resamples whose argmin is that eta0; steps: largest distance between two sizes' best eta0, in grid
    steps; stays: steps <= 1. diverged: (size, eta0) bool, some seed diverged there. stable: per size the
    largest eta0 below the smallest diverged one (NaN when the smallest eta0 of the grid already diverged);
    stable_edge: True where a larger eta0 diverged, so `stable` is the edge of stability, False where nothing
    diverged (the edge lies above the grid and `stable` is only a lower bound). boot_argmin: (size, n_boot) int,
    each bootstrap resample's argmin (index into etas; -1 for a size where every eta0 diverged); resample r
    draws the same seed indices at every size (seed s shares its draws across the grid)."""

    axis: str
    sizes: np.ndarray
    etas: np.ndarray
    best: np.ndarray
    freq: np.ndarray
    steps: int
    diverged: np.ndarray | None = None
    stable: np.ndarray | None = None
    stable_edge: np.ndarray | None = None
    boot_argmin: np.ndarray | None = None

    @property
    def stays(self) -> bool:
        return self.steps <= 1

    def _stable_text(self, i: int) -> str:
        if self.stable is None:
            return ""
        s = self.stable[i]
        if not np.isfinite(s):
            return f"none (the smallest, {self.etas[0]:g}, diverged)"
        assert self.stable_edge is not None and self.diverged is not None  # set with stable
        if not self.stable_edge[i]:
            return f">= {s:g} (none diverged)"
        above = self.etas[np.flatnonzero(self.diverged[i])[0]]
        return f"{s:g} ({above:g} diverged)"

    def line(self) -> str:
        """One sentence: best eta0 per size, its bootstrap support, the verdict, and the largest stable eta0."""
        per = ", ".join(
            f"{self.axis}={int(s)}: "
            + (f"{b:g} ({100 * f.max():.0f}%)" if np.isfinite(b) else "none (every eta0 diverged)")
            for s, b, f in zip(self.sizes, self.best, self.freq)
        )
        verdict = "stays within one grid step" if self.stays else f"moves by {self.steps} grid steps"
        text = (
            f"best eta0 across {self.axis} (seed-bootstrap support of the argmin in brackets): {per}; "
            f"the optimum {verdict}"
        )
        if self.stable is not None:
            text += "; largest stable eta0: " + ", ".join(
                f"{self.axis}={int(s)}: {self._stable_text(i)}" for i, s in enumerate(self.sizes)
            )
        return text


def _grid(losses: xr.DataArray, axis: str, who: str) -> tuple[xr.DataArray, np.ndarray, np.ndarray]:
    """(losses as (axis, eta0, seed), the eta0s in increasing order, the losses in that order as a float array
    (size, eta, seed)); ValueError naming `who` when a dim is missing."""
    for d in ("eta0", axis, "seed"):
        if d not in losses.dims:
            raise ValueError(f"{who} needs dims (eta0, {axis}, seed), got {losses.dims}")
    da = losses.transpose(axis, "eta0", "seed")
    etas = da.eta0.values.astype(float)
    order = np.argsort(etas)
    return da, etas[order], da.values.astype(float)[:, order]  # (size, eta, seed)


def best_eta0(losses: xr.DataArray, axis: str, n_boot: int = 1000, seed: int = 0) -> Transfer:
    """The best eta0 per size of `losses` (dims eta0, axis, seed; lower is better), its seed bootstrap and the
    largest stable eta0 per size (NaN/inf losses are diverged runs)."""
    da, etas, raw = _grid(losses, axis, "best_eta0")
    diverged = ~np.isfinite(raw).all(axis=2)  # (size, eta): any seed diverged
    vals = np.where(diverged[..., None], np.inf, raw)  # a diverged point is diverged in every resample
    n_size, n_eta, n_seed = vals.shape
    means = vals.mean(axis=2)
    has_best = np.isfinite(means).any(axis=1)
    best_idx = means.argmin(axis=1)
    best = np.where(has_best, etas[best_idx], np.nan)
    picks = np.random.default_rng(seed).integers(0, n_seed, (n_boot, n_seed))  # the same seeds at every size
    freq = np.zeros((n_size, n_eta))
    boot = np.full((n_size, n_boot), -1, dtype=np.int64)
    for i in range(n_size):
        if not has_best[i]:
            continue
        arg = vals[i][:, picks].mean(axis=2).argmin(axis=0)  # (n_boot,)
        boot[i] = arg
        freq[i] = np.bincount(arg, minlength=n_eta) / n_boot
    ok = best_idx[has_best]
    steps = int(ok.max() - ok.min()) if len(ok) else 0
    first_bad = np.where(diverged.any(axis=1), diverged.argmax(axis=1), n_eta)  # index of the smallest diverged eta0
    stable = np.where(first_bad > 0, etas[np.maximum(first_bad - 1, 0)], np.nan)
    return Transfer(axis, da[axis].values, etas, best, freq, steps, diverged, stable, first_bad < n_eta, boot)


def losses_of(ds: xr.Dataset) -> xr.DataArray:
    """The (eta0, axis, seed) final held-out losses of an lr grid dataset (`probes.grid.lr_grid.run_lr_grid`), NaN
    where the run was unstable: its `status` is not ok (diverged or unstable), or its loss ended above the chance
    level (`probes.grid.lr_grid.grid_chance`; this also reads grids written before the `unstable` status existed). The
    input of `fit_optimum(losses_of(ds), ds.attrs["sweep_axis"])` and `best_eta0`."""
    from probes.grid.lr_grid import above_chance, grid_chance

    axis = ds.attrs.get("sweep_axis")
    if ds.attrs.get("kind") != "lr_grid" or "final_loss" not in ds.data_vars or axis not in ("N", "H", "L"):
        raise ValueError(
            "losses_of needs an lr grid dataset (attrs kind 'lr_grid' and sweep_axis, variable "
            f"final_loss), got kind {ds.attrs.get('kind', 'unset')!r}"
        )
    da = ds["final_loss"]
    if "status" in ds.data_vars:
        da = da.where(ds["status"] == 0)  # diverged or unstable: NaN, whatever it logged
    chance = grid_chance(ds)
    if chance is not None:
        da = da.where(~above_chance(da.values, chance))  # above chance: unstable
    return da.transpose("eta0", axis, "seed").rename("final_loss")


# ---------------------------------------------------------------------------------------------- eta0* as an exponent


@dataclass(frozen=True)
class Optimum:
    """The continuous optimum eta0* of a learning-rate grid and its exponent against the size (module docstring).

    axis, sizes, etas (sorted); unstable: (size, eta) bool, some seed unstable there. log_eta_star: (size,) log10
    eta0* from the seed means over all seeds, NaN where that size has no interior optimum (`reasons` says why, ""
    where it has one). exponent: slope of log eta0* against log size (NaN unless every size has an interior
    optimum); lo, hi: its percentile interval at `level` over the supported resamples (NaN when none is).
    support: fraction of the resamples in which every size has an interior optimum; size_support: (size,) the
    same per size. boot_log_eta_star: (size, n_boot), NaN where a resample has no interior optimum;
    boot_exponent: (n_boot,), NaN where a resample is not supported. grid_step: median spacing of the grid in
    log10 eta0. n_seeds: seeds per cell."""

    axis: str
    sizes: np.ndarray
    etas: np.ndarray
    unstable: np.ndarray
    log_eta_star: np.ndarray
    reasons: tuple[str, ...]
    exponent: float
    lo: float
    hi: float
    support: float
    size_support: np.ndarray
    boot_log_eta_star: np.ndarray
    boot_exponent: np.ndarray
    grid_step: float
    n_seeds: int
    level: float = 0.95

    @property
    def eta_star(self) -> np.ndarray:
        """eta0* per size (NaN where not interior)."""
        return 10.0**self.log_eta_star

    @property
    def log_size_range(self) -> float:
        """log10(largest / smallest size)."""
        return float(np.log10(self.sizes.max() / self.sizes.min()))

    @property
    def band(self) -> float:
        """Half-width of the hypotheses' regions: the exponent of a drift of eta0* by half a grid step across the
        whole size range, (grid_step / 2) / log10(size range)."""
        return self.grid_step / 2 / self.log_size_range

    def band_source(self) -> str:
        """How `band` was obtained, in words and numbers."""
        return (
            f"half a grid step ({self.grid_step / 2:.3g} in log10 eta0) over the log10 size range "
            f"{self.log_size_range:.3g} ({self.axis} = {int(self.sizes.min())}..{int(self.sizes.max())})"
        )

    def per_size(self) -> str:
        """ "N=4: 1.78 (support 99%), N=16: ..." with the reason for a size without an interior optimum."""
        return ", ".join(
            f"{self.axis}={int(s)}: "
            + (f"{e:.3g}" if np.isfinite(e) else f"none ({why})")
            + f" (support {100 * p:.0f}%)"
            for s, e, why, p in zip(self.sizes, self.eta_star, self.reasons, self.size_support)
        )

    def unstable_text(self) -> str:
        """Per size, the unstable eta0s of the grid ("" when none)."""
        parts = [
            f"{self.axis}={int(s)}: " + ", ".join(f"{e:.3g}" for e in self.etas[row])
            for s, row in zip(self.sizes, self.unstable)
            if row.any()
        ]
        return ("unstable (blew up or ended above chance): " + "; ".join(parts)) if parts else ""

    def line(self) -> str:
        """One sentence: eta0* per size, the exponent with its interval, the support."""
        meas = (
            f"{self.exponent:+.3g} [{self.lo:+.3g}, {self.hi:+.3g}]"
            if np.isfinite(self.exponent) and self.lo <= self.hi
            else f"{self.exponent:+.3g} (no interval)"
            if np.isfinite(self.exponent)
            else "not defined"
        )
        return (
            f"eta0* across {self.axis} (parabola in log10 eta0 through the seed-mean minimum and its neighbours): "
            f"{self.per_size()}; exponent {meas}; support {100 * self.support:.0f}% of "
            f"{self.boot_exponent.size} seed resamples"
        )


def _vertex(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For seed-mean losses y (n_eta, B) on log10 eta0 grid x (n_eta,), inf where unstable: (vertex, code), each
    (B,). vertex: log10 of the minimum of the parabola through the lowest stable point and its two neighbours,
    NaN unless code == 0. code: 0 interior, 1 every eta0 unstable, 2 at the smallest eta0, 3 at the largest, 4 a
    neighbour unstable (the edge of stability), 5 no curvature (a flat minimum)."""
    n, b = y.shape
    code = np.zeros(b, dtype=np.int64)
    vertex = np.full(b, np.nan)
    stable = np.isfinite(y)
    m = np.where(stable, y, np.inf).argmin(axis=0)
    code[~stable.any(axis=0)] = 1
    code[(code == 0) & (m == 0)] = 2
    code[(code == 0) & (m == n - 1)] = 3
    ok = code == 0
    cols = np.flatnonzero(ok)
    mm = m[cols]
    code[cols[~(stable[mm - 1, cols] & stable[mm + 1, cols])]] = 4
    cols = np.flatnonzero(code == 0)
    mm = m[cols]
    xa, xb, xc = x[mm - 1], x[mm], x[mm + 1]
    fa, fb, fc = y[mm - 1, cols], y[mm, cols], y[mm + 1, cols]
    curv = ((fc - fb) / (xc - xb) - (fb - fa) / (xb - xa)) / (xc - xa)  # half the second derivative
    num = (xb - xa) ** 2 * (fb - fc) - (xb - xc) ** 2 * (fb - fa)
    den = (xb - xa) * (fb - fc) - (xb - xc) * (fb - fa)
    good = curv > 0
    code[cols[~good]] = 5
    vertex[cols[good]] = xb[good] - 0.5 * num[good] / den[good]
    return vertex, code


def _reason(code: int, etas: np.ndarray, row_unstable: np.ndarray, m: int) -> str:
    """The words for a `_vertex` code of the full-sample fit."""
    if code == 1:
        return "every eta0 unstable"
    if code == 2:
        return f"the minimum is the smallest eta0 of the grid, {etas[0]:.3g}"
    if code == 3:
        return f"the minimum is the largest eta0 of the grid, {etas[-1]:.3g}"
    if code == 4:
        bad = [f"{etas[j]:.3g}" for j in (m - 1, m + 1) if row_unstable[j]]
        edge = ": the edge of stability" if row_unstable[m + 1] else ""
        return f"the minimum {etas[m]:.3g} is next to an unstable eta0 ({', '.join(bad)}){edge}"
    if code == 5:
        return f"a flat minimum at {etas[m]:.3g} (no curvature)"
    return ""


def _slopes(logx: np.ndarray, logy: np.ndarray) -> np.ndarray:
    """Least-squares slopes of logy (n_sizes, B) against logx (n_sizes,), NaN where a column has a NaN."""
    xc = logx - logx.mean()
    return (xc[:, None] * (logy - logy.mean(axis=0))).sum(axis=0) / (xc**2).sum()


def fit_optimum(losses: xr.DataArray, axis: str, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> Optimum:
    """eta0* per size and its exponent against the size, with a seed bootstrap (module docstring). losses: dims
    (eta0, axis, seed), NaN/inf where a run was unstable (`losses_of`). ValueError for missing dims, fewer than 2
    sizes or fewer than 3 eta0s."""
    da, etas, raw = _grid(losses, axis, "fit_optimum")
    sizes = np.asarray(da[axis].values, dtype=float)
    if len(sizes) < 2 or len(etas) < 3 or np.any(etas <= 0) or np.any(sizes <= 0):
        raise ValueError(
            f"fit_optimum needs at least 2 positive sizes and 3 positive eta0s, got {len(sizes)} and {len(etas)}"
        )
    unstable = ~np.isfinite(raw).all(axis=2)
    vals = np.where(unstable[..., None], np.inf, raw)  # unstable in every resample
    n_size, n_eta, n_seed = vals.shape
    x = np.log10(etas)
    picks = np.random.default_rng(seed).integers(0, n_seed, (n_boot, n_seed))  # the same seeds at every size
    star = np.full(n_size, np.nan)
    reasons = []
    boot = np.full((n_size, n_boot), np.nan)
    for i in range(n_size):
        full = vals[i].mean(axis=1)[:, None]
        v, code = _vertex(x, full)
        star[i] = v[0]
        m = int(np.where(np.isfinite(full[:, 0]), full[:, 0], np.inf).argmin())
        reasons.append(_reason(int(code[0]), etas, unstable[i], m))
        boot[i] = _vertex(x, vals[i][:, picks].mean(axis=2))[0]
    logs = np.log10(sizes)
    exponent = float(_slopes(logs, star[:, None])[0])
    supported = np.isfinite(boot).all(axis=0)
    boot_exp = np.where(supported, _slopes(logs, np.where(supported, boot, 0.0)), np.nan)
    if supported.any():
        lo, hi = np.quantile(boot_exp[supported], [(1 - level) / 2, (1 + level) / 2])
    else:
        lo = hi = np.nan
    return Optimum(
        axis,
        sizes,
        etas,
        unstable,
        star,
        tuple(reasons),
        exponent,
        float(lo),
        float(hi),
        float(supported.mean()),
        np.isfinite(boot).mean(axis=1),
        boot,
        boot_exp,
        float(np.median(np.diff(x))),
        n_seed,
        level,
    )


def p7_hypotheses(axis: str, band: float) -> dict[bool, object]:
    """The two hypotheses of P7 as regions of the exponent of eta0* against `axis` (half-width `band`): False, the
    muP family's transfer (0); True, SP's 1/d shrinking (-1; d = N H grows with N and H). SP has no depth rule, so
    along L only the transfer hypothesis is defined (True maps to None)."""
    flat = point(f"eta0* independent of {axis} (transfers)", 0.0, band)
    shrink = point("eta0* ~ 1/d (SP)", -1.0, band) if axis in ("N", "H") else None
    return {False: flat, True: shrink}


def p7_verdict(opt: Optimum, standard: bool, setting: str) -> Verdict:
    """P7's row (a `dmft.verdict.Verdict`, key "P7", row "eta0* exponent") from `fit_optimum`'s result: the exponent
    of eta0* against the size, with the prediction of the muP family (0, against SP's -1) or of SP, the negative
    control (standard=True: -1, against 0), the band `opt.band`. Underpowered, with the reason, when some size has no
    interior optimum in the full sample or the bootstrap support is below MIN_SUPPORT (0.9). setting: the
    parametrization's name."""
    band = opt.band
    hyp = p7_hypotheses(opt.axis, band)
    prediction, alternative = hyp[standard], hyp[not standard]
    note = f"eta0* per size: {opt.per_size()}; support {100 * opt.support:.0f}% of {opt.boot_exponent.size} resamples"
    common: dict[str, Any] = dict(
        key="P7",
        row="eta0* exponent",
        quantity="eta0*",
        axis=opt.axis,
        setting=setting,
        estimator=(
            f"slope of log eta0* against log {opt.axis}; eta0*: vertex of the parabola in log10 eta0 "
            "through the seed-mean minimum and its stable neighbours; seeds resampled jointly "
            "across sizes"
        ),
        estimate=opt.exponent,
        lo=opt.lo,
        hi=opt.hi,
        prediction=prediction or hyp[False],
        alternatives=(alternative,) if alternative is not None else (),
        band=band,
        band_source=opt.band_source(),
        level=opt.level,
        primary=not standard,
        n_sizes=len(opt.sizes),
        n_seeds=opt.n_seeds,
        note=note,
        diverged=int(opt.unstable.sum()),  # (size, eta0) points
        diverged_points=opt.unstable_text(),
    )
    if prediction is None:
        return Verdict(
            **common, outcome=NOT_MEASURED, needs="SP has no depth rule: no predicted exponent of eta0* along L"
        )
    missing = [f"{opt.axis}={int(s)}: {why}" for s, why in zip(opt.sizes, opt.reasons) if why]
    if missing:
        return Verdict(
            **{**common, "estimate": math.nan, "lo": math.nan, "hi": math.nan},
            outcome=UNDERPOWERED,
            needs="an interior optimum at every size (" + "; ".join(missing) + "): widen the grid past "
            "the minimum, or train longer so that the minimum moves away from the blow-up",
        )
    if opt.support < MIN_SUPPORT:
        weak = [f"{opt.axis}={int(s)} {100 * p:.0f}%" for s, p in zip(opt.sizes, opt.size_support) if p < 1]
        return Verdict(
            **common,
            outcome=UNDERPOWERED,
            needs=(
                f"bootstrap support {100 * opt.support:.0f}% < {100 * MIN_SUPPORT:.0f}% (resamples "
                f"without an interior optimum at {', '.join(weak)}): more seeds, or a grid whose "
                "minimum lies further from its edges and from the blow-up"
            ),
        )
    return Verdict(**common)

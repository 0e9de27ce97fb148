"""Power before data: how often a row of a planned sweep comes out consistent (dmft-probe plan).

For a sweep's axis, sizes, seeds and a noise level (`Noise`: given, or measured on an existing sweep by
`noise_from`), each row kind that applies to the axis (`rows_for`) is simulated: synthetic sweeps
(`dmft.synthetic`) with the prediction true, and with each alternative true, go through the real estimator
(`dmft.estimators`, `dmft.fit.fit_rows`: the same code `dmft.convergence` runs on a dataset) and the real rule
(`dmft.verdict.decide`, with the band each repetition derives). Reported per row (`RowPower`): the power (the
fraction of repetitions that come out consistent when the prediction is true), the fraction that come out
consistent when an alternative is true (the rule's false-consistent rate; it should stay <= 0.05), and the seeds
needed for power 0.8 at these sizes (a search over seeds; None when none up to `MAX_SEEDS` reaches it: then only a
wider size range, or a user band, would).

Row kinds (docs/predictions.md, "The verdict rule"): "slope" (the seed mean of a per-seed positive quantity,
e.g. Var_h A(0): P1 along N and H, P10 along L), "variance" (the seed-variance rate of a trained quantity: P5, P6,
conv-L), "bias" (the squared-bias rate, -2 for a 1/n bias against -1 for an n^-1/2 one) and "plateau" (v_inf /
v(n_min): "no convergence" against "converges at n^-1"). Noise: the entries of one seed and their correlation,
the correlation of one seed's draws across sizes, the per-seed coefficient of variation of a positive quantity,
and the bias of the seed mean in units of the seed sd at the smallest size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import xarray as xr

from . import estimators, fit, synthetic, verdict
from .predictions import Hypotheses, planned_rows

__all__ = [
    "MAX_SEEDS",
    "Noise",
    "Row",
    "RowPower",
    "lines",
    "noise_from",
    "plan",
    "row_power",
    "rows_for",
    "check_options",
    "resolve_noise",
    "seeds_needed",
    "wider",
]

MAX_SEEDS = 64
SEED_STEPS = (3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
MAX_SIM_ENTRIES = 32  # entries simulated; more are folded into an equicorrelated block of the same dof


@dataclass(frozen=True)
class Noise:
    """entries: of one seed's quantity; rho_entries: their mean correlation; rho_sizes: the correlation of one
    seed's fluctuations across sizes (shared draws); cv: the seed-to-seed coefficient of variation of a per-seed
    positive quantity ("slope" rows); bias: the RMS bias of the seed mean over the seed sd, at the smallest
    size; source: where the numbers come from."""

    entries: int = 16
    rho_entries: float = 0.3
    rho_sizes: float = 0.5
    cv: float = 0.2
    bias: float = 1.0
    source: str = "given"

    def __post_init__(self) -> None:
        if not (isinstance(self.entries, (int, np.integer)) and self.entries >= 1):
            raise ValueError(f"--entries must be a positive integer, got {self.entries!r}")
        for name, lo in (("rho_entries", 0.0), ("rho_sizes", 0.0)):
            x = getattr(self, name)
            if not (np.isfinite(x) and lo <= x < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1), got {x!r}")
        if not (np.isfinite(self.cv) and 0 < self.cv <= 10):
            raise ValueError(f"--cv must be in (0, 10], got {self.cv!r}")
        if not (np.isfinite(self.bias) and 0 <= self.bias <= 100):
            raise ValueError(f"--bias must be in [0, 100], got {self.bias!r}")

    def text(self) -> str:
        return (
            f"{self.entries} entries (correlation {self.rho_entries:.2f}), correlation across sizes "
            f"{self.rho_sizes:.2f}, cv {self.cv:.2g}, bias/sd {self.bias:.2g} ({self.source})"
        )

    def simulated(self) -> tuple[int, float]:
        """(entries, rho_entries) to simulate: at most MAX_SIM_ENTRIES entries with the same effective number
        E / (1 + (E - 1) rho) of independent ones."""
        E, rho = int(self.entries), float(self.rho_entries)
        if E <= MAX_SIM_ENTRIES:
            return E, rho
        eff = E / (1 + (E - 1) * rho)
        if eff >= MAX_SIM_ENTRIES:
            return MAX_SIM_ENTRIES, 0.0
        m = MAX_SIM_ENTRIES
        return m, float((m / eff - 1) / (m - 1))


@dataclass(frozen=True)
class Row:
    """A row kind with its hypotheses: kind (`dmft.estimators.KINDS` but "mean" is "slope"), name, the
    prediction's (name, value) and the alternatives'. For "plateau" the values are ignored: "plateau" is
    v_inf / v(n_min) >= band, "converges" is |v_inf / v(n_min)| <= band."""

    kind: str
    name: str
    prediction: tuple[str, float]
    alternatives: tuple[tuple[str, float], ...]
    rate: float = -1.0  # the seed-variance exponent the bias and plateau rows are simulated with

    def regions(self, band: float) -> tuple[verdict.Region, list[verdict.Region]]:
        """The hypotheses as regions of the estimate with half-width `band`."""
        if self.kind == "plateau":
            plateau, zero = verdict.above("plateau", band), verdict.between("converges", -band, band)
            pred = plateau if self.prediction[0] == "plateau" else zero
            return pred, [zero if pred is plateau else plateau]
        return (
            verdict.point(self.prediction[0], self.prediction[1], band),
            [verdict.point(n, v, band) for n, v in self.alternatives],
        )

    def hypotheses_text(self) -> str:
        if self.kind == "plateau":
            return f"{self.prediction[0]} vs {self.alternatives[0][0]}"
        return f"{self.prediction[1]:+g} vs " + ", ".join(f"{v:+g}" for _, v in self.alternatives)


def _row(kind: str, name: str, h: Hypotheses, rate: float = -1.0) -> Row:
    return Row(
        kind, name, (h.prediction.name, h.prediction.value), tuple((x.name, x.value) for x in h.alternatives), rate=rate
    )


def rows_for(axis: str, alpha_A: float, alpha_L: float, standard: bool) -> list[Row]:
    """The row kinds that apply to a sweep along `axis`, with their hypotheses read from the registry
    (`dmft.predictions.REGISTRY`): the per-seed slope at init (P1's row along N and H, P10 along L) and, where a
    trained rate is predicted (P5, P6, conv-L), its seed-variance rate, the bias rate (-2 against -1) and the
    plateau test."""
    if axis not in ("N", "H", "L"):
        raise ValueError(f"--axis must be N, H or L, got {axis!r}")
    init = next(
        p
        for p in planned_rows(["P10" if axis == "L" else "P1"], alpha_A, alpha_L, standard, axis, False)
        if p.primary or axis != "N"
    )
    out = [_row("slope", f"{init.key} {init.spec.quantity}", init.hypotheses)]
    rates = {
        p.spec.estimator: p
        for p in planned_rows(
            ["conv-L" if axis == "L" else "P5" if axis == "H" else "P6"], alpha_A, alpha_L, standard, axis, True
        )
    }
    var = rates.get("seed-variance rate") or rates.get("paired block-draw variance")
    if var is None:
        return out
    e = var.hypotheses.exponent
    out.append(
        Row(
            "variance",
            f"{var.key} seed variance",
            (var.key, e),
            tuple((x.name, x.value) for x in var.hypotheses.alternatives),
            rate=e,
        )
    )
    bias = rates.get("bias rate") or rates.get("paired squared bias")
    assert bias is not None  # planned with the variance row
    out.append(_row("bias", f"{var.key} squared bias", bias.hypotheses, rate=e if e != 0 else -1.0))
    plateau = planned_rows([var.key], alpha_A, alpha_L, standard, axis, True)
    h = next((p.hypotheses for p in plateau if p.spec.estimator == "plateau"), None)
    if h is None:  # conv-L has no plateau row in the registry: the same hypotheses as P6's
        h = next(
            p.hypotheses
            for p in planned_rows(["P6"], 0.5 if e == 0 else 1.0, 1.0, False, "N", True)
            if p.spec.estimator == "plateau"
        )
    out.append(
        Row(
            "plateau",
            f"{var.key} plateau",
            (h.prediction.name, 0.0),
            tuple((x.name, 0.0) for x in h.alternatives),
            rate=-1.0,
        )
    )
    return out


# ---- simulation ----------------------------------------------------------------------------------------------


def _simulate(
    row: Row,
    truth_value: float | str,
    sizes: np.ndarray,
    seeds: int,
    noise: Noise,
    reps: int,
    rng: np.random.Generator,
    band: float | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lo, hi, band) per repetition of `row` under a truth: an exponent, or "plateau" / "converges"."""
    E, rho_e = noise.simulated()
    if row.kind == "slope":
        y = synthetic.positive(float(truth_value), noise.cv, sizes, seeds, rng, reps=reps, rho_sizes=noise.rho_sizes)
        m = estimators.moments(y[..., None], estimators.jackknife_weights(seeds))
        r = fit.fit_rows(sizes, m.mean[..., 0])
        return r.lo, r.hi, r.band if band is None else np.full(reps, band)
    if row.kind == "plateau":
        rate = 0.0 if truth_value == "plateau" else -1.0
        t = synthetic.Truth(
            rate=rate, bias=_bias_c(noise.bias, sizes, rate), rho_entries=rho_e, rho_sizes=noise.rho_sizes
        )
    elif row.kind == "bias":
        q = -float(truth_value) / 2
        t = synthetic.Truth(
            rate=row.rate,
            bias=_bias_c(noise.bias, sizes, row.rate, q),
            bias_order=q,
            rho_entries=rho_e,
            rho_sizes=noise.rho_sizes,
        )
    else:
        rate = float(truth_value)
        t = synthetic.Truth(
            rate=rate, bias=_bias_c(noise.bias, sizes, rate), rho_entries=rho_e, rho_sizes=noise.rho_sizes
        )
    qs = synthetic.sweep(t, sizes, seeds, E, rng, reps=reps)
    m = estimators.moments(qs, estimators.jackknife_weights(seeds))
    if row.kind == "plateau":
        v = estimators.seed_variance(m)
        ratio = estimators.plateau(v, sizes)
        lo, hi = fit.jackknife_interval(ratio[..., 0], ratio[..., 1:], 0.95)
        b = (
            fit.band_of(ratio[..., 0], estimators.plateau_local(v[..., 0, :], sizes))
            if band is None
            else np.full(reps, band)
        )
        return lo, hi, b
    x, y = estimators.row_estimate(m, sizes, row.kind)
    r = fit.fit_rows(x, y)
    return r.lo, r.hi, r.band if band is None else np.full(reps, band)


def _bias_c(ratio: float, sizes: np.ndarray, rate: float, order: float = 1.0) -> float:
    """The bias amplitude c (mean = c n^-order) whose RMS bias is `ratio` seed sds at the smallest size."""
    n0 = float(sizes[0])
    return ratio * n0 ** (rate / 2) * n0**order


def _consistent_rate(row: Row, lo, hi, band) -> float:
    """The fraction of repetitions the rule (`dmft.verdict.decide`) calls consistent."""
    hits = 0
    for a, b, w in zip(lo, hi, band):
        pred, alts = row.regions(float(w) if np.isfinite(w) else 0.0)  # no band: the slope is not fitted either
        hits += verdict.decide(float(a), float(b), pred, alts) == verdict.CONSISTENT
    return hits / len(lo)


@dataclass(frozen=True)
class RowPower:
    """The plan of one row: power (P(consistent | prediction true)), false_consistent ({alternative: P(consistent
    | that alternative true)}), seeds_needed (for power 0.8 at these sizes; None: not within MAX_SEEDS), and
    the geometry."""

    row: Row
    sizes: tuple[float, ...]
    seeds: int
    power: float
    false_consistent: dict[str, float] = field(default_factory=dict)
    seeds_needed: int | None = None
    searched: bool = False
    wider_needs: tuple = ()  # ((sizes, seeds), ...): the seeds for 0.8 with more sizes, when these cannot


def _power(
    row: Row, sizes: np.ndarray, seeds: int, noise: Noise, reps: int, rng: np.random.Generator, band: float | None
) -> float:
    truth = row.prediction[0] if row.kind == "plateau" else row.prediction[1]
    return _consistent_rate(row, *_simulate(row, truth, sizes, seeds, noise, reps, rng, band))


def row_power(
    row: Row, sizes, seeds: int, noise: Noise, reps: int = 1000, seed: int = 0, band: float | None = None
) -> RowPower:
    """Power and false-consistent rates of `row` at this geometry, by simulation (module docstring)."""
    sizes = np.asarray(sizes, dtype=float)
    rng = np.random.default_rng(seed)
    power = _power(row, sizes, seeds, noise, reps, rng, band)
    false = {}
    for name, value in row.alternatives:
        truth = name if row.kind == "plateau" else value
        false[name if row.kind == "plateau" else f"{value:+g}"] = _consistent_rate(
            row, *_simulate(row, truth, sizes, seeds, noise, reps, rng, band)
        )
    return RowPower(row, tuple(float(s) for s in sizes), int(seeds), power, false)


def seeds_needed(
    row: Row, sizes, noise: Noise, reps: int = 400, seed: int = 0, band: float | None = None, target: float = 0.8
) -> int | None:
    """The fewest seeds of SEED_STEPS whose power reaches `target` (a bisection: power grows with seeds), or
    None when MAX_SEEDS does not."""
    sizes = np.asarray(sizes, dtype=float)
    rng = np.random.default_rng(seed)
    steps = list(SEED_STEPS)
    if _power(row, sizes, steps[-1], noise, reps, rng, band) < target:
        return None
    lo, hi = -1, len(steps) - 1  # power(steps[hi]) >= target
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _power(row, sizes, steps[mid], noise, reps, rng, band) >= target:
            hi = mid
        else:
            lo = mid
    return steps[hi]


def wider(sizes, extra: int) -> np.ndarray:
    """`sizes` with `extra` more sizes, each the last times the last ratio (4, 8, 16, 32 -> 4, ..., 64)."""
    sizes = [float(s) for s in sizes]
    r = sizes[-1] / sizes[-2]
    for _ in range(extra):
        sizes.append(sizes[-1] * r)
    return np.asarray(sizes)


def plan(
    axis: str,
    sizes,
    seeds: int,
    noise: Noise,
    alpha_A: float,
    alpha_L: float,
    standard: bool = False,
    reps: int = 1000,
    seed: int = 0,
    band: float | None = None,
    search: bool = True,
) -> list[RowPower]:
    """Every row of `rows_for(axis, ...)` at this geometry (`row_power`). With search, a row whose power is below
    0.8 gets the seeds needed for 0.8 at these sizes (`seeds_needed`) and, when no number of seeds up to
    MAX_SEEDS does, at one or two more sizes (`wider`, in `wider_needs`)."""
    sizes = _check_geometry(sizes, seeds, reps)
    out = []
    for k, row in enumerate(rows_for(axis, alpha_A, alpha_L, standard)):
        r = row_power(row, sizes, seeds, noise, reps, seed + 100 * k, band)
        if search and r.power < 0.8:
            sub = max(200, reps // 4)
            need = seeds_needed(row, sizes, noise, sub, seed + 100 * k + 1, band)
            more = []
            for extra in (1, 2):
                if need is not None:
                    break
                w = wider(sizes, extra)
                s = seeds_needed(row, w, noise, sub, seed + 100 * k + 1 + extra, band)
                if s is not None:
                    more.append((tuple(float(x) for x in w), s))
                    break
            r = replace(r, seeds_needed=need, searched=True, wider_needs=tuple(more))
        elif search:
            r = replace(r, seeds_needed=seeds, searched=True)
        out.append(r)
    return out


def check_options(axis: str | None, sizes, seeds: int | None, reps: int, band: float | None) -> None:
    """ValueError naming the option for a given value that `plan` would refuse (None: not given)."""
    if axis is not None and axis not in ("N", "H", "L"):
        raise ValueError(f"--axis must be N, H or L, got {axis!r}")
    if band is not None and not (np.isfinite(band) and band >= 0):
        raise ValueError(f"--band must be a number >= 0, got {band!r}")
    _check_geometry([1.0, 2.0, 3.0] if sizes is None else sizes, 2 if seeds is None else seeds, reps)


def _check_geometry(sizes, seeds: int, reps: int) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=float)
    if sizes.ndim != 1 or len(sizes) < 3 or np.any(sizes <= 0) or np.any(np.diff(sizes) <= 0):
        raise ValueError(
            f"--sizes must be at least 3 increasing positive sizes, got {', '.join(f'{x:g}' for x in sizes)}"
        )
    if not (isinstance(seeds, (int, np.integer)) and 2 <= seeds <= MAX_SEEDS):
        raise ValueError(f"--seeds must be an integer in [2, {MAX_SEEDS}], got {seeds!r}")
    if not (isinstance(reps, (int, np.integer)) and 100 <= reps <= 100000):
        raise ValueError(f"--reps must be an integer in [100, 100000], got {reps!r}")
    return sizes


def lines(plans: list[RowPower]) -> list[str]:
    """The plan as a plain-text table: row, hypotheses, power, consistent when an alternative is true, seeds
    needed for power 0.8."""
    head = ("row", "kind", "hypotheses", "power", "consistent if alternative true", "seeds for power 0.8")
    rows = []
    for r in plans:
        false = ", ".join(f"{k}: {v:.2f}" for k, v in r.false_consistent.items())
        if not r.searched:
            need = "-"
        elif r.seeds_needed is None:
            need = f"more than {MAX_SEEDS} at these sizes" + "".join(
                f"; {s} with sizes {', '.join(f'{x:g}' for x in w)}" for w, s in r.wider_needs
            )
        else:
            need = str(r.seeds_needed)
        rows.append((r.row.name, r.row.kind, r.row.hypotheses_text(), f"{r.power:.2f}", false, need))
    widths = [max(len(str(x[i])) for x in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*x) for x in rows]


# ---- noise from a sweep -------------------------------------------------------------------------------------------


def noise_from(ds: xr.Dataset, quantity: str = "probe_outputs", step: int | None = None, cv: float = 0.2) -> Noise:
    """The noise of `quantity` in a sweep dataset at `step` (None: the last): entries, their mean correlation
    (from the variance of the entry mean of one seed's deviation from its size's seed mean), the correlation of
    one seed's deviations across sizes (mean over size pairs), and the bias/sd at the smallest size (from the
    noise-corrected difference of the two smallest sizes' seed means; 0 when not resolved). cv is passed through
    (it belongs to another quantity). ValueError naming --from / --quantity / --step when the dataset cannot give
    them."""
    from .convergence import _prepare, _select, _step, _step_index

    try:
        sel = _select(ds, quantity, None, None, None)
    except ValueError as e:
        raise ValueError(f"--from: {str(e).splitlines()[0]}") from None
    p = _prepare(sel)
    if len(p.sizes) < 3 or p.usable.sum(axis=1).min() < 2:
        raise ValueError(f"--from: {quantity} needs 3 sizes with 2 or more usable seeds to measure its noise")
    try:
        t = _step_index(p.steps, step)
    except ValueError as e:
        raise ValueError(f"--step: {e}") from None
    st = _step(p, t)
    if st is None or st.constant:
        raise ValueError(f"--from: {quantity} at step {int(p.steps[t])} has no seed-to-seed spread to measure")
    m = st.m
    v = estimators.seed_variance(m)[0]
    cov = m.cov[0]
    k = len(v)
    corr = [cov[i, j] / np.sqrt(v[i] * v[j]) for i in range(k) for j in range(i + 1, k)]
    rho_n = float(np.clip(np.nanmean(corr), 0.0, 0.95))
    x = p.sel.da.values[:, :, t][p.size_idx][:, p.seed_idx]
    x = x.reshape(x.shape[0], x.shape[1], -1)
    x = np.where(p.usable[..., None], x, np.nan)
    x = x[..., np.isfinite(x[p.usable]).all(axis=0)]
    E = x.shape[-1]
    dev = x - np.nanmean(x, axis=1, keepdims=True)
    dof = p.usable.sum(axis=1) - 1
    var_mean = np.nansum(np.nanmean(dev, axis=2) ** 2, axis=1) / dof  # per size: Var of the entry mean
    rho_e = float(np.clip(np.mean((E * var_mean / v - 1) / (E - 1)), 0.0, 0.95)) if E > 1 else 0.0
    _, b = estimators.bias_pairs(m, p.sizes)
    bias = (
        float(np.sqrt(b[0, 0]) * np.sqrt(p.sizes[0] * p.sizes[1]) / p.sizes[0] / np.sqrt(v[0])) if b[0, 0] > 0 else 0.0
    )
    return Noise(
        int(E),
        round(rho_e, 3),
        round(rho_n, 3),
        cv,
        round(min(bias, 100.0), 3),
        f"measured: {quantity} at step {int(p.steps[t])}",
    )


def resolve_noise(measured: Noise | None, **given) -> Noise:
    """The noise to plan with: the measured one (or the defaults) with every option the user gave (not None)
    replacing its value; source says which."""
    base = measured or Noise()
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return base
    source = (base.source + "; " if measured else "") + "given: " + ", ".join(sorted(given))
    return replace(base, source=source, **given)

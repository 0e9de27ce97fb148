"""One verdict type, one decision rule and one renderer for every claim dmft-probe checks.

A verdict sets an estimate with its confidence interval [lo, hi] (at `level`) against named hypotheses. Each
hypothesis is a `Region`: the set of values of the estimate that the hypothesis allows, e.g. an exponent -1 with a
band of half-width 0.12 is the region [-1.12, -0.88]; "the loss falls with H" is (-inf, -band). Every verdict names
its prediction and the alternatives that matter (a rate -1 against no convergence 0; a CLT exponent against the
Fig. 2b caption's; "transfers" against SP's shift).

The rule (docs/predictions.md, "The verdict rule"), applied by `decide` and by nothing else:

- **consistent** (✓): the interval lies inside the prediction's region and is disjoint from every alternative's;
- **refuted** (✗): the interval is disjoint from the prediction's region;
- **underpowered** (?): anything else: the data cannot yet tell the prediction from an alternative (or from its
  own band's edge). `needs_text` says how many seeds would decide it if the estimate stayed where it is;
- **not measured** (-): no estimate (fewer than 3 usable sizes, every point diverged, a missing dataset).

A wider interval can only move a row from ✓ or ✗ towards "underpowered", never the other way: the rule cannot be
passed by being imprecise. The band's half-width is part of each hypothesis and is printed with the row
(`band`, `band_source`): derived per row from the fit's own next-order term (`dmft.fit`), or a stated margin of an
equivalence test, or given by the user; never a silent constant.

Renderers: `lines` (plain text, every row), `markdown` (the P1-P12 summary: each prediction's primary row, its
secondary rows listed and not counted), `headline` (counts over primary rows, failures named) and `to_dataset`
(an xarray Dataset along `row`, for CSV and netCDF).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import xarray as xr

__all__ = [
    "MARKS",
    "OUTCOMES",
    "Region",
    "Verdict",
    "above",
    "below",
    "between",
    "decide",
    "headline",
    "lines",
    "markdown",
    "needs_text",
    "point",
    "to_dataset",
]

CONSISTENT, REFUTED, UNDERPOWERED, NOT_MEASURED = "consistent", "refuted", "underpowered", "not measured"
OUTCOMES = (CONSISTENT, REFUTED, UNDERPOWERED, NOT_MEASURED)
MARKS = {CONSISTENT: "✓", REFUTED: "✗", UNDERPOWERED: "?", NOT_MEASURED: "-"}


@dataclass(frozen=True)
class Region:
    """A hypothesis: the closed set [lo, hi] of values of the estimate it allows (lo or hi may be infinite), and its
    name as printed ("N^-1 (CLT)", "no convergence", "falls with H")."""

    name: str
    lo: float
    hi: float

    def __post_init__(self) -> None:
        if not (self.lo <= self.hi):
            raise ValueError(f"region {self.name!r}: lo {self.lo} must be <= hi {self.hi}")

    def contains(self, lo: float, hi: float) -> bool:
        """[lo, hi] lies inside the region."""
        return self.lo <= lo and hi <= self.hi

    def disjoint(self, lo: float, hi: float) -> bool:
        """[lo, hi] and the region share no value."""
        return hi < self.lo or lo > self.hi

    def distance(self, x: float) -> float:
        """How far x lies from the region (0 inside it)."""
        return max(self.lo - x, x - self.hi, 0.0)

    def text(self) -> str:
        """ "-1 +- 0.12", "< -0.05", "> 0.1" or "[a, b]"."""
        if math.isinf(self.lo) and math.isinf(self.hi):
            return "any"
        if math.isinf(self.lo):
            return f"<= {self.hi:+.3g}"
        if math.isinf(self.hi):
            return f">= {self.lo:+.3g}"
        centre, half = (self.lo + self.hi) / 2, (self.hi - self.lo) / 2
        return f"{centre:+.3g} ± {half:.2g}"


def point(name: str, value: float, band: float) -> Region:
    """The region of a point prediction `value` with a band of half-width `band` (>= 0)."""
    if not band >= 0:
        raise ValueError(f"band must be >= 0, got {band}")
    return Region(name, value - band, value + band)


def below(name: str, x: float) -> Region:
    """(-oo, x]: e.g. "alpha_L = 1 ends lower" for a loss difference, x = -margin."""
    return Region(name, -math.inf, x)


def above(name: str, x: float) -> Region:
    """[x, +oo)."""
    return Region(name, x, math.inf)


def between(name: str, lo: float, hi: float) -> Region:
    return Region(name, lo, hi)


def decide(lo: float, hi: float, prediction: Region, alternatives: Sequence[Region] = ()) -> str:
    """The outcome of an interval [lo, hi] (module docstring): consistent, refuted, underpowered, or not measured
    when the interval is not a pair of numbers with lo <= hi (NaN: nothing was fitted)."""
    if not (lo <= hi):  # NaN anywhere, or an empty interval
        return NOT_MEASURED
    if prediction.disjoint(lo, hi):
        return REFUTED
    if prediction.contains(lo, hi) and all(a.disjoint(lo, hi) for a in alternatives):
        return CONSISTENT
    return UNDERPOWERED


@dataclass(frozen=True)
class Verdict:
    """One row of any verdict table.

    key: the prediction (P1..P12, conv-L, coord, or a coordinate-check site); row: what was measured, e.g.
    "Var_seed f @300" or "q change @10"; primary: the row that carries the prediction's verdict (declared before any
    data in `dmft.predictions`); secondary rows are listed and not counted. quantity, axis, setting (the
    parametrization and optimizer, or two of them for a comparison), estimator (what the estimate is: "slope of the
    seed variance", "plateau v_inf / v(n_min)", ...). estimate, lo, hi: the estimate and its interval at `level`
    (units of the estimate: exponents are dimensionless). prediction, alternatives: the hypotheses. band,
    band_source: the half-width used in the hypotheses' regions and how it was obtained. outcome: `decide`'s.
    power: the planned probability that this row comes out consistent when the prediction is true (`dmft.power`;
    NaN when not planned). needs: for an underpowered row, what would decide it. local: local slopes between
    adjacent sizes (slope rows). n_sizes, n_seeds: the data behind the estimate. diverged, diverged_points: points
    left out because they diverged. dataset: the file(s) measured."""

    key: str
    row: str
    quantity: str
    axis: str
    setting: str
    estimator: str
    estimate: float
    lo: float
    hi: float
    prediction: Region
    alternatives: tuple[Region, ...] = ()
    band: float = math.nan
    band_source: str = ""
    level: float = 0.95
    primary: bool = False
    outcome: str = ""
    power: float = math.nan
    needs: str = ""
    local: tuple[float, ...] = ()
    n_sizes: int = 0
    n_seeds: int = 0
    note: str = ""
    dataset: str = ""
    diverged: int = 0
    diverged_points: str = ""

    def __post_init__(self) -> None:
        if not self.outcome:  # decided here unless given (not measured)
            object.__setattr__(self, "outcome", decide(self.lo, self.hi, self.prediction, self.alternatives))
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, got {self.outcome!r}")
        if self.outcome == UNDERPOWERED and not self.needs:
            object.__setattr__(self, "needs", needs_text(self))

    @property
    def consistent(self) -> bool:
        return self.outcome == CONSISTENT

    @property
    def mark(self) -> str:
        return MARKS[self.outcome]

    def measured(self) -> str:
        """ "-0.98 [-1.10, -0.87]", or "not measured" without an estimate."""
        if not np.isfinite(self.estimate):
            return "not measured"
        if not (self.lo <= self.hi):
            return f"{self.estimate:+.3g} (no interval)"
        return f"{self.estimate:+.3g} [{self.lo:+.3g}, {self.hi:+.3g}]"

    def hypotheses_text(self) -> str:
        alts = "; ".join(f"{a.name}: {a.text()}" for a in self.alternatives)
        return f"{self.prediction.name}: {self.prediction.text()}" + (f" (against {alts})" if alts else "")


def needs_text(v: Verdict) -> str:
    """For an underpowered row: how many seeds would decide it if the estimate stayed where it is (the interval
    shrinks as 1/sqrt(seeds)), or why no number of seeds would (the hypotheses' regions overlap at the estimate)."""
    if not np.isfinite(v.estimate) or not (v.lo <= v.hi):
        return ""
    half = max(v.estimate - v.lo, v.hi - v.estimate)
    if half <= 0:
        return ""
    if math.isinf(half):  # a jackknife replicate was not resolved (dmft.fit.jackknife_interval)
        return (
            "the interval is unbounded: without one of the seeds the estimate is not resolved above the "
            "noise; more seeds would bound it"
        )
    c = v.estimate
    inside = v.prediction.distance(c) == 0
    if inside:  # consistent once the interval fits inside the prediction and clears every alternative
        room = min(c - v.prediction.lo, v.prediction.hi - c, *[a.distance(c) for a in v.alternatives])
        goal = "consistent"
    else:  # refuted once the interval clears the prediction
        room, goal = v.prediction.distance(c), "refuted"
    if room <= 0:
        return (
            "the estimate sits where the prediction and an alternative overlap: a wider size range (a narrower "
            "band) would decide it, not more seeds"
        )
    factor = (half / room) ** 2
    if v.n_seeds:
        return (
            f"about {math.ceil(v.n_seeds * factor)} seeds (now {v.n_seeds}) would make it {goal} if the estimate stays"
        )
    return f"an interval {factor:.2g} times narrower in variance would make it {goal} if the estimate stays"


# ----------------------------------------------------------------------------------------------- renderers


def _band_text(v: Verdict) -> str:
    if not np.isfinite(v.band):
        return "-"
    return f"{v.band:.2g}" + (f" ({v.band_source})" if v.band_source else "")


def lines(verdicts: Iterable[Verdict], notes: bool = True) -> list[str]:
    """Plain-text table of every row: key, row, setting, axis, hypotheses, measured [CI], band, outcome (primary rows
    marked *), diverged points when any; then one note line per row that has a note, a need or left points out."""
    vs = list(verdicts)
    head: tuple[str, ...] = ("pred", "row", "setting", "axis", "hypotheses", "measured [CI]", "band", "verdict")
    rows: list[tuple[str, ...]] = [
        (
            ("*" if v.primary else " ") + v.key,
            v.row,
            v.setting,
            v.axis,
            v.hypotheses_text(),
            v.measured(),
            _band_text(v),
            f"{v.mark} {v.outcome}",
        )
        for v in vs
    ]
    if any(v.diverged for v in vs):
        head += ("diverged",)
        rows = [(*r, str(v.diverged)) for r, v in zip(rows, vs)]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows]
    if notes:
        for v in vs:
            extra = [
                t
                for t in (
                    v.note,
                    v.needs and f"needs: {v.needs}",
                    v.diverged_points,
                    v.local and "local slopes " + ", ".join(f"{s:+.2f}" for s in v.local),
                )
                if t
            ]
            if extra:
                out.append(f"  {v.key} {v.row}: " + "; ".join(extra))
    return out


def headline(verdicts: Iterable[Verdict]) -> str:
    """Counts over the primary rows, failures and underpowered rows named: "primary rows: 9 ✓, 2 ✗ (P2 mup N, conv-L
    mup L), 3 underpowered (P5 mup H, ...), 0 not measured"."""
    prim = [v for v in verdicts if v.primary]

    def named(outcome: str) -> str:
        vs = [v for v in prim if v.outcome == outcome]
        who = ", ".join(f"{v.key} {v.setting} {v.axis}" for v in vs)
        return f"{len(vs)} {MARKS[outcome]} {outcome}" + (f" ({who})" if vs and outcome != CONSISTENT else "")

    return f"{len(prim)} primary rows: " + ", ".join(named(o) for o in OUTCOMES)


def markdown(
    verdicts: Iterable[Verdict], claims: dict[str, str] | None = None, order: Sequence[str] | None = None
) -> str:
    """The summary table: per prediction key (in `order`, else first appearance) and setting, the primary row's
    hypotheses, measurement, band and verdict, with the secondary rows (not counted) listed in the last column.
    claims: {key: one-line claim}."""
    vs = list(verdicts)
    keys = list(order) if order is not None else list(dict.fromkeys(v.key for v in vs))
    out = [
        "| P | claim | setting | hypotheses | primary: measured [95% CI] | band | verdict | secondary rows (not counted) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        group = [v for v in vs if v.key == key]
        claim = (claims or {}).get(key, "")
        if not group:
            continue
        settings = list(dict.fromkeys((v.setting, v.axis) for v in group))
        for n, (setting, axis) in enumerate(settings):
            rows = [v for v in group if (v.setting, v.axis) == (setting, axis)]
            prim = next((v for v in rows if v.primary), None)
            sec = "; ".join(f"{v.row}: {v.measured()} {v.mark}" for v in rows if v is not prim)
            if prim is None:
                cells = ("-", "-", "-", "no primary row")
            else:
                planned = f" (planned power {prim.power:.2f})" if np.isfinite(prim.power) else ""
                cells = (
                    prim.hypotheses_text(),
                    f"{prim.row}: {prim.measured()}",
                    _band_text(prim),
                    f"{prim.mark} {prim.outcome}{planned}" + (f"; needs {prim.needs}" if prim.needs else ""),
                )
            row = (key if n == 0 else "", claim if n == 0 else "", f"{setting}, {axis}", *cells, sec or "-")
            out.append("| " + " | ".join(str(c).replace("|", "/") for c in row) + " |")
    return "\n".join(out) + "\n"


def to_dataset(verdicts: Iterable[Verdict]) -> xr.Dataset:
    """The rows as an xarray Dataset along `row_index` (one variable per field; regions as name/lo/hi columns and
    the alternatives as one text column), for `.to_dataframe().to_csv()` and netCDF."""
    vs = list(verdicts)
    if not vs:
        raise ValueError("no verdicts to write")
    cols: dict[str, list] = {}
    for v in vs:
        d = asdict(v)
        pred = d.pop("prediction")
        alts = d.pop("alternatives")
        d["local"] = " ".join(f"{s:.4g}" for s in v.local)
        d.update(
            prediction=pred["name"],
            prediction_lo=pred["lo"],
            prediction_hi=pred["hi"],
            alternatives="; ".join(f"{a['name']}: [{a['lo']:.4g}, {a['hi']:.4g}]" for a in alts),
            consistent=int(v.consistent),
        )
        for k, x in d.items():
            cols.setdefault(k, []).append(x)
    data = {k: ("row_index", np.asarray(x)) for k, x in cols.items()}
    return xr.Dataset(data, coords={"row_index": np.arange(len(vs))}, attrs={"title": "dmft-probe verdicts"})


def field_names() -> list[str]:
    """The Verdict fields, in order (the columns of `to_dataset` before the flattened regions)."""
    return [f.name for f in fields(Verdict)]


def with_outcome(v: Verdict, outcome: str, why: str = "") -> Verdict:
    """v with an outcome set by the caller for a reason the interval cannot carry (e.g. "underpowered": planned
    power below 0.8, or a P7 optimum with bootstrap support < 0.9), the reason added to the note."""
    note = "; ".join(t for t in (v.note, why) if t)
    return replace(v, outcome=outcome, note=note, needs=v.needs if outcome == UNDERPOWERED else "")

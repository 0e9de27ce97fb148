"""The registry of predictions (docs/predictions.md, "How each prediction is checked"), declared before any data.

One `Entry` per prediction P1..P12, conv-L and the coordinate check: the claim (one line, with the paper's figure
or section), the rows it is measured by (`RowSpec`: quantity, probe step, estimator), which of them is PRIMARY
(exactly one per prediction and sweep; its verdict is the prediction's headline, the others are listed under it
and not counted), and the hypotheses of each row (`Hypotheses`: the prediction and the alternatives that matter)
as functions of (alpha_A, alpha_L, standard, axis). Nothing here is a tolerance: a hypothesis is a value and a
shape, and its region's half-width (the band) comes from the fit (`dmft.fit.band_of` the local slopes) or is a
stated margin printed with the row (P3, P9: the sign of a difference, band 0; P12: the equivalence margin
`P12_DELTA`). `dmft.check`, `dmft.report`, `dmft.compare`, `dmft.power` and `dmft.coord` read the registry; none
keeps its own list of predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from .verdict import Region, above, below, point

POINT, ABOVE, BELOW = "point", "above", "below"


@dataclass(frozen=True)
class Hypothesis:
    """One hypothesis of a row: its printed name, a value and a shape. With a band b its region is [value - b,
    value + b] ("point"), [value + b, +oo) ("above") or (-oo, value - b] ("below")."""

    name: str
    value: float
    shape: str = POINT

    def region(self, band: float) -> Region:
        """The set of estimates this hypothesis allows with half-width `band`."""
        if self.shape == ABOVE:
            return above(self.name, self.value + band)
        if self.shape == BELOW:
            return below(self.name, self.value - band)
        return point(self.name, self.value, band)


@dataclass(frozen=True)
class Hypotheses:
    """A row's prediction and alternatives (`Hypothesis`); `exponent` is the prediction's value."""

    prediction: Hypothesis
    alternatives: tuple[Hypothesis, ...] = ()
    note: str = ""
    key: str = ""

    @property
    def exponent(self) -> float:
        return self.prediction.value

    def regions(self, band: float) -> tuple[Region, tuple[Region, ...]]:
        """(the prediction's region, the alternatives' regions) with half-width `band`."""
        return self.prediction.region(band), tuple(a.region(band) for a in self.alternatives)


@dataclass(frozen=True)
class RowSpec:
    """A row a prediction is measured by. name: as printed ("Var_h A(0)", "Var_seed f"); quantity: a dataset
    quantity (`dmft.measure.QUANTITIES`, `dmft.convergence.CONVERGENCE_QUANTITIES`, `dmft.depth`); step: "init"
    (step 0) or "last" (the last probe step); estimator: what the estimate is; axes: the sweep axes it applies to."""

    name: str
    quantity: str
    step: str
    estimator: str
    axes: tuple[str, ...] = ("N", "H", "L")


@dataclass(frozen=True)
class Entry:
    """One prediction: key, claim (one line with the paper's figure or section), needs (the data it needs),
    rows, hypotheses(row, alpha_A, alpha_L, standard, axis) -> Hypotheses or None (the row does not apply), and
    primary(alpha_A, alpha_L, standard, axis) -> the name of the primary row (default: the first row)."""

    key: str
    claim: str
    needs: str
    rows: tuple[RowSpec, ...]
    hypotheses: Callable[..., Hypotheses | None]
    primary: Callable[..., str] | None = None
    trained: bool = False
    band: str = "local slopes"

    def primary_row(self, alpha_A: float, alpha_L: float, standard: bool, axis: str) -> str:
        """The name of the row whose verdict is this prediction's headline on a sweep along `axis`."""
        return self.primary(alpha_A, alpha_L, standard, axis) if self.primary else self.rows[0].name

    def row(self, name: str) -> RowSpec:
        return next(r for r in self.rows if r.name == name)


def _pt(name: str, value: float) -> Hypothesis:
    return Hypothesis(name, float(value))


def _others(e: float, step: float, names: tuple[str, str] = ("", "")) -> tuple[Hypothesis, ...]:
    """The alternatives e + step and e - step (the neighbouring exponents that matter)."""
    lo, hi = names
    return (_pt(hi or f"{e + step:+g}", e + step), _pt(lo or f"{e - step:+g}", e - step))


# ---- P1 ------------------------------------------------------------------------------------------------------


def p1_exponent(alpha_A: float, axis: str) -> float:
    """P1: Var over heads of A(0) = N^(1 - 2 alpha_A) exactly in expectation (q, k coordinates are N(0, 1) over the
    weight law because |LN(h)|^2 = d), independent of H and L."""
    return 1.0 - 2.0 * alpha_A if axis == "N" else 0.0


def _p1(row: RowSpec, alpha_A: float, alpha_L: float, standard: bool, axis: str) -> Hypotheses | None:
    e = p1_exponent(alpha_A, axis)
    return Hypotheses(
        _pt(f"N^{e:+g}" if axis == "N" else "flat", e),
        _others(e, 1.0),
        "Var_h A(0) = N^(1-2 alpha_A), prefactor 1 (LN inputs)",
    )


# ---- P2 ------------------------------------------------------------------------------------------------------


def p2_hypotheses(alpha_A: float) -> Hypotheses:
    """P2 (docs/predictions.md, P2): the prediction is the CLT exponent N^(1-2 alpha_A) of Var_h A and
    Var_h (A - A(0)) at fixed t; the Fig. 2b caption's N^-2, generalised as N^(2(1-2 alpha_A)), is an
    ALTERNATIVE, as is "no decay" (0) where the CLT predicts one. At alpha_A = 1/2 both are 0 and the alternative
    is the CLT decay of alpha_A = 1 (-1)."""
    e = 1.0 - 2.0 * alpha_A
    pred = _pt("CLT N^(1-2alpha_A)", e)
    if e == 0:
        return Hypotheses(pred, (_pt("decays N^-1", -1.0),), "alpha_A = 1/2: head diversity survives (flat)")
    return Hypotheses(
        pred,
        (_pt("caption N^(2(1-2alpha_A))", 2 * e), _pt("no decay", 0.0)),
        f"alpha_A = {alpha_A:g}: CLT N^{e:+g}; the caption's N^{2 * e:+g} is an alternative",
    )


def _p2(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    return p2_hypotheses(alpha_A) if axis == "N" else None


# ---- P3 ------------------------------------------------------------------------------------------------------


def _p3(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    return Hypotheses(
        Hypothesis("variance-gamma fits better", 0.0, ABOVE),
        (Hypothesis("Gaussian fits as well", 0.0, BELOW),),
        "mean log-likelihood ratio of A(0) under variance-gamma(N) against the Gaussian of the same "
        "variance (nats per value), pooled over sizes, t interval over (seed, layer, head) clusters",
    )


# ---- P4, P10, P8 -----------------------------------------------------------------------------------------------


def _p4(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    if axis != "H":
        return None
    return Hypotheses(
        _pt("H^-1", -1.0), (_pt("no concentration", 0.0),), "MSE(K(0) - K_inf) ~ H^-1 against the solver's H->oo limit"
    )


def p10_exponent(alpha_L: float, standard: bool) -> float:
    """P10: growth of the residual stream over depth at init, |h^L|^2/d - |h^0|^2/d = sum of L independent branch
    variances, each (beta0 L^-alpha_L)^2 -> L^(1 - 2 alpha_L); SP (no depth factor) grows ~ L."""
    return 1.0 - 2.0 * (0.0 if standard else alpha_L)


def _p10(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    if axis != "L":
        return None
    e = p10_exponent(alpha_L, standard)
    return Hypotheses(_pt(f"L^{e:+g}", e), _others(e, 1.0), "|h^L|^2/d - |h^0|^2/d ~ L^(1 - 2 alpha_L)")


def p8_exponent(alpha_L: float, standard: bool) -> float:
    """P8: relative movement of W_Q, W_K per layer vs L, L^(alpha_L - 1) (Table 1 counting: SGD and Adam move a
    hidden entry by O(d^-1/2 l^(alpha_L - 1)) relative to O(1) entries)."""
    return (0.0 if standard else alpha_L) - 1.0


def _p8(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    if axis != "L":
        return None
    e = p8_exponent(alpha_L, standard)
    return Hypotheses(_pt(f"L^{e:+g}", e), _others(e, 0.5), "||W_QK(t)-W_QK(0)||/||W_QK(0)|| ~ L^(alpha_L - 1)")


# ---- coordinate check --------------------------------------------------------------------------------------------


def _coord(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    if axis not in ("N", "H"):
        return None
    if standard:
        return Hypotheses(
            Hypothesis("grows with width (SP)", 0.0, ABOVE),
            (_pt("O(1) (muP)", 0.0),),
            "SP, the negative control: feature updates grow with width",
        )
    return Hypotheses(_pt("O(1)", 0.0), _others(0.0, 0.5), "muP: feature updates invariant")


# The next-order term the coordinate check's band covers: c n^-1 (dmft.fit.band_with_correction). A site's RMS
# approaches its power law with a 1/n correction on all three axes: the softmax tends to uniform as 1 + c/N at init
# (A ~ N^-1/2, its square ~ 1/N), an average over H heads carries 1/H corrections, and the depth limit is an Euler
# discretisation with O(1/L) error.
COORD_CORRECTION = 1.0


def coord_hypotheses(expected: float) -> Hypotheses:
    """A coordinate-check site's row: its expected exponent e against e - 1/2 and e + 1/2."""
    return Hypotheses(_pt(f"{expected:+g}", expected), _others(expected, 0.5))


# ---- trained rates: P5, P6, conv-L -------------------------------------------------------------------------------


def rate_exponent(alpha_A: float, alpha_L: float, standard: bool, axis: str) -> float | None:
    """The exponent of the seed variance (and mean-square distance from the limit) of a trained quantity along
    `axis`: H^-1 (heads i.i.d. at fixed N); N^-1 for alpha_A > 1/2, 0 (no convergence) at alpha_A = 1/2; along L
    the variance over block draws at fixed embedding and readout, L^-1 at alpha_L = 1, flat at 1/2. None where no
    limit is predicted (SP) or no rate is derived."""
    if standard:
        return None
    if axis == "H":
        return -1.0
    if axis == "N":
        return -1.0 if alpha_A > 0.5 else 0.0
    if axis == "L" and alpha_L in (1.0, 0.5):
        return -1.0 if alpha_L == 1.0 else 0.0
    return None


RATE_NOTES = {
    "H": "heads are i.i.d. units at fixed N: the trained quantities average H heads, variance ~ H^-1",
    "N>": "alpha_A > 1/2: A -> its mean, every head alike: a mean-field average over d = N H coordinates, ~ N^-1",
    "N=": "alpha_A = 1/2: H random attention matrices whose law does not concentrate in N: no convergence",
    "L1": "alpha_L = 1: L branches of size 1/L, Euler steps of a depth ODE: variance over block draws 1/(N L)",
    "L.5": "alpha_L = 1/2: L branches of size L^-1/2 add an O(1) Brownian motion in layer time: flat",
}


def _rate_note(alpha_A: float, alpha_L: float, axis: str) -> str:
    if axis == "H":
        return RATE_NOTES["H"]
    if axis == "N":
        return RATE_NOTES["N>" if alpha_A > 0.5 else "N="]
    return RATE_NOTES["L1" if alpha_L == 1.0 else "L.5"]


def _rate(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    e = rate_exponent(alpha_A, alpha_L, standard, axis)
    if e is None:
        return None
    note = _rate_note(alpha_A, alpha_L, axis)
    if row.estimator.endswith("squared bias") or row.estimator == "bias rate":
        return Hypotheses(_pt("1/n bias", -2.0), (_pt("n^-1/2 bias", -1.0),), "bias amplitude O(1/n): squared -2")
    if row.estimator == "plateau":
        plateau = Hypothesis("plateau", 0.0, ABOVE)
        converges = _pt("converges", 0.0)
        return Hypotheses(plateau, (converges,), note) if e == 0 else Hypotheses(converges, (plateau,), note)
    alt = _pt("no convergence", 0.0) if e != 0 else _pt("converges n^-1", -1.0)
    return Hypotheses(_pt(f"n^{e:+g}" if e else "no convergence (flat)", e), (alt,), note)


def trained_rate(alpha_A: float, alpha_L: float, standard: bool, axis: str) -> Hypotheses | None:
    """The hypotheses of the seed-variance rate of a trained quantity along `axis` (`rate_exponent`), with the
    prediction's key (P5, P6, conv-L), or None."""
    h = _rate(RowSpec("", "", "last", "seed-variance rate"), alpha_A, alpha_L, standard, axis)
    if h is None:
        return None
    return replace(h, key={"H": "P5", "N": "P6", "L": "conv-L"}[axis])


def _p56_primary(alpha_A, alpha_L, standard, axis) -> str:
    return "plateau f" if axis == "N" and alpha_A <= 0.5 else "Var_seed f"


def _trained_rows(axis: str) -> tuple[RowSpec, ...]:
    ax = (axis,)
    return (
        RowSpec("Var_seed f", "probe_outputs", "last", "seed-variance rate", ax),
        RowSpec("Var_seed loss", "heldout_loss", "last", "seed-variance rate", ax),
        RowSpec("bias² f", "probe_outputs", "last", "bias rate", ax),
        RowSpec("plateau f", "probe_outputs", "last", "plateau", ax),
        RowSpec("dist K", "kernel_pooled", "last", "distance rate", ax),
        RowSpec("dist f", "probe_outputs", "last", "distance rate", ax),
    )


# ---- P7, P9, P11, P12 --------------------------------------------------------------------------------------------


def _p7(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    if standard:
        return Hypotheses(_pt("SP shifts (-1)", -1.0), (_pt("transfers (0)", 0.0),), "SP, the control")
    return Hypotheses(_pt("transfers (0)", 0.0), (_pt("SP shift (-1)", -1.0),), "Table 1 rules: eta0* fixed")


P9_NOTE = (
    "Fig. 5b: at fixed N, H and equal compute (equal L, params and steps), alpha_L = 1 reaches a lower loss "
    "than alpha_L = 1/2 at large L, because alpha_L = 1/2 freezes the weights inside each block as L grows "
    "(P8)"
)


def _p9(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    return Hypotheses(Hypothesis("alpha_L = 1 lower", 0.0, BELOW), (Hypothesis("no gain", 0.0, ABOVE),), P9_NOTE)


P11_NOTE = (
    "Fig. 6a (ViT): the dynamics are similar across H, the final loss flat in H; Fig. 7a (C4): the loss "
    "improves with H. Both are named; the data favour one, or neither"
)


def p11_hypotheses(task: str = "vision") -> Hypotheses:
    """P11's two hypotheses on the slope of log(final loss) against log H: "flat" (Fig. 6a, the ViT) and "falls"
    (Fig. 7a, C4). The prediction is the figure of the task's setting (vision: Fig. 6a; lm: Fig. 7a); the other
    is the alternative."""
    flat, falls = _pt("flat (Fig. 6a)", 0.0), Hypothesis("falls (Fig. 7a)", 0.0, BELOW)
    return Hypotheses(falls, (flat,), P11_NOTE) if task == "lm" else Hypotheses(flat, (falls,), P11_NOTE)


def _p11(row, alpha_A, alpha_L, standard, axis, task: str = "vision") -> Hypotheses | None:
    return p11_hypotheses(task) if axis == "H" else None


P12_NOTE = (
    "Fig. 7c: the trained kernels are the same for alpha_A = 1 and 1/2 (their difference is within the "
    "seed noise) except a slight difference at large N"
)
# P12's equivalence margin: the relative Frobenius difference |K(1) - K(1/2)| / |K(1/2)| of the seed-mean trained
# kernels that still counts as "the same". 0.1: a 10% change of a kernel entry is the smallest difference Fig. 7c
# would show as two distinct curves (its panels span about one order of magnitude linearly), and it is well above
# the round-off of two runs that share every draw (a paired seed gives both alpha_A the same random numbers).
P12_DELTA = 0.1
P12_LEVEL = 0.90


def _p12(row, alpha_A, alpha_L, standard, axis) -> Hypotheses | None:
    return Hypotheses(
        _pt(f"equal within delta = {P12_DELTA:g}", 0.0),
        (Hypothesis(f"differ by more than {P12_DELTA:g}", 0.0, ABOVE),),
        P12_NOTE,
    )


# ---- the registry ---------------------------------------------------------------------------------------------

REGISTRY: dict[str, Entry] = {
    e.key: e
    for e in (
        Entry(
            "P1",
            "Var over heads of A(0) ~ N^(1-2 alpha_A), flat in H and L (Fig. 3c)",
            "any sweep (step 0)",
            (
                RowSpec("Var_h A(0)", "attn_var_init", "init", "slope of the seed mean", ("N",)),
                RowSpec("Var_h A(0) flat", "attn_var_init", "init", "slope of the seed mean", ("H", "L")),
            ),
            _p1,
            lambda a, l, s, axis: "Var_h A(0)" if axis == "N" else "Var_h A(0) flat",
        ),
        Entry(
            "P2",
            "Var over heads of A after training ~ N^(1-2 alpha_A) (CLT; Fig. 2b)",
            "a trained N sweep",
            (
                RowSpec("Var_h A", "attn_var_trained", "last", "slope of the seed mean", ("N",)),
                RowSpec("Var_h (A - A(0))", "dA_var_trained", "last", "slope of the seed mean", ("N",)),
                RowSpec("Var_h softmax(A)", "attn_prob_var_trained", "last", "slope of the seed mean", ("N",)),
            ),
            _p2,
            trained=True,
        ),
        Entry(
            "P3",
            "law of A(0) over heads: variance-gamma(N), not Gaussian (Fig. 3b, 3c)",
            "any sweep (step 0)",
            (
                RowSpec(
                    "LLR: variance-gamma vs Gaussian",
                    "attn_raw_init",
                    "init",
                    "mean log-likelihood ratio, clusters (seed, layer, head)",
                ),
            ),
            _p3,
            band="stated: the sign, band 0",
        ),
        Entry(
            "P4",
            "init kernels -> H->oo limit at H^-1 in mean square (Fig. 3a)",
            "an H sweep",
            (RowSpec("MSE K(0) - K_inf", "kernel_mse_init", "init", "slope of the seed mean", ("H",)),),
            _p4,
        ),
        Entry(
            "P5",
            "trained model -> H->oo limit: seed variance H^-1 (Sec. 4, Fig. 3a)",
            "a trained H sweep",
            _trained_rows("H"),
            _rate,
            trained=True,
        ),
        Entry(
            "P6",
            "N->oo at fixed H: N^-1 for alpha_A=1, no convergence for alpha_A=1/2 (Sec. 4, Fig. 2)",
            "a trained N sweep",
            _trained_rows("N"),
            _rate,
            _p56_primary,
            trained=True,
        ),
        Entry(
            "P7",
            "eta0* exponent 0 (muP), -1 (SP) (Fig. 2a)",
            "a learning-rate grid",
            (RowSpec("eta0* exponent", "heldout_loss", "last", "slope of the parabola-fitted optimum"),),
            _p7,
            trained=True,
            band="half a grid step over the log size range",
        ),
        Entry(
            "P8",
            "W_Q, W_K movement ~ L^(alpha_L-1) (Table 1)",
            "a trained L sweep",
            (RowSpec("W_QK movement", "qk_movement", "last", "slope of the seed mean", ("L",)),),
            _p8,
            trained=True,
        ),
        Entry(
            "P9",
            "alpha_L=1 beats alpha_L=1/2 at equal compute, large L (Fig. 5b)",
            "two trained L sweeps that differ only in alpha_L",
            (RowSpec("loss(1) - loss(1/2) at max L", "heldout_loss", "last", "difference of seed means", ("L",)),),
            _p9,
            trained=True,
            band="stated: the sign, band 0",
        ),
        Entry(
            "P10",
            "residual growth at init ~ L^(1-2 alpha_L) (Sec. 5)",
            "an L sweep",
            (RowSpec("stream growth", "stream_growth_init", "init", "slope of the seed mean", ("L",)),),
            _p10,
        ),
        Entry(
            "P11",
            "final loss across H: flat (Fig. 6a, ViT) or falls (Fig. 7a, C4)",
            "a trained H sweep",
            (RowSpec("slope of final loss", "heldout_loss", "last", "slope of the seed mean", ("H",)),),
            _p11,
            trained=True,
        ),
        Entry(
            "P12",
            "trained kernels equal across alpha_A (Fig. 7c): equivalence test",
            "two trained N sweeps that differ only in alpha_A",
            (
                RowSpec(
                    "|dK|/|K| at min N", "kernel_pooled", "last", "relative kernel difference, 90% interval", ("N",)
                ),
            ),
            _p12,
            trained=True,
            band=f"stated margin delta = {P12_DELTA:g}",
        ),
        Entry(
            "conv-L",
            "trained model -> L->oo limit: block-draw variance L^-1 at alpha_L=1, flat at 1/2 (Sec. 5)",
            "a trained L sweep with io groups (paired design), alpha_L = 1 or 1/2",
            (
                RowSpec("Var_blocks f", "probe_outputs", "last", "paired block-draw variance", ("L",)),
                RowSpec("bias² f (paired)", "probe_outputs", "last", "paired squared bias", ("L",)),
            ),
            _rate,
            trained=True,
        ),
        Entry(
            "coord",
            "feature updates O(1) in N and H (muP; SP grows) (Table 1)",
            "a trained N or H sweep",
            (RowSpec("feature update", "feature_update", "last", "slope of the seed mean", ("N", "H")),),
            _coord,
            trained=True,
        ),
    )
}
KEYS = tuple(REGISTRY)
CLAIMS = {k: e.claim for k, e in REGISTRY.items()}


@dataclass(frozen=True)
class Planned:
    """A row to measure on a sweep: its prediction key, spec, hypotheses and whether it is primary."""

    key: str
    spec: RowSpec
    hypotheses: Hypotheses
    primary: bool


def hypotheses_for(
    key: str, row: str, alpha_A: float, alpha_L: float, standard: bool, axis: str, task: str = "vision"
) -> Hypotheses | None:
    """The hypotheses of row `row` of prediction `key` for a sweep along `axis`; None where it does not apply."""
    e = REGISTRY[key]
    spec = e.row(row)
    if axis not in spec.axes:
        return None
    if key == "P11":
        return _p11(spec, alpha_A, alpha_L, standard, axis, task)
    return e.hypotheses(spec, alpha_A, alpha_L, standard, axis)


def planned_rows(
    keys, alpha_A: float, alpha_L: float, standard: bool, axis: str, trained: bool, task: str = "vision"
) -> list[Planned]:
    """The rows of predictions `keys` that apply to a sweep along `axis` (trained=False keeps the init ones), each
    with its hypotheses and primary flag, in registry order."""
    out = []
    for key in keys:
        e = REGISTRY[key]
        if e.trained and not trained:
            continue
        prim = e.primary_row(alpha_A, alpha_L, standard, axis)
        for spec in e.rows:
            h = hypotheses_for(key, spec.name, alpha_A, alpha_L, standard, axis, task)
            if h is not None:
                out.append(Planned(key, spec, h, spec.name == prim))
    return out


SWEEP_KEYS = ("P1", "P3", "P4", "P10", "P2", "P8", "coord")  # measured by dmft.check on one sweep
RATE_KEYS = ("P5", "P6")  # dmft.report, trained rates
# Coordinate check (docs/predictions.md, "Coordinate check"): expected log-log slope of each site's RMS. The sites
# are the recorder's (probes.hooks.recorder.SITES per block, IO_SITES for the embedding output and the logits).


@dataclass(frozen=True)
class CoordExpectation:
    """Expected slope of log RMS(site) against log(size), and the reason in one line."""

    exponent: float
    reason: str


def coord_expectation(
    alpha_A: float, alpha_L: float, standard: bool, axis: str, site: str, change: bool
) -> CoordExpectation:
    """What a parametrization with a well-defined limit predicts for the RMS of `site` (its value at init if not
    `change`, else its change since step 0 at early times) as `axis` (N, H or L) grows. Sites: the recorder's
    block and io sites, and "W_q", "W_k" (relative weight movement; a change along L only). SP (standard=True) gets the
    same expectations with its own alpha_A: it is the negative control that must fail them."""
    sp = " (SP, the negative control, should fail this)" if standard else ""
    a_L = 0.0 if standard else alpha_L
    if site in ("W_q", "W_k"):
        if axis != "L" or not change:
            raise ValueError("W_q / W_k movement is a depth (axis L) expectation of a change")
        return CoordExpectation(a_L - 1.0, "P8: Table 1 moves hidden entries by L^(alpha_L - 1) of their size" + sp)
    if not change:
        if site == "A" and axis == "N":
            return CoordExpectation(0.5 - alpha_A, "P1: Var A(0) = N^(1-2 alpha_A), so RMS ~ N^(1/2-alpha_A)")
        if site == "logits" and axis in ("N", "H"):
            if standard:
                return CoordExpectation(0.0, "SP readout 1/sqrt(d) on O(1) features: f(theta_0) = O(1)")
            return CoordExpectation(-0.5, "mean-field readout std x mult = 1/(gamma0 d): f(theta_0) ~ d^-1/2")
        return CoordExpectation(0.0, "abc init: every coordinate O(1)" + sp)
    if site in ("A", "softmax_A") and axis == "N" and alpha_A > 0.5:
        return CoordExpectation(
            -0.5,
            "early times (measured, SGD and Adam): at init dL/dA sums the N coordinates "
            "of a head against a random W_O, sqrt(N) not N terms, so A (and softmax(A), "
            "linear in A near 0) first move N^-1/2; the slope flattens with training",
        )
    if site in ("q", "k") and axis == "N":
        return CoordExpectation(
            0.0,
            "the W_Q, W_K update moves q, k by N^(alpha_A-1) (Table 3), but the input "
            "LN(h) moves O(1), so the total change is O(1) for every alpha_A" + sp,
        )
    if site == "logits":
        return CoordExpectation(
            0.0,
            "the output moves O(1) in d and L once d >> the number of outputs V; below that "
            "the readout's cross-talk adds a sqrt(V/d) term that decays with d (the "
            "256-token LM at d <= 256 shows it)" + sp,
        )
    return CoordExpectation(0.0, "every feature and the output move O(1) in d and L" + sp)

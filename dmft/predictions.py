"""Predicted scaling exponents, derived from the parametrization (docs/predictions.md, P1-P10 and the coordinate check).

Each prediction names the dataset quantity it is about (see `dmft.measure`), the axis, the predicted log-log
slope (or the hypotheses, when the sources disagree), and whether it needs training. Nothing here is a lookup
table of answers: every exponent is a function of (alpha_A, alpha_L, standard) and the axis.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """key: P1, P2, P3, P4, P8, P10, coord. quantity: a name known to `dmft.measure.QUANTITIES`.
    kind: "slope" (measured slope should equal `exponent`), "hypotheses" (several named exponents, the check
    says which the data supports), "nonzero" (|slope| should exceed `threshold`: SP's negative control),
    "density" (a goodness-of-fit test of the A law). constant: predicted prefactor c in quantity = c*size^exponent,
    where the theory gives it exactly. tol: finite-size allowance added to the bootstrap CI, stated in the table."""

    key: str
    quantity: str
    axis: str
    kind: str
    exponent: float | None = None
    hypotheses: dict[str, float] = field(default_factory=dict)
    constant: float | None = None
    threshold: float = 0.3
    tol: float = 0.1
    trained: bool = False
    note: str = ""


def p1_attention_variance_at_init(alpha_A: float, axis: str) -> Prediction:
    """P1: Var over heads of A(0) = N^(1 - 2 alpha_A) exactly in expectation (q, k coordinates are N(0, 1) over the
    weight law because |LN(h)|^2 = d), independent of H and L."""
    exponent = 1.0 - 2.0 * alpha_A if axis == "N" else 0.0
    return Prediction("P1", "attn_var_init", axis, "slope", exponent=exponent,
                      constant=1.0 if axis == "N" else None, tol=0.1,
                      note="Var_h A(0) = N^(1-2 alpha_A); constant 1 (LN inputs)")


def p3_attention_density(alpha_A: float, axis: str) -> Prediction:
    """P3: the law of A(0) over heads is the symmetric variance-gamma law of N products of Gaussians."""
    return Prediction("P3", "attn_raw_init", axis, "density", note="A(0) over heads ~ variance-gamma(N); KS test")


def p4_kernel_concentration(axis: str) -> Prediction:
    """P4: mean-square deviation of the initial kernels from their H -> oo limit ~ H^-1 (heads are the i.i.d.
    units at fixed N)."""
    return Prediction("P4", "kernel_mse_init", axis, "slope", exponent=-1.0, tol=0.2,
                      note="MSE(K(0) - K_inf) ~ H^-1 against the solver's H->oo limit")


def p10_kernel_growth(alpha_L: float, standard: bool, axis: str) -> Prediction:
    """P10: growth of the residual stream over depth at init, |h^L|^2/d - |h^0|^2/d = sum of L independent branch
    variances, each (beta0 L^-alpha_L)^2 -> L^(1 - 2 alpha_L): O(1) Brownian growth for alpha_L = 1/2, suppressed
    ~ L^-1 for alpha_L = 1; SP (no depth factor) grows ~ L."""
    a_L = 0.0 if standard else alpha_L
    return Prediction("P10", "stream_growth_init", axis, "slope", exponent=1.0 - 2.0 * a_L, tol=0.15,
                      note="|h^L|^2/d - |h^0|^2/d ~ L^(1 - 2 alpha_L)")


def p2_hypotheses(alpha_A: float) -> dict[str, float]:
    """The two candidate exponents of Var_h A(t) over N for any alpha_A: the central-limit count of the random
    A(0) part, N^(1-2 alpha_A) (= P1's), and the Fig. 2b caption's N^-2 at alpha_A = 1, generalised as the square
    N^(2(1-2 alpha_A)). Both are 0 at alpha_A = 1/2 (head diversity survives)."""
    return {"CLT N^(1-2alpha_A)": 1.0 - 2.0 * alpha_A, "caption N^(2(1-2alpha_A))": 2.0 * (1.0 - 2.0 * alpha_A)}


def p2_attention_variance_trained(alpha_A: float, quantity: str) -> Prediction:
    """P2: Var over heads of A after training vs N at fixed H, for any alpha_A (`p2_hypotheses`). Where the two
    hypotheses coincide (alpha_A = 1/2) it is a plain slope prediction (flat)."""
    hyp = p2_hypotheses(alpha_A)
    if len(set(hyp.values())) == 1:
        return Prediction("P2", quantity, "N", "slope", exponent=next(iter(hyp.values())), tol=0.25, trained=True,
                          note=f"alpha_A = {alpha_A:g}: both hypotheses give N^{next(iter(hyp.values())):g}")
    return Prediction("P2", quantity, "N", "hypotheses", hypotheses=hyp, tol=0.25, trained=True,
                      note=f"alpha_A = {alpha_A:g}: which exponent?")


def p8_key_query_movement(alpha_L: float, standard: bool) -> Prediction:
    """P8: relative movement of W_Q, W_K per layer vs L. Table 1 counting: SGD moves a hidden entry by
    eta0 gamma0^2 d l^(2 alpha_L - 1) * (beta0 l^-alpha_L)/(gamma0 d) * O(1/sqrt(d)) = O(d^-1/2 l^(alpha_L - 1));
    Adam by its lr eta0 d^-1/2 l^(alpha_L - 1). Relative to O(1) entries: L^(alpha_L - 1), i.e. L^-1/2 for
    alpha_L = 1/2 and L^0 for alpha_L = 1."""
    a_L = 0.0 if standard else alpha_L
    return Prediction("P8", "qk_movement", "L", "slope", exponent=a_L - 1.0, tol=0.15, trained=True,
                      note="||W_QK(t)-W_QK(0)||/||W_QK(0)|| ~ L^(alpha_L - 1)")


def coordinate_invariance(standard: bool, axis: str) -> Prediction:
    """muP: feature updates (block outputs minus their step-0 values) are O(1) in N and H (slope 0);
    SP with an unscaled learning rate: they grow with width (|slope| > 0.3)."""
    if standard:
        return Prediction("coord", "feature_update", axis, "nonzero", threshold=0.3, trained=True,
                          note="SP: feature updates grow with width")
    return Prediction("coord", "feature_update", axis, "slope", exponent=0.0, tol=0.15, trained=True,
                      note="muP: feature updates invariant")


# Coordinate check (docs/predictions.md, "Coordinate check"): expected log-log slope of each site's RMS. The sites
# are the recorder's (probes.recorder.SITES per block, IO_SITES for the embedding output and the logits).


@dataclass(frozen=True)
class CoordExpectation:
    """Expected slope of log RMS(site) against log(size), and the reason in one line."""

    exponent: float
    reason: str


def coord_expectation(alpha_A: float, alpha_L: float, standard: bool, axis: str, site: str,
                      change: bool) -> CoordExpectation:
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
        return CoordExpectation(-0.5, "early times (measured, SGD and Adam): at init dL/dA sums the N coordinates "
                                      "of a head against a random W_O, sqrt(N) not N terms, so A (and softmax(A), "
                                      "linear in A near 0) first move N^-1/2; the slope flattens with training")
    if site in ("q", "k") and axis == "N":
        return CoordExpectation(0.0, "the W_Q, W_K update moves q, k by N^(alpha_A-1) (Table 3), but the input "
                                     "LN(h) moves O(1), so the total change is O(1) for every alpha_A" + sp)
    if site == "logits":
        return CoordExpectation(0.0, "the output moves O(1) in d and L once d >> the number of outputs V; below that "
                                     "the readout's cross-talk adds a sqrt(V/d) term that decays with d (the "
                                     "256-token LM at d <= 256 shows it)" + sp)
    return CoordExpectation(0.0, "every feature and the output move O(1) in d and L" + sp)


def predictions(alpha_A: float, alpha_L: float, standard: bool, axis: str, trained: bool) -> list[Prediction]:
    """Every prediction that applies to a sweep along `axis` (N, H or L); trained=False keeps the init ones."""
    out = [p1_attention_variance_at_init(alpha_A, axis), p3_attention_density(alpha_A, axis)]
    if axis == "H":
        out.append(p4_kernel_concentration(axis))
    if axis == "L":
        out.append(p10_kernel_growth(alpha_L, standard, axis))
    if trained:
        if axis == "N":
            out += [p2_attention_variance_trained(alpha_A, q) for q in ("attn_var_trained", "dA_var_trained",
                                                                        "attn_prob_var_trained")]
        if axis == "L":
            out.append(p8_key_query_movement(alpha_L, standard))
        if axis in ("N", "H"):
            out.append(coordinate_invariance(standard, axis))
    return out


# Trained regime (docs/predictions.md, "Finite-size rates of trained models", P5-P7, P9, P11, P12). The rates are
# the generic mean-field counting, not stated in the paper: each is a hypothesis the data can refute.


def trained_rate(alpha_A: float, alpha_L: float, standard: bool, axis: str) -> Prediction | None:
    """The log-log slope, against the size on `axis`, of the mean-square distance of a trained quantity (kernels,
    outputs, held-out loss, head statistics) from its size -> oo limit, and of the seed-to-seed variance; None
    where the parametrization predicts no limit (SP) or no rate is derived (alpha_L other than 1 or 1/2)."""
    if standard:
        return None
    if axis == "H":
        return Prediction("P5", "trained_distance", "H", "slope", exponent=-1.0, tol=0.25, trained=True,
                          note="heads are i.i.d. units at fixed N: the trained quantities are averages over H heads, "
                               "so their spread (and distance from the limit) has variance ~ H^-1")
    if axis == "N":
        if alpha_A > 0.5:
            return Prediction("P6", "trained_distance", "N", "slope", exponent=-1.0, tol=0.25, trained=True,
                              note=f"alpha_A = {alpha_A:g} > 1/2: A -> its mean, every head alike, so the network "
                                   "is a mean-field average over d = N H coordinates: variance ~ N^-1 at fixed H")
        return Prediction("P6", "trained_distance", "N", "slope", exponent=0.0, tol=0.25, trained=True,
                          note="alpha_A = 1/2: H random attention matrices whose law does not concentrate in N, "
                               "so the network stays random: no convergence (flat), not a rate")
    if axis == "L":
        if alpha_L == 1.0:
            return Prediction("conv-L", "trained_distance", "L", "slope", exponent=-1.0, tol=0.25, trained=True,
                              note="alpha_L = 1: L branches of size 1/L are an Euler discretisation of a depth ODE; "
                                   "their random parts add variance L * L^-2 = L^-1 (the O(1/L) bias squared is "
                                   "sub-leading)")
        if alpha_L == 0.5:
            return Prediction("conv-L", "trained_distance", "L", "slope", exponent=0.0, tol=0.25, trained=True,
                              note="alpha_L = 1/2: L branches of size L^-1/2 add an O(1) Brownian motion in "
                                   "layer time: at fixed N, H the network stays random in L (flat)")
    return None


def p7_transfer(standard: bool) -> str:
    """P7 (Fig. 2a): under the Table 1 rules the best eta0 does not move with size ("transfers": the best eta0 of
    every size within one grid step); SP, the negative control, has no width rule and its optimum "shifts"."""
    return "shifts" if standard else "transfers"


P9_NOTE = ("Fig. 5b: at fixed N, H and equal compute (equal L, params and steps), alpha_L = 1 reaches a lower loss "
           "than alpha_L = 1/2 at large L, because alpha_L = 1/2 freezes the weights inside each block as L grows "
           "(P8)")
P11_HYPOTHESES = {"similar across H (ViT, Fig. 6a)": "flat", "improves with H (C4, Fig. 7a)": "falls"}
P12_NOTE = ("Fig. 7c: the trained kernels are the same for alpha_A = 1 and 1/2 (their difference is within the "
            "seed noise) except a slight difference at large N")

"""Predicted scaling exponents, derived from the parametrization (paper-notes §3, P1-P10).

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


def p2_attention_variance_trained(alpha_A: float, quantity: str) -> Prediction:
    """P2: Var over heads of A after training vs N at fixed H. alpha_A = 1/2: flat (the A stay random and move
    Theta(1)). alpha_A = 1: decaying; the paper's Fig. 2b caption says N^-2, the central-limit count of the
    random A(0) part says N^-1 (= P1's exponent): both are carried as hypotheses."""
    if alpha_A == 0.5:
        return Prediction("P2", quantity, "N", "slope", exponent=0.0, tol=0.25, trained=True,
                          note="alpha_A = 1/2: head diversity survives, flat in N")
    hyp = {"caption N^-2": -2.0, "CLT N^(1-2alpha_A)": 1.0 - 2.0 * alpha_A}
    return Prediction("P2", quantity, "N", "hypotheses", hypotheses=hyp, tol=0.25, trained=True,
                      note="alpha_A = 1: decays; which exponent?")


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


def predictions(alpha_A: float, alpha_L: float, standard: bool, axis: str, trained: bool) -> list[Prediction]:
    """Every prediction that applies to a sweep along `axis` (N, H or L); trained=False keeps the init ones."""
    out = [p1_attention_variance_at_init(alpha_A, axis), p3_attention_density(alpha_A, axis)]
    if axis == "H":
        out.append(p4_kernel_concentration(axis))
    if axis == "L":
        out.append(p10_kernel_growth(alpha_L, standard, axis))
    if trained:
        if axis == "N" and alpha_A in (0.5, 1.0):
            out += [p2_attention_variance_trained(alpha_A, q) for q in ("attn_var_trained", "dA_var_trained",
                                                                        "attn_prob_var_trained")]
        if axis == "L":
            out.append(p8_key_query_movement(alpha_L, standard))
        if axis in ("N", "H"):
            out.append(coordinate_invariance(standard, axis))
    return out

"""The parametrization: exponents, constants and the abc rule (init std, forward multiplier) per role.

Bordelon, Chaudhry & Pehlevan (NeurIPS 2024), "Infinite Limits of Multi-head Transformer Dynamics":
- attention variables A = N^-alpha_A q.k (Sec. 2, Table 3);
- residual branches scaled by beta0 (L/L0)^-alpha_L (Fig. 1a);
- output centred and scaled, f_train = (f(theta) - f(theta_0)) / gamma0;
- first-layer and readout variance/multiplier and the global learning rate per optimizer (Table 1).

Every number here is a plain Python float. Shapes and roles are described in docs/design.md; the counting
behind every rule in docs/parametrization.md; the learning-rate, eps and weight-decay rules live in
`parametrizations.optim`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from .checks import ConfigError, check_bool, check_choice, check_float, check_str

ROLES = ("embed", "pos", "q", "k", "v", "o", "mlp_in", "mlp_out", "readout")
# Matrices of the block variants (docs/variants.md): LAUREL's low-rank residual map B A (A: d -> r, B: r -> d).
VARIANT_MATRIX_ROLES = ("laurel_A", "laurel_B")
# Vectors and scalars of the block variants, each stored as w with a forward multiplier (value = mult * w) and a
# constant initial value set by the architecture: RMSNorm gains, QK-norm gains, nGPT's eigen learning rates and
# scales, LAUREL's learned residual weights. `vector_mult` gives their multipliers.
VECTOR_ROLES = ("gain", "gain_out", "qk_gain", "ngpt_sqk", "eigen", "ngpt_sz", "laurel_a", "laurel_res")
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")
CENTRES = ("copy", "zero_readout", "none")


@dataclass(frozen=True)
class Parametrization:
    """Exponents and constants of one parametrization.

    alpha_A: attention exponent, A = N^-alpha_A q.k (1 = muP / mean field, 1/2 = standard 1/sqrt(N)).
    alpha_L: residual exponent, branch multiplier beta0 (L/L0)^-alpha_L (1/2 or 1).
    beta0:   residual branch constant.
    gamma0:  feature-learning strength; the readout carries 1/gamma0 and the output is centred.
    L0:      reference depth of the depth factors (L/L0).
    standard: True for SP, the negative control: PyTorch-style 1/sqrt(fan_in) init with unit multipliers,
              an unscaled learning rate, no centring and no depth scaling (alpha_L is ignored).
    centre:  how f(theta_0) is removed: "copy" (frozen copy of theta_0, as the official code),
             "zero_readout" (readout initialised at zero, so f(theta_0) = 0), or "none".
    """

    name: str = "mup"
    alpha_A: float = 1.0
    alpha_L: float = 1.0
    beta0: float = 1.0
    gamma0: float = 1.0
    L0: float = 1.0
    standard: bool = False
    centre: str = "copy"

    def __post_init__(self) -> None:
        check_str("name", self.name)
        # exponents: the paper's range is [1/2, 1]; [0, 2] (alpha_A > 0) keeps every multiplier finite
        check_float("alpha_A", self.alpha_A, 0.0, 2.0, lo_open=True)
        check_float("alpha_L", self.alpha_L, 0.0, 2.0)
        for field in ("beta0", "gamma0", "L0"):
            check_float(field, getattr(self, field), 0.0, lo_open=True)
        check_bool("standard", self.standard)
        check_choice("centre", self.centre, CENTRES)

    def with_(self, **changes) -> Parametrization:
        """Return a copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Parametrization] = {
    # muP / mean field in every direction: heads collapse as N -> oo, ODE depth limit.
    "mup": Parametrization("mup", alpha_A=1.0, alpha_L=1.0),
    # standard 1/sqrt(N) attention with the mean-field depth rule: head diversity kept as N -> oo.
    "mup-sqrt": Parametrization("mup-sqrt", alpha_A=0.5, alpha_L=1.0),
    # depth-muP with 1/sqrt(L) branches: Brownian (SDE) depth limit.
    "depth-sqrt": Parametrization("depth-sqrt", alpha_A=1.0, alpha_L=0.5),
    # standard parametrization: the negative control that must fail the invariance checks.
    "sp": Parametrization("sp", alpha_A=0.5, alpha_L=0.0, standard=True, centre="none"),
}


def get_preset(name: str, **overrides) -> Parametrization:
    """Return the preset called `name`, with optional field overrides (e.g. gamma0=0.1)."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError("preset", f"must be one of {', '.join(PRESETS)}; unknown parametrization {name!r}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    known = {f.name for f in fields(Parametrization)} - {"name"}
    for k in overrides:
        if k not in known:
            raise ConfigError(k, f"is not a parametrization field; fields are {', '.join(sorted(known))}")
    for k in ("alpha_A", "alpha_L"):  # validated before the name is formatted with them
        if k in overrides:
            check_float(k, overrides[k])
    base = PRESETS[name]
    # a changed exponent or centring makes another parametrization: say so in its name (file names, tables)
    renamed = "".join(
        f"-{k}{overrides[k]:g}" if k != "centre" else f"-{overrides[k]}"
        for k in ("alpha_A", "alpha_L", "centre")
        if k in overrides and overrides[k] != getattr(base, k)
    )
    return replace(base, name=name + renamed, **overrides) if overrides else base


def depth_ratio(p: Parametrization, L: int) -> float:
    """L / L0, the depth factor every depth rule is written in."""
    return L / p.L0


def branch_multiplier(p: Parametrization, L: int) -> float:
    """Residual branch multiplier beta0 (L/L0)^-alpha_L (Fig. 1a); SP uses beta0 alone."""
    if p.standard:
        return p.beta0
    return p.beta0 * depth_ratio(p, L) ** (-p.alpha_L)


def attention_scale(p: Parametrization, N: int) -> float:
    """The factor N^-alpha_A in A = N^-alpha_A q.k (Table 3)."""
    return float(N) ** (-p.alpha_A)


def is_adam(optimizer: str) -> bool:
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ConfigError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}; unknown optimizer {optimizer!r}")
    return optimizer.startswith("adam")


HIDDEN_ROLES = ("v", "o", "mlp_in", "mlp_out")

# One line per role and optimizer family: why its (init std, multiplier) pair is what `abc` returns. d = N*H,
# l = L/L0, eta the global learning rate of `parametrizations.optim` (SGD: eta0 gamma0^2 d l^(2 alpha_L - 1);
# Adam: eta0 gamma0 d^-1/2 l^(alpha_L - 1)). The backprop signal reaching a residual coordinate is
# delta ~ 1/(gamma0 d) in both families (readout std x multiplier = 1/(gamma0 d)). The counting is written out in
# docs/parametrization.md; `tests/test_coord_check.py` measures it.
RULE_NOTES: dict[tuple[str, str], str] = {
    ("sgd", "embed"): "std l^(a_L-1/2), mult l^-(a_L-1/2)/sqrt(D_in): h0 = O(1); grad mult*delta -> dh0 = eta*mult^2 "
    "*delta ~ eta0 gamma0, flat in d and L",
    ("sgd", "pos"): "as embed (a table read by one-hot positions, D_in = 1)",
    ("sgd", "q"): "std N^(1-a_A), mult N^(a_A-1)/sqrt(d): q = O(1) at init; dq = eta*mult^2*d*dL/dq ~ "
    "N^(a_A-1) eta0 gamma0 l^(a_L-1), so dA = N^-a_A (dq.k) = O(1) (Table 3)",
    ("sgd", "k"): "as q",
    ("sgd", "hidden"): "std 1, mult 1/sqrt(fan_in): dW = eta*branch*delta*u/sqrt(d) -> branch output moves "
    "eta0 gamma0 l^(a_L-1), the stream l^-a_L times that per block",
    ("sgd", "readout"): "std l^(a_L-1/2), mult l^-(a_L-1/2)/(gamma0 d) (mean field): df from its own update "
    "= eta*mult^2*d = eta0; from the features delta-aligned sum d*mult*std*dh = dh/gamma0",
    ("adam", "embed"): "std d^-1/2 l^(a_L-1), mult sqrt(d) l^(1-a_L)/sqrt(D_in): Adam moves each entry by eta, so "
    "dh0 = mult*eta*O(D_in) ~ eta0 gamma0, flat in d and L; std*mult = 1/sqrt(D_in) keeps h0 O(1)",
    ("adam", "pos"): "as embed (D_in = 1)",
    ("adam", "q"): "std N^(1-a_A), mult N^(a_A-1)/sqrt(d): dq = mult*eta*d (sign-aligned) = N^(a_A-1) eta0 gamma0 "
    "l^(a_L-1), so dA = N^-a_A (dq.k) = O(1) (Table 3)",
    ("adam", "k"): "as q",
    ("adam", "hidden"): "std 1, mult 1/sqrt(fan_in): dW = eta per entry, aligned with u -> branch output moves "
    "mult*eta*d = eta0 gamma0 l^(a_L-1), the stream l^-a_L times that per block",
    ("adam", "readout"): "std d^-1/2 l^(a_L-1), mult l^(1-a_L)/(gamma0 sqrt(d)) (the C4 form): df from its own "
    "update = mult*eta*d = eta0; from features std*mult*d*dh = dh/gamma0. Std 1 with mult "
    "d^-1/2/gamma0 would pass the features' Theta(1) move, aligned with sign(w(0)), as "
    "d^+1/2 (measured N^+0.40 after 20 steps: no width limit)",
    ("standard", "any"): "SP: std 1/sqrt(fan_in) (1 for tables), mult 1, lr eta0 at every size: the negative "
    "control, whose updates grow with width",
}


def rule_note(p: Parametrization, role: str, optimizer: str) -> str:
    """The one-line derivation of `abc(p, role, ...)` (or `vector_mult`) for this optimizer (see RULE_NOTES and
    VARIANT_NOTES)."""
    if p.standard:
        return RULE_NOTES[("standard", "any")]
    family = "adam" if is_adam(optimizer) else "sgd"
    if role in VARIANT_NOTES:
        return VARIANT_NOTES[role][family]
    return RULE_NOTES[(family, "hidden" if role in HIDDEN_ROLES else role)]


def abc(p: Parametrization, role: str, fan_in: int, *, d: int, N: int, L: int, optimizer: str) -> tuple[float, float]:
    """Return (init std, forward multiplier) of a parameter of `role` with input dimension `fan_in`.

    d = N*H is the residual width, N the head dimension, L the depth, l = L/L0. Weights are drawn N(0, std^2) and
    the forward pass multiplies W x by the multiplier (abc form; paper Table 1, eq. (5); docs/parametrization.md):
      hidden (v, o, mlp_in, mlp_out): std 1, multiplier 1/sqrt(fan_in);
      q, k: std N^(1-alpha_A), multiplier N^(alpha_A-1)/sqrt(fan_in), so q, k entries are O(1) at init;
      embed, pos (first layer): SGD std l^(alpha_L-1/2), multiplier l^-(alpha_L-1/2)/sqrt(D_in);
                                Adam std d^-1/2 l^(alpha_L-1), multiplier d^1/2 l^(1-alpha_L)/sqrt(D_in);
      readout: SGD std l^(alpha_L-1/2), multiplier l^-(alpha_L-1/2)/(gamma0 d);
               Adam std d^-1/2 l^(alpha_L-1), multiplier l^(1-alpha_L)/(gamma0 d^1/2).
    In both families the readout's std x multiplier is 1/(gamma0 d) (mean field), which is what keeps the
    output change O(1) in d; `rule_note` gives the one-line reason per role. For the token embedding and the
    positional table D_in = 1 (one-hot inputs). SP: std 1/sqrt(fan_in) (std 1 for embedding tables) and
    multiplier 1 everywhere.
    """
    if role in VARIANT_MATRIX_ROLES:
        return laurel_abc(p, role, fan_in, d=d, optimizer=optimizer)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES + VARIANT_MATRIX_ROLES)}")
    if p.standard:
        if role in ("embed", "pos") and fan_in == 1:
            return 1.0, 1.0
        return 1.0 / math.sqrt(fan_in), 1.0
    adam = is_adam(optimizer)
    ell = depth_ratio(p, L)
    if role in ("q", "k"):
        return float(N) ** (1.0 - p.alpha_A), float(N) ** (p.alpha_A - 1.0) / math.sqrt(fan_in)
    if role in HIDDEN_ROLES:
        return 1.0, 1.0 / math.sqrt(fan_in)
    if role in ("embed", "pos"):
        if adam:
            c = math.sqrt(d) * ell ** (1.0 - p.alpha_L)
            return 1.0 / c, c / math.sqrt(fan_in)
        return ell ** (p.alpha_L - 0.5), ell ** (-(p.alpha_L - 0.5)) / math.sqrt(fan_in)
    # readout
    if adam:
        return ell ** (p.alpha_L - 1.0) / math.sqrt(d), ell ** (1.0 - p.alpha_L) / (p.gamma0 * math.sqrt(d))
    return ell ** (p.alpha_L - 0.5), ell ** (-(p.alpha_L - 0.5)) / (p.gamma0 * d)


# ---- block variants (docs/variants.md) ---------------------------------------------------------------------------
# The counting is the one of RULE_NOTES: eta = the global lr (SGD eta0 gamma0^2 d l^(2a_L-1), Adam eta0 gamma0
# d^-1/2 l^(a_L-1)); delta ~ 1/(gamma0 d) the backprop signal at a residual coordinate; a hidden branch output moves
# eta0 gamma0 l^(a_L-1) per step and the stream l^-1 times that per block (branch multiplier l^-a_L). A parameter
# stored as w with value v = mult * w moves by dv = mult^2 eta dL/dv under SGD and dv = mult eta under Adam (one
# entry, sign-like). Each rule below picks mult so that dv is the size its place in the network needs.
VARIANT_NOTES: dict[str, dict[str, str]] = {
    "gain": {
        "sgd": "init 1, mult 1: dL/dv ~ l^-a_L/(gamma0 d) per entry, so dv = eta0 gamma0 l^(a_L-1), the move of a "
        "hidden branch (a gain is a weight with fan-in 1; muP's vector rule). Measured: along H the "
        "attention sites' changes grow ~H^+0.3 with it (docs/variants.md, Findings)",
        "adam": "init 1, mult sqrt(d): Adam moves w by eta, so dv = sqrt(d) eta = eta0 gamma0 l^(a_L-1), the move "
        "of a hidden branch",
    },
    "gain_out": {
        "sgd": "init 1, mult l^(1/2-a_L): the final norm's gain sees delta without a branch factor; dv = "
        "eta0 gamma0, so the output moves eta0 (as the embedding rule)",
        "adam": "init 1, mult sqrt(d) l^(1-a_L): dv = eta0 gamma0, so the output moves eta0 (as the embedding rule)",
    },
    "qk_gain": {
        "sgd": "init 1, mult N^(a_A-1) H_l^-1/2: one N-vector shared by the layer's H_l heads sums H_l "
        "head gradients, so dv = N^(a_A-1) eta0 gamma0 l^(a_L-1) like dq (Table 3) at every H",
        "adam": "init 1, mult sqrt(d) N^(a_A-1): dv = N^(a_A-1) eta0 gamma0 l^(a_L-1), the move of q that "
        "keeps dA = O(1) (Table 3); Adam ignores the H_l-fold gradient sum",
    },
    "ngpt_sqk": {
        "sgd": "init 1, mult N^(a_A-1): a per-head, per-coordinate gain on q, k: dv = N^(a_A-1) eta0 gamma0 "
        "l^(a_L-1), the move of q that keeps dA = O(1) (Table 3)",
        "adam": "init 1, mult sqrt(d) N^(a_A-1): dv = N^(a_A-1) eta0 gamma0 l^(a_L-1) (Table 3)",
    },
    "eigen": {
        "sgd": "init beta0 l^-a_L, mult l^-a_L: the eigen learning rate is nGPT's residual branch scale "
        "(nGPT's 0.05 ~ 1/L is a_L = 1); dv = eta0 gamma0 / l, one block's share of the stream's move",
        "adam": "init beta0 l^-a_L, mult sqrt(d) l^-a_L: dv = eta0 gamma0 / l, one block's share of the "
        "stream's move (nGPT's 0.05 ~ 1/L is a_L = 1)",
    },
    "ngpt_sz": {
        "sgd": "init 1, mult d^-1/2 l^(1/2-a_L): the logit gain's gradient is O(1/gamma0) once the features "
        "align; dv = eta0 gamma0, so the output moves eta0",
        "adam": "init 1, mult sqrt(d) l^(1-a_L): dv = eta0 gamma0, so the output moves eta0",
    },
    "laurel_a": {
        "sgd": "init 1, mult d^-1/2: a scalar on the branch sums d coordinates (d/(gamma0 d) aligned), so dv "
        "= eta0 gamma0 l^(a_L-1), the relative move of a hidden branch",
        "adam": "init 1, mult sqrt(d): dv = eta0 gamma0 l^(a_L-1), the relative move of a hidden branch",
    },
    "laurel_res": {
        "sgd": "init 1 (RW beta) or 0 (PA gamma), mult d^-1/2 l^-a_L: a scalar on the residual stream "
        "must move O(1/L) per layer so that the product over L layers stays O(1): dv = eta0 gamma0/l",
        "adam": "init 1 (RW beta) or 0 (PA gamma), mult sqrt(d) l^-a_L: dv = eta0 gamma0 / l per layer, "
        "so the product over L layers stays O(1)",
    },
    "laurel_A": {
        "sgd": "std 1, mult d^-1/2: A x is a hidden pre-activation of width r (hidden rule, fan-in d); "
        "the B A x term carries the branch multiplier beta0 l^-a_L",
        "adam": "std 1, mult d^-1/2: A x moves mult eta d = eta0 gamma0 l^(a_L-1) (hidden rule, fan-in d)",
    },
    "laurel_B": {
        "sgd": "init 0 (LoRA), mult r^-1/2: the hidden rule with fan-in r; B A x moves "
        "eta0 gamma0 l^(a_L-1) like a branch output",
        "adam": "init 0 (LoRA), mult sqrt(d)/r: the fan-in r is fixed, so Adam's per-entry move eta must be "
        "summed over r entries and lifted by sqrt(d): B A x moves eta0 gamma0 l^(a_L-1)",
    },
}


def laurel_abc(p: Parametrization, role: str, fan_in: int, *, d: int, optimizer: str) -> tuple[float, float]:
    """(init std, multiplier) of LAUREL's low-rank maps (VARIANT_NOTES): A (r, d) std 1, mult d^-1/2; B (d, r) is
    initialised at zero (the std returned is 0), mult r^-1/2 under SGD and sqrt(d)/r under Adam; SP: PyTorch's
    1/sqrt(fan_in) std for A and mult 1."""
    if role == "laurel_A":
        return (1.0 / math.sqrt(fan_in), 1.0) if p.standard else (1.0, 1.0 / math.sqrt(fan_in))
    if p.standard:
        return 0.0, 1.0
    return 0.0, (math.sqrt(d) / fan_in if is_adam(optimizer) else 1.0 / math.sqrt(fan_in))


def vector_mult(p: Parametrization, role: str, *, d: int, N: int, L: int, optimizer: str, H_l: int = 1) -> float:
    """The forward multiplier of a vector or scalar role (VECTOR_ROLES); its value is mult * w and its initial
    value is set by the architecture (gains 1, eigen learning rates beta0 l^-alpha_L, ...). H_l: the heads sharing
    the parameter (qk_gain). SP: 1. VARIANT_NOTES says why each is what it is."""
    if role not in VECTOR_ROLES:
        raise ValueError(f"unknown vector role {role!r}; vector roles are {', '.join(VECTOR_ROLES)}")
    if p.standard:
        return 1.0
    adam = is_adam(optimizer)
    ell = depth_ratio(p, L)
    lift = math.sqrt(d) if adam else 1.0  # Adam moves every entry by eta ~ d^-1/2: lifted back by sqrt(d)
    if role == "gain":
        return lift
    if role == "gain_out":
        return math.sqrt(d) * ell ** (1.0 - p.alpha_L) if adam else ell ** (0.5 - p.alpha_L)
    if role == "qk_gain":
        return lift * float(N) ** (p.alpha_A - 1.0) * (1.0 if adam else 1.0 / math.sqrt(H_l))
    if role == "ngpt_sqk":
        return lift * float(N) ** (p.alpha_A - 1.0)
    if role == "eigen":
        return lift * ell ** (-p.alpha_L)
    if role == "ngpt_sz":
        return math.sqrt(d) * ell ** (1.0 - p.alpha_L) if adam else ell ** (0.5 - p.alpha_L) / math.sqrt(d)
    if role == "laurel_a":
        return math.sqrt(d) if adam else 1.0 / math.sqrt(d)
    # laurel_res
    return (math.sqrt(d) if adam else 1.0 / math.sqrt(d)) * ell ** (-p.alpha_L)

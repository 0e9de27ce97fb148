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

    def with_(self, **changes) -> "Parametrization":
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
    for k in ("alpha_A", "alpha_L"):        # validated before the name is formatted with them
        if k in overrides:
            check_float(k, overrides[k])
    base = PRESETS[name]
    # a changed exponent or centring makes another parametrization: say so in its name (file names, tables)
    renamed = "".join(f"-{k}{overrides[k]:g}" if k != "centre" else f"-{overrides[k]}"
                      for k in ("alpha_A", "alpha_L", "centre") if k in overrides and overrides[k] != getattr(base, k))
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
    """The one-line derivation of `abc(p, role, ...)` for this optimizer (see RULE_NOTES)."""
    if p.standard:
        return RULE_NOTES[("standard", "any")]
    family = "adam" if is_adam(optimizer) else "sgd"
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
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
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

"""The problem the DMFT solver works on: inputs, labels and the mean-field coefficients of the parametrization.

Everything numeric about the parametrization is read from `parametrizations.spec` (`abc`, `branch_multiplier`) and
`parametrizations.optim` (`global_lr`): never from the finite network's code. The coefficients below are the
combinations of init std, forward multiplier and learning rate that survive the limit d = N*H -> oo
(docs/dmft-dynamics.md, "Coefficients"); `mean_field_rates` evaluates them at two widths and refuses a
parametrization for which any of them depends on d (it would have no mean-field limit of this form).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from parametrizations.checks import one_of_error
from parametrizations.optim import OptimConfig, global_lr
from parametrizations.spec import Parametrization, abc, attention_scale, branch_multiplier

LN_EPS = 1e-6  # the model's LayerNorm eps (docs/design.md); not imported, the solver builds no model
LOSSES = ("ce", "mse")
HIDDEN = {"attn": ("v", "o"), "mlp": ("mlp_in", "mlp_out")}  # the (input, output) roles of each branch kind


@dataclass(frozen=True)
class Rates:
    """The d-independent coefficients of one parametrization (docs/dmft-dynamics.md, "Coefficients").

    b: residual branch multiplier beta0 (L/L0)^-alpha_L; gamma0: feature-learning strength.
    s_embed, s_pos: init variance of h^0 per coordinate is s_embed x.x'/D_in + s_pos.
    sigma_w2: variance of the scaled readout w = gamma0 d m_R W_R at init (1; 0 for a zero readout).
    c_embed, c_pos: h^0 moves by gamma0 sum_nu (c_embed x.x_nu/D_in + c_pos) e_0(nu) per step.
    c_in, c_out: per branch kind ("attn", "mlp"), eta m^2 / gamma0^2 of its input and output weight (the
    attention's input weight is W_V). c_qk: the same for W_Q and W_K (one value: both roles share the rule), used
    with more than one token; None when the rates were made for one token.
    c_read: the readout moves f by c_read sum_nu Delta_nu Phi_out(., nu) per step."""

    b: float
    gamma0: float
    s_embed: float
    s_pos: float
    sigma_w2: float
    c_embed: float
    c_pos: float
    c_in: dict
    c_out: dict
    c_read: float
    c_qk: float | None = None


def _raw_rates(p: Parametrization, opt: OptimConfig, d: int, L: int, d_in: int, H: int) -> dict[str, float]:
    """The coefficients (and the unit-init checks of the hidden roles) evaluated at width d = N*H."""
    lr = global_lr(p, opt, d, L)
    N = d // H

    def ab(role: str, fan_in: int) -> tuple[float, float]:
        return abc(p, role, fan_in, d=d, N=N, L=L, optimizer=opt.name)

    g2 = p.gamma0**2
    se, me = ab("embed", d_in)
    sp, mp = ab("pos", 1)
    sr, mr = ab("readout", d)
    out = {
        "s_embed": (se * me) ** 2 * d_in,
        "s_pos": (sp * mp) ** 2,
        "sigma_w": p.gamma0 * d * mr * sr,
        "c_embed": lr * me**2 * d_in / (g2 * d),
        "c_pos": lr * mp**2 / (g2 * d),
        "c_read": lr * mr**2 * d,
    }
    for kind, roles in HIDDEN.items():
        for io, role in zip(("in", "out"), roles):
            std, mult = ab(role, d)
            out[f"unit_{role}"] = (std * mult) ** 2 * d  # must be 1: W_eff = m W has entries of variance 1/d
            out[f"c_{io}_{kind}"] = lr * mult**2 / g2
    for role in ("q", "k"):  # read only with more than one token (stage 2)
        std, mult = ab(role, d)
        out[f"unit_{role}"] = (std * mult) ** 2 * d
        out[f"c_{role}"] = lr * mult**2 / g2
    out["logit_scale"] = attention_scale(p, N) * N  # A = N^-alpha_A q.k = logit_scale <q k> over the head's N
    return out


def mean_field_rates(
    p: Parametrization, opt: OptimConfig, L: int, d_in: int, d: int = 64, tokens: int = 1, H: int = 1
) -> Rates:
    """The Rates of parametrization p under optimizer rule opt at depth L, for inputs of d_in features and `tokens`
    tokens per sample; with more than one token the limit is N -> oo at fixed H heads (stage 2).

    ValueError (one line) when the solver does not cover the setting: an optimizer other than plain SGD, the
    standard parametrization, alpha_A != 1 with more than one token (A would keep O(1) random fluctuations per
    head), a hidden role whose init std x multiplier is not 1/sqrt(fan_in), or any coefficient that changes
    between widths d and 4d (no mean-field limit of this form)."""
    if opt.name != "sgd":
        raise ValueError(f"--optimizer: the DMFT solver covers plain SGD (full batch), not {opt.name}")
    if p.standard:
        raise ValueError(
            "--param: the standard parametrization has no mean-field limit; use mup (or another non-standard preset)"
        )
    if tokens > 1 and p.alpha_A != 1.0:
        raise ValueError(
            f"--param: with {tokens} tokens the DMFT solver covers alpha_A = 1 (every head's A(t) is "
            f"deterministic as N -> oo); {p.name} has alpha_A = {p.alpha_A:g}"
        )
    a, b = _raw_rates(p, opt, d * H, L, d_in, H), _raw_rates(p, opt, 4 * d * H, L, d_in, H)
    qk = ("unit_q", "unit_k", "c_q", "c_k", "logit_scale")
    for key, va in a.items():
        if key in qk and tokens == 1:
            continue  # one token: W_Q, W_K never reach the output
        vb = b[key]
        if not math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-300):
            raise ValueError(
                f"--param: the coefficient {key} of {p.name} changes with the width ({va:.6g} at d={d}, "
                f"{vb:.6g} at d={4 * d}): no mean-field limit the solver covers"
            )
    if tokens > 1 and not math.isclose(a["c_q"], a["c_k"], rel_tol=1e-9):
        raise ValueError(
            f"--param: the DMFT solver needs one learning-rate rule for W_Q and W_K (got c_q "
            f"{a['c_q']:.6g}, c_k {a['c_k']:.6g})"
        )
    roles = HIDDEN["attn"] + HIDDEN["mlp"] + (("q", "k") if tokens > 1 else ())
    for role in roles:
        if not math.isclose(a[f"unit_{role}"], 1.0, rel_tol=1e-9):
            raise ValueError(
                f"--param: the {role} weights of {p.name} do not have init std x multiplier = "
                f"1/sqrt(fan_in) (got {a[f'unit_{role}']:.6g}/fan_in)"
            )
    return Rates(
        b=float(branch_multiplier(p, L)),
        gamma0=float(p.gamma0),
        s_embed=a["s_embed"],
        s_pos=a["s_pos"],
        sigma_w2=0.0 if p.centre == "zero_readout" else a["sigma_w"] ** 2,
        c_embed=a["c_embed"],
        c_pos=a["c_pos"],
        c_in={k: a[f"c_in_{k}"] for k in HIDDEN},
        c_out={k: a[f"c_out_{k}"] for k in HIDDEN},
        c_read=a["c_read"],
        c_qk=a["c_q"] if tokens > 1 else None,
    )


@dataclass(frozen=True)
class Problem:
    """One full-batch training problem in the limit.

    x_train (P, S, D_in) or (P, D_in) (one token), y_train (P,) int: the training set, S patch tokens per sample;
    x_test (P_test, S, D_in) or (P_test, D_in), y_test: the fixed test set (its outputs are computed, it never
    enters the loss). n_classes: C outputs. L: blocks. steps: T optimizer steps (outputs at t = 0..T). loss: "ce"
    or "mse". rates: `mean_field_rates` (with tokens = S when S > 1)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    L: int
    steps: int
    loss: str
    rates: Rates

    def __post_init__(self) -> None:
        for name in ("x_train", "x_test"):
            a = np.asarray(getattr(self, name))
            if a.ndim not in (2, 3) or not np.isfinite(a).all():
                raise ValueError(
                    f"{name} must be a finite (samples, tokens, features) or (samples, features) array, "
                    f"got shape {a.shape}"
                )
        if self.x_train.shape[0] < 1 or self.tokens(self.x_train).shape[1:] != self.tokens(self.x_test).shape[1:]:
            raise ValueError(
                f"x_train {self.x_train.shape} and x_test {self.x_test.shape} need >= 1 training sample "
                f"and the same tokens and features"
            )
        if self.S > 1 and self.rates.c_qk is None:
            raise ValueError(
                f"{self.S} tokens per sample: the rates must be made with tokens={self.S} "
                f"(mean_field_rates), which adds the W_Q, W_K coefficient"
            )
        for name, x in (("y_train", self.x_train), ("y_test", self.x_test)):
            y = np.asarray(getattr(self, name))
            if y.shape != (x.shape[0],) or (y.size and (y.min() < 0 or y.max() >= self.n_classes)):
                raise ValueError(f"{name} must hold one label in [0, {self.n_classes}) per sample")
        if self.loss not in LOSSES:
            raise one_of_error("--loss", self.loss, LOSSES)
        if int(self.L) != self.L or self.L < 1 or int(self.steps) != self.steps or self.steps < 0:
            raise ValueError(f"L must be >= 1 and steps >= 0, got L={self.L}, steps={self.steps}")

    @staticmethod
    def tokens(x) -> np.ndarray:
        """x as (samples, S, D_in): a 2-D array is one token per sample."""
        x = np.asarray(x)
        return x[:, None, :] if x.ndim == 2 else x

    @property
    def P(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def S(self) -> int:
        """Tokens (patches) per sample."""
        return int(self.tokens(self.x_train).shape[1])

    @property
    def M(self) -> int:
        """Training plus test samples (the forward fields cover both)."""
        return int(self.x_train.shape[0] + self.x_test.shape[0])

    @property
    def d_in(self) -> int:
        return int(self.x_train.shape[-1])

    def input_gram(self) -> np.ndarray:
        """x_(mu,s).x_(nu,s')/D_in over the tokens of the training then the test samples, (M S, M S), float64,
        token index mu*S + s."""
        x = np.concatenate([self.tokens(self.x_train), self.tokens(self.x_test)]).astype(np.float64)
        x = x.reshape(-1, self.d_in)  # (M*S, D_in)
        return x @ x.T / self.d_in


# ------------------------------------------------------------------------------------ what the solver covers
SUPPORTED_MODEL = {
    "variant": ("paper", None),
    "norm": (None, "ln"),
    "mlp": (None, "gelu"),
    "kv_group": (None, 1),
    "rope": (None, False),
    "tie_embeddings": (None, False),
    "lws": ("isotropic",),
    "ffn_mult": (1.0, 1),
}


def check_solvable(config: dict, seq_len: int) -> None:
    """ValueError (one line naming the option) unless the run config (`RunConfig.to_dict()` as plain data) and the
    task's tokens per sample are what the solver covers: an image task (one token when the patch is the whole
    image, stage 1; several at alpha_A = 1, stage 2, checked by `mean_field_rates`), the paper block with
    LayerNorm, a GELU MLP of width d and no GQA, an isotropic profile."""
    m = config["model"]
    if m.get("task") not in ("vision", "digits"):
        raise ValueError(f"--task: the DMFT solver covers the image tasks (vision, digits), not {m.get('task')}")
    flags = {
        "variant": "--variant",
        "norm": "[model] norm",
        "mlp": "[model] mlp",
        "kv_group": "--kv-group",
        "rope": "[model] rope",
        "tie_embeddings": "[model] tie_embeddings",
        "lws": "--lws",
        "ffn_mult": "[model] ffn_mult",
    }
    for key, allowed in SUPPORTED_MODEL.items():
        if m.get(key) not in allowed:
            want = next(a for a in allowed[::-1] if a is not None)
            raise ValueError(
                f"{flags[key]}: the DMFT solver covers {key} = {json.dumps(want)} (the paper's block, "
                f"isotropic), got {json.dumps(m.get(key))}"
            )
    if config.get("batch", "random") != "full":
        raise ValueError("--batch: the DMFT solver models full-batch gradient descent (--batch full)")

"""Per-optimizer rules (the paper's Table 1) -> `torch.optim` param groups, one per distinct (lr, eps, decay).

One global learning rate per optimizer family, written in d = N*H and l = L/L0 (docs/parametrization.md):
  SGD, SGD+momentum:  lr = eta0 * gamma0^2 * d * l^(2 alpha_L - 1)    (official code: H*N*gamma0^2*(L/L0)^(2a_L-1)*lr)
  Adam, AdamW:        lr = eta0 * gamma0 * d^-1/2 * l^(alpha_L - 1)     (official code: lr/sqrt(H*N) at gamma0 = 1)
The abc multipliers of `spec.abc` make one global rate correct for every role (no per-role lr factor). The
gamma0 in Adam's rate keeps gamma0's meaning the same as under SGD: the output moves O(eta0) per step and the
features O(gamma0 eta0) (Adam's step size ignores the gradient's 1/gamma0, so the rate must carry it).
Adam's eps is eps0 times the size of the role's gradient entries at init in the same counting (`eps_multiplier`),
so eps never dominates or vanishes relative to the gradient as the model grows; eps0 defaults to 1e-20 (the
official code) and is never a silent 1e-8. Weight decay: the decay per step lr*wd equals eta0*weight_decay at
every size, decoupled (AdamW) or coupled L2 (SGD, where lr*wd*W is the same decay); Adam with coupled L2 is
refused, because Adam divides the L2 term by the gradient scale, which changes with d (use adamw). SP (the
negative control) uses lr = eta0 and torch's usual eps = 1e-8, stated in its config.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

from .checks import ConfigError, check_float
from .spec import OPTIMIZERS, Parametrization, depth_ratio, is_adam

if TYPE_CHECKING:  # transformer.py imports this module
    from .transformer import LWSTransformer


@dataclass(frozen=True)
class OptimConfig:
    """name: sgd | sgd-momentum | adam | adamw. eta0: base learning rate before the rule.
    eps0: Adam eps before its per-role multiplier (None: 1e-20, or 1e-8 under SP).
    weight_decay: decay per step is eta0 * weight_decay (decoupled for adamw, coupled otherwise)."""

    name: str = "adam"
    eta0: float = 0.05
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps0: float | None = None
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in OPTIMIZERS:
            raise ConfigError("name", f"must be one of {', '.join(OPTIMIZERS)}; unknown optimizer {self.name!r}")
        check_float("eta0", self.eta0, 0.0, lo_open=True)
        check_float("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        if not isinstance(self.betas, (tuple, list)) or len(self.betas) != 2:
            raise ConfigError("betas", f"must be a pair of numbers in [0, 1), got {self.betas!r}")
        for b in self.betas:
            try:
                check_float("betas", b, 0.0, 1.0, hi_open=True)
            except ConfigError:
                raise ConfigError("betas", f"must be a pair of numbers in [0, 1), got {self.betas!r}") from None
        if self.eps0 is not None:
            check_float("eps0", self.eps0, 0.0)
        check_float("weight_decay", self.weight_decay, 0.0)
        if self.name == "adam" and self.weight_decay:
            raise ConfigError(
                "weight_decay",
                "with optimizer adam is coupled L2, which Adam rescales by the gradient "
                "size (not scale-invariant); use optimizer adamw for decoupled weight decay",
            )

    def to_dict(self) -> dict:
        return asdict(self)


def global_lr(p: Parametrization, opt: OptimConfig, d: int, L: int) -> float:
    """The global learning rate of Table 1 (units: the optimizer's own lr)."""
    if p.standard:
        return opt.eta0
    ell = depth_ratio(p, L)
    if is_adam(opt.name):
        return opt.eta0 * p.gamma0 / math.sqrt(d) * ell ** (p.alpha_L - 1.0)
    return opt.eta0 * p.gamma0**2 * d * ell ** (2.0 * p.alpha_L - 1.0)


def eps_multiplier(p: Parametrization, role: str, d: int, L: int, N: int) -> float:
    """Adam eps multiplier of a role: the size of its gradient entries at init (docs/parametrization.md), 1 under SP.

    With delta ~ 1/(gamma0 d) the backprop signal at a residual coordinate: embedding, positions and readout
    entries get multiplier x O(1) x delta or O(1)/(gamma0 d^1/2) -> l^(1-alpha_L)/(gamma0 d^1/2); hidden entries
    get branch x d^-1/2 x delta -> l^-alpha_L/(gamma0 d^3/2); q and k entries N^-1/2 less, because at init
    dL/dA = (dL/do).v sums the N coordinates of a head against a random W_O (sqrt(N), not N, terms).
    `tests/test_parametrization.py` measures gradient / multiplier flat in N, H and L (|slope| < 0.15)."""
    if p.standard:
        return 1.0
    ell = depth_ratio(p, L)
    if role in VARIANT_EPS:
        return VARIANT_EPS[role](p, d, ell, N)
    if role in ("embed", "pos", "readout"):
        return ell ** (1.0 - p.alpha_L) / (p.gamma0 * math.sqrt(d))
    qk = 1.0 / math.sqrt(N) if role in ("q", "k") else 1.0
    return qk * ell ** (-p.alpha_L) / (p.gamma0 * d**1.5)


# Adam gradient scales at init of the block variants' roles (spec.VARIANT_NOTES), the same counting as above with
# Adam's multipliers (spec.vector_mult, spec.laurel_abc): mult x (what the parameter multiplies) x delta. The rank r
# of LAUREL's B is O(1) and left out.
VARIANT_EPS = {
    "gain": lambda p, d, ell, N: ell ** (-p.alpha_L) / (p.gamma0 * math.sqrt(d)),
    "gain_out": lambda p, d, ell, N: ell ** (1.0 - p.alpha_L) / (p.gamma0 * math.sqrt(d)),
    "qk_gain": lambda p, d, ell, N: ell ** (-p.alpha_L) / (p.gamma0 * math.sqrt(d * N)),
    "ngpt_sqk": lambda p, d, ell, N: ell ** (-p.alpha_L) / (p.gamma0 * math.sqrt(d * N)),
    "eigen": lambda p, d, ell, N: ell ** (-p.alpha_L) / (p.gamma0 * math.sqrt(d)),
    "ngpt_sz": lambda p, d, ell, N: ell ** (1.0 - p.alpha_L) / p.gamma0,
    "laurel_a": lambda p, d, ell, N: ell ** (-p.alpha_L) / p.gamma0,
    "laurel_res": lambda p, d, ell, N: ell ** (-p.alpha_L) / p.gamma0,
    "laurel_A": lambda p, d, ell, N: ell ** (-p.alpha_L) / (p.gamma0 * d**1.5),
    "laurel_B": lambda p, d, ell, N: ell ** (-p.alpha_L) / (p.gamma0 * math.sqrt(d)),
}


def eps0(p: Parametrization, opt: OptimConfig) -> float:
    """The eps before the per-role multiplier."""
    if opt.eps0 is not None:
        return opt.eps0
    return 1e-8 if p.standard else 1e-20


def param_rules(model: LWSTransformer, p: Parametrization, opt: OptimConfig) -> list[dict[str, Any]]:
    """One dict per trainable parameter: name, role, lr, eps (Adam only) and weight_decay (for `describe`)."""
    d, L, N = model.cfg.d_model, model.cfg.L, model.cfg.N
    lr = global_lr(p, opt, d, L)
    rows = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        role = model.param_roles[name]
        row: dict[str, Any] = {
            "name": name,
            "role": role,
            "param": param,
            "lr": lr,
            # decay per step lr*wd = eta0*weight_decay at every size
            "weight_decay": opt.weight_decay * opt.eta0 / lr if opt.weight_decay else 0.0,
        }
        if is_adam(opt.name):
            row["eps"] = eps0(p, opt) * eps_multiplier(p, role, d, L, N)
        rows.append(row)
    return rows


def param_groups(model: LWSTransformer, p: Parametrization, opt: OptimConfig) -> list[dict]:
    """Torch param groups: parameters that share lr, eps and weight decay share a group (so the optimizer's
    multi-tensor path batches them); each group lists its roles under "roles". Any SGD- or Adam-family torch
    optimizer accepts them."""
    groups: dict[tuple, dict] = {}
    for row in param_rules(model, p, opt):
        key = (row["lr"], row.get("eps"), row["weight_decay"])
        g = groups.setdefault(
            key,
            {
                "params": [],
                "roles": [],
                "lr": row["lr"],
                "weight_decay": row["weight_decay"],
                **({"eps": row["eps"]} if "eps" in row else {}),
            },
        )
        g["params"].append(row["param"])
        if row["role"] not in g["roles"]:
            g["roles"].append(row["role"])
    return list(groups.values())


def build_optimizer(model: LWSTransformer, p: Parametrization, opt: OptimConfig) -> torch.optim.Optimizer:
    """Return the torch optimizer for `model` under parametrization `p` and rule `opt`."""
    return optimizer_for(param_groups(model, p, opt), opt)


def optimizer_for(groups: list[dict], opt: OptimConfig) -> torch.optim.Optimizer:
    """The torch optimizer of `opt`'s family (SGD, heavy-ball SGD, Adam, AdamW) over param groups that carry their
    own lr (and eps, weight decay): `param_groups`, or `parametrizations.own_model.OwnModel.param_groups`."""
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"])
    if opt.name == "sgd-momentum":
        # heavy ball, as optimizers.momentum(mass=0.9) in the official code
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=opt.momentum, dampening=0.0, nesterov=False)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=groups[0]["lr"], betas=opt.betas)

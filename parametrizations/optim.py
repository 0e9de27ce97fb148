"""Per-optimizer rules (the paper's Table 1) -> ordinary `torch.optim` param groups.

One global learning rate per optimizer family, written in d = N*H and l = L/L0:
  SGD, SGD+momentum:  lr = eta0 * gamma0^2 * d * l^(2 alpha_L - 1)      (official code: H*N*gamma0^2*(L/L0)^(2a_L-1)*lr)
  Adam, AdamW:        lr = eta0 * d^-1/2 * l^(alpha_L - 1)              (official code: lr/sqrt(H*N) at alpha_L = 1)
The abc multipliers of `spec.abc` make one global rate correct for every role, so the per-role learning-rate
multiplier is 1. Adam's eps is eps0 times the scale of the role's gradient entries in the Table 1 counting
(embedding 1/gamma0, readout 1/(gamma0 sqrt d), hidden l^-alpha_L/(gamma0 d)), so eps never dominates as the model
grows; eps0 defaults to 1e-20 (the official code) and is never a silent 1e-8. Weight decay is scaled so that the
decay per step, lr*wd, equals eta0*weight_decay at every size. SP (the negative control) uses lr = eta0 and
torch's usual eps = 1e-8, stated in its config.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .spec import Parametrization, depth_ratio, is_adam


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
        is_adam(self.name)  # validates the name
        if not (self.eta0 > 0 and math.isfinite(self.eta0)):
            raise ValueError(f"eta0 must be a positive number, got {self.eta0}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    def to_dict(self) -> dict:
        return asdict(self)


def global_lr(p: Parametrization, opt: OptimConfig, d: int, L: int) -> float:
    """The global learning rate of Table 1 (units: the optimizer's own lr)."""
    if p.standard:
        return opt.eta0
    ell = depth_ratio(p, L)
    if is_adam(opt.name):
        return opt.eta0 / math.sqrt(d) * ell ** (p.alpha_L - 1.0)
    return opt.eta0 * p.gamma0**2 * d * ell ** (2.0 * p.alpha_L - 1.0)


def lr_multiplier(p: Parametrization, role: str, opt: OptimConfig) -> float:
    """Per-role learning-rate multiplier on top of the global rate (1: the abc multipliers carry the scaling)."""
    return 1.0


def eps_multiplier(p: Parametrization, role: str, d: int, L: int) -> float:
    """Adam eps multiplier of a role: the scale of its gradient entries (see module docstring); 1 under SP."""
    if p.standard:
        return 1.0
    if role in ("embed", "pos"):
        return 1.0 / p.gamma0
    if role == "readout":
        return 1.0 / (p.gamma0 * math.sqrt(d))
    return depth_ratio(p, L) ** (-p.alpha_L) / (p.gamma0 * d)


def eps0(p: Parametrization, opt: OptimConfig) -> float:
    """The eps before the per-role multiplier."""
    if opt.eps0 is not None:
        return opt.eps0
    return 1e-8 if p.standard else 1e-20


def param_groups(model: torch.nn.Module, p: Parametrization, opt: OptimConfig) -> list[dict]:
    """Param groups with lr, eps and weight_decay per parameter, from `model.param_roles` (name -> role).

    Returns one group per parameter (with a "name" and "role" key for inspection); any torch optimizer of the
    SGD or Adam family accepts them.
    """
    d, L = model.cfg.d_model, model.cfg.L
    lr0 = global_lr(p, opt, d, L)
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        role = model.param_roles[name]
        lr = lr0 * lr_multiplier(p, role, opt)
        group = {"params": [param], "name": name, "role": role, "lr": lr,
                 # decay per step lr*wd = eta0*weight_decay at every size
                 "weight_decay": opt.weight_decay * opt.eta0 / lr if opt.weight_decay else 0.0}
        if is_adam(opt.name):
            group["eps"] = eps0(p, opt) * eps_multiplier(p, role, d, L)
        groups.append(group)
    return groups


def build_optimizer(model: torch.nn.Module, p: Parametrization, opt: OptimConfig) -> torch.optim.Optimizer:
    """Return the torch optimizer for `model` under parametrization `p` and rule `opt`."""
    groups = param_groups(model, p, opt)
    if opt.name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"])
    if opt.name == "sgd-momentum":
        # heavy ball, as optimizers.momentum(mass=0.9) in the official code
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=opt.momentum, dampening=0.0, nesterov=False)
    cls = torch.optim.Adam if opt.name == "adam" else torch.optim.AdamW
    return cls(groups, lr=groups[0]["lr"], betas=opt.betas)

"""Per-parameter table of the parametrization: role, shape, init std, forward multiplier, lr, eps, weight decay."""
from __future__ import annotations

from dataclasses import dataclass

from .optim import OptimConfig, eps0, eps_multiplier, global_lr, lr_multiplier
from .spec import Parametrization, is_adam
from .transformer import LWSTransformer


@dataclass(frozen=True)
class ParamRow:
    """One parameter: init std and multiplier are the abc pair; lr = global lr * lr_mult; eps = eps0 * eps_mult."""

    name: str
    role: str
    shape: tuple[int, ...]
    init_std: float
    mult: float
    lr: float
    lr_mult: float
    eps_mult: float | None
    eps: float | None


def describe(model: LWSTransformer, p: Parametrization, opt: OptimConfig) -> list[ParamRow]:
    """Return one row per parameter of `model`, in module order."""
    d, L = model.cfg.d_model, model.cfg.L
    lr0 = global_lr(p, opt, d, L)
    rows = []
    for name, param in model.named_parameters():
        module = model.get_submodule(name.rsplit(".", 1)[0])
        role = model.param_roles[name]
        em = eps_multiplier(p, role, d, L) if is_adam(opt.name) else None
        rows.append(ParamRow(name, role, tuple(param.shape), module.init_std, module.mult,
                             lr0 * lr_multiplier(p, role, opt), lr_multiplier(p, role, opt),
                             em, None if em is None else eps0(p, opt) * em))
    return rows


def header(model: LWSTransformer, p: Parametrization, opt: OptimConfig) -> list[str]:
    """Lines summarising the model and the scalar multipliers of the paper's equations."""
    cfg, sh = model.cfg, model.shapes
    b = model.blocks[0]
    return [
        f"parametrization {p.name}: alpha_A={p.alpha_A:g} alpha_L={p.alpha_L:g} beta0={p.beta0:g} "
        f"gamma0={p.gamma0:g} L0={p.L0:g} centre={p.centre}" + (" (standard parametrization)" if p.standard else ""),
        f"model: task={cfg.task} N={cfg.N} H={cfg.H} L={cfg.L} d_model={cfg.d_model} axis={cfg.axis} lws={cfg.lws}",
        f"per-layer heads {list(sh.heads)}, d_ff {list(sh.d_ff)}",
        f"attention scale N^-alpha_A = {b.attn_scale:.6g}; residual branch beta0 (L/L0)^-alpha_L = {b.branch:.6g}",
        f"optimizer {opt.name}: eta0={opt.eta0:g} -> global lr {global_lr(p, opt, cfg.d_model, cfg.L):.6g}"
        + (f", eps0={eps0(p, opt):.3g}" if is_adam(opt.name) else ""),
    ]

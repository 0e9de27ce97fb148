"""Per-parameter table of the parametrization: role, shape, init std, forward multiplier, lr, eps, weight decay,
and the one-line derivation of each role's rule."""

from __future__ import annotations

from dataclasses import dataclass

from .layers import ScaledWeight
from .optim import OptimConfig, eps0, global_lr, param_rules
from .spec import Parametrization, is_adam, rule_note
from .transformer import LWSTransformer


@dataclass(frozen=True)
class ParamRow:
    """One parameter: init std and multiplier are the abc pair; lr is the optimizer's lr (one global rate);
    eps (Adam only) is eps0 times the role's gradient scale; weight_decay is the torch group's value."""

    name: str
    role: str
    shape: tuple[int, ...]
    init_std: float
    mult: float
    lr: float
    eps: float | None
    weight_decay: float
    init_value: float | None = None  # vectors and scalars (ScaledVector): their constant initial value


def describe(model: LWSTransformer, p: Parametrization, opt: OptimConfig) -> list[ParamRow]:
    """Return one row per parameter of `model`, in module order."""
    rows = []
    for r in param_rules(model, p, opt):
        module = model.get_submodule(r["name"].rsplit(".", 1)[0])
        assert isinstance(module, ScaledWeight)  # every parameter lives in a ScaledWeight
        rows.append(
            ParamRow(
                r["name"],
                r["role"],
                tuple(r["param"].shape),
                module.init_std,
                module.mult,
                r["lr"],
                r.get("eps"),
                r["weight_decay"],
                getattr(module, "init_value", None),
            )
        )
    return rows


def rule_lines(model: LWSTransformer, p: Parametrization, opt: OptimConfig) -> list[str]:
    """One line per role present in the model: why its std, multiplier and lr are what they are."""
    seen: list[str] = []
    for role in model.param_roles.values():
        if role not in seen:
            seen.append(role)
    return [f"{role:8s} {rule_note(p, role, opt.name)}" for role in seen]


def header(model: LWSTransformer, p: Parametrization, opt: OptimConfig) -> list[str]:
    """Lines summarising the model and the scalar multipliers of the paper's equations."""
    cfg, sh = model.cfg, model.shapes
    b = model.blocks[0]
    return [
        f"parametrization {p.name}: alpha_A={p.alpha_A:g} alpha_L={p.alpha_L:g} beta0={p.beta0:g} "
        f"gamma0={p.gamma0:g} L0={p.L0:g} centre={p.centre}" + (" (standard parametrization)" if p.standard else ""),
        f"model: task={cfg.task} N={cfg.N} H={cfg.H} L={cfg.L} d_model={cfg.d_model} axis={cfg.axis} lws={cfg.lws}",
        f"per-layer heads {list(sh.heads)}, d_ff {list(sh.d_ff)}"
        + (f", KV heads {[h // model.opts.kv_group for h in sh.heads]}" if model.opts.kv_group > 1 else ""),
        model.opts.summary()
        + (f"; the readout reads the token table with multiplier {model.readout.mult:.4g}" if model.opts.tie else ""),
        f"attention scale N^-alpha_A = {b.attn_scale:.6g}; residual branch beta0 (L/L0)^-alpha_L = {b.branch:.6g}",
        f"optimizer {opt.name}: eta0={opt.eta0:g} -> global lr {global_lr(p, opt, cfg.d_model, cfg.L):.6g}"
        + (f", eps0={eps0(p, opt):.3g}" if is_adam(opt.name) else "")
        + (f", weight decay per step eta0*wd = {opt.eta0 * opt.weight_decay:.3g}" if opt.weight_decay else ""),
    ]

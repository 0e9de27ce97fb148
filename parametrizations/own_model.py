"""Your own PyTorch model under the parametrization (docs/own-model.md).

You mark the roles of your nn.Module's parameters and modules by name patterns; given N, H, L and a preset,
`apply_parametrization` puts the model under the parametrization in place, the way the built-in model
(`parametrizations.transformer`) is built:
- every marked matrix is drawn from its abc law (`parametrizations.spec.abc`: init std per role, fan-in and size),
  each from its own generator keyed by its name and the seed (`parametrizations.layers.keyed_generator`, the
  built-in model's `init_key`): a model whose names are the built-in model's gets its weights bit for bit;
- every marked parameter gets its forward multiplier (value = mult * w, through `torch.nn.utils.parametrize`: the
  optimizer moves the stored w, the module sees mult * w); vectors (gains, biases) keep their initial value;
- the attention modules get the attention scale N^-alpha_A in their float attribute `attn_scale` (their forward
  must compute A = attn_scale * q.k); the outputs of the attention and MLP modules (the residual branches) are
  multiplied by beta0 (L/L0)^-alpha_L (a forward hook);
- `OwnModel.param_groups` / `OwnModel.build_optimizer` give the optimizer of Table 1: one global learning rate per
  optimizer family (`parametrizations.optim.global_lr`), Adam's eps per role (`parametrizations.optim.eps_multiplier`)
  and the decoupled weight decay.

Roles (`ROLE_NAMES`): parameters are "embedding" (token table, positional table or the patch embedding),
"qk" (the query and key projections), "hidden" (value, attention output, MLP matrices), "readout" and "vector"
(gains, biases: `spec.vector_mult`'s "gain" rule); the finer "embed", "pos", "q", "k", "v", "o", "mlp_in",
"mlp_out" follow the same rules and also name the coordinate-check sites (`dmft.own_coord`). Modules are "block"
(a pre-LN residual block, h -> h), "attention" and "mlp" (its two branches). Patterns are matched against
`named_parameters()` / `named_modules()` names: `*` matches one dotted part, `**` any number of parts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from .layers import keyed_generator, standard_normal
from .optim import OptimConfig, eps0, eps_multiplier, global_lr, optimizer_for
from .spec import Parametrization, abc, attention_scale, branch_multiplier, get_preset, is_adam, vector_mult
from .transformer import init_key

# role -> the rule of `parametrizations.spec` it follows (matrices: an abc role; vectors: a vector_mult role)
PARAM_ROLES = {
    "embedding": "embed",
    "embed": "embed",
    "pos": "pos",
    "qk": "q",
    "q": "q",
    "k": "k",
    "hidden": "v",
    "v": "v",
    "o": "o",
    "mlp_in": "mlp_in",
    "mlp_out": "mlp_out",
    "readout": "readout",
    "vector": "gain",
}
MODULE_ROLES = ("block", "attention", "mlp")
ROLE_NAMES = tuple(PARAM_ROLES) + MODULE_ROLES
MATRIX_RULES = ("embed", "pos", "q", "k", "v", "o", "mlp_in", "mlp_out", "readout")


def pattern_regex(pattern: str) -> re.Pattern:
    """The regex of a name pattern: `*` one dotted part (no dots), `**` any run of characters; the rest literal."""
    parts = re.split(r"(\*\*|\*)", pattern)
    return re.compile("".join(".*" if p == "**" else "[^.]*" if p == "*" else re.escape(p) for p in parts))


def match_roles(names: list[str], roles: dict[str, str], what: str) -> dict[str, tuple[str, str]]:
    """{name: (role, pattern)} for every name matched by a pattern of `roles` ({pattern: role}). ValueError naming
    the name and both patterns when a name gets two different roles, or naming a pattern that matches no name."""
    out: dict[str, tuple[str, str]] = {}
    for pattern, role in roles.items():
        rx = pattern_regex(pattern)
        hits = [n for n in names if rx.fullmatch(n)]
        if not hits:
            raise ValueError(
                f"roles: pattern {pattern!r} ({role}) matches no {what}; {what}s are "
                f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
            )
        for n in hits:
            if n in out and out[n][0] != role:
                raise ValueError(
                    f"roles: {what} {n!r} matches two roles: {out[n][0]} (pattern {out[n][1]!r}) and "
                    f"{role} (pattern {pattern!r})"
                )
            out.setdefault(n, (role, pattern))
    return out


class Multiplier(nn.Module):
    """The forward multiplier of one parameter (abc form): the module sees w * mult, the optimizer moves w."""

    def __init__(self, mult: float):
        super().__init__()
        self.mult = float(mult)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mult

    def extra_repr(self) -> str:
        return f"mult={self.mult:.4g}"


class BranchScale:
    """A forward hook: the residual branch's output times beta0 (L/L0)^-alpha_L."""

    def __init__(self, mult: float):
        self.mult = float(mult)

    def __call__(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * self.mult


@dataclass(frozen=True)
class ParamRule:
    """One parameter under the parametrization. name: its name before `apply_parametrization` (module.attr);
    role: as marked; rule: the `spec` role it follows; fan_in: the fan-in of its abc rule (1 for a table);
    init_std: its abc init std (NaN for a vector, which keeps its initial value); mult: its forward multiplier;
    block: the index of the block it lies in (-1: outside every block)."""

    name: str
    module: str
    attr: str
    role: str
    rule: str
    shape: tuple[int, ...]
    fan_in: int
    init_std: float
    mult: float
    block: int


@dataclass
class OwnModel:
    """A model put under the parametrization by `apply_parametrization`. model: the (changed) nn.Module; p, optimizer,
    N, H, L: what it was put under; rules: one ParamRule per trainable parameter, in `named_parameters` order;
    blocks, attention, mlps: the names of the modules marked so, in module order; attn_scale: N^-alpha_A; branch:
    beta0 (L/L0)^-alpha_L."""

    model: nn.Module
    p: Parametrization
    optimizer: str
    N: int
    H: int
    L: int
    rules: list[ParamRule]
    blocks: list[str]
    attention: list[str]
    mlps: list[str]
    attn_scale: float
    branch: float
    seed: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        """The residual width d = N*H."""
        return self.N * self.H

    def stored(self, rule: ParamRule, model: nn.Module | None = None) -> nn.Parameter:
        """The stored w of a parameter (what the optimizer moves) in `model` (default: this one, or a deep copy)."""
        owner = (model or self.model).get_submodule(rule.module)
        return owner.parametrizations[rule.attr].original  # type: ignore[index,union-attr]

    def param_groups(self, opt: OptimConfig) -> list[dict]:
        """Torch param groups of Table 1 (`parametrizations.optim`): the global lr of the optimizer family for every
        parameter, Adam's eps0 times the role's gradient scale, the weight decay lr*wd = eta0*weight_decay; one group
        per distinct (lr, eps, weight decay), each listing its roles under "roles". ValueError when `opt` is another
        optimizer than the model was put under (the multipliers depend on the family)."""
        if opt.name != self.optimizer:
            raise ValueError(
                f"optimizer: the model was put under the parametrization for {self.optimizer}, "
                f"got {opt.name} (the multipliers depend on it; apply again)"
            )
        lr = global_lr(self.p, opt, self.d, self.L)
        wd = opt.weight_decay * opt.eta0 / lr if opt.weight_decay else 0.0
        groups: dict[tuple, dict] = {}
        for r in self.rules:
            eps = (
                eps0(self.p, opt) * eps_multiplier(self.p, r.rule, self.d, self.L, self.N)
                if is_adam(opt.name)
                else None
            )
            g = groups.setdefault(
                (lr, eps, wd),
                {"params": [], "roles": [], "lr": lr, "weight_decay": wd, **({"eps": eps} if eps is not None else {})},
            )
            g["params"].append(self.stored(r))
            if r.rule not in g["roles"]:
                g["roles"].append(r.rule)
        return list(groups.values())

    def build_optimizer(self, opt: OptimConfig) -> torch.optim.Optimizer:
        """The torch optimizer of `opt` over `param_groups(opt)`."""
        return optimizer_for(self.param_groups(opt), opt)

    def lines(self) -> list[str]:
        """One line per parameter (name, role, rule, shape, init std, multiplier), then the two scalar multipliers."""
        out = [
            f"{r.name:40s} {r.role:9s} {r.rule:8s} {r.shape!s:14s} std={r.init_std:.4g} mult={r.mult:.4g}"
            for r in self.rules
        ]
        out.append(
            f"attention scale N^-alpha_A = {self.attn_scale:.6g} on {len(self.attention)} attention modules; "
            f"branch multiplier beta0 (L/L0)^-alpha_L = {self.branch:.6g} on {len(self.attention) + len(self.mlps)}"
            f" branches"
        )
        return out


def _fan_in(owner: nn.Module, w: torch.Tensor, rule: str) -> int:
    """The fan-in of a matrix rule: 1 for a table (an embedding that is not an nn.Linear: one-hot inputs), else the
    input dimension of a (fan_out, fan_in) matrix, as nn.Linear stores it."""
    if rule in ("embed", "pos") and not isinstance(owner, nn.Linear):
        return 1
    return int(w.shape[-1])


def _nest_dim(owner: nn.Module, rule: str) -> int | None:
    """The dim along the residual width d that the built-in model draws one slice at a time (embedding, positions,
    readout; `parametrizations.layers.standard_normal`), so that the same names get the same draws."""
    if rule in ("embed", "pos"):
        return 0 if isinstance(owner, nn.Linear) else 1
    return 1 if rule == "readout" else None


def _init_names(
    params: Sequence[tuple[str, torch.Tensor]], marked: dict[str, tuple[str, str]], block_of: dict[str, int]
) -> dict[str, str]:
    """The name each parameter's draw is keyed by (`parametrizations.transformer.init_key`): the built-in model's
    module name for a fine role (blocks.l.q for the one matrix marked q in block l; embed, pos, readout outside
    the blocks), so that a copy of the built-in model is drawn bit for bit as the built-in model is; otherwise
    (a coarse role, or a fine role given to several parameters of one block) the parameter's own module name."""

    def canonical(name: str) -> str | None:
        role, l = marked[name][0], block_of[name]
        if l >= 0 and role in ("q", "k", "v", "o", "mlp_in", "mlp_out"):
            return f"blocks.{l}.{role}"
        if l < 0 and role in ("embed", "pos", "readout"):
            return role
        return None

    wanted = {n: canonical(n) for n, _ in params}
    taken = [c for c in wanted.values() if c is not None]
    return {n: c if c is not None and taken.count(c) == 1 else n.removesuffix(".weight") for n, c in wanted.items()}


def apply_parametrization(
    model: nn.Module,
    roles: dict[str, str],
    *,
    N: int,
    H: int,
    L: int,
    preset: str | Parametrization = "mup",
    optimizer: str = "adam",
    seed: int = 0,
    io_seed: int | None = None,
    **overrides,
) -> OwnModel:
    """Put `model` under the parametrization, in place, and return the `OwnModel` that describes it.

    roles: {name pattern: role} (module docstring, `ROLE_NAMES`); every trainable parameter must match exactly one
    parameter role. N: head dimension, H: heads of a layer, L: blocks (d = N*H is the residual width); preset: a
    preset name or a `Parametrization` (overrides: its fields, e.g. gamma0=0.1); optimizer: sgd, sgd-momentum, adam
    or adamw (the multipliers of embedding, readout and vectors depend on the family); seed keys the blocks' draws,
    io_seed (default: seed) the draws outside the blocks. ValueError naming the parameter, module or pattern for
    a parameter with no role or two, a pattern that matches nothing, an unknown role, a matrix role on a vector
    (or the converse), a readout whose fan-in is not N*H, an attention module without a float `attn_scale`, or a
    model already under a parametrization."""
    for name, v in (("N", N), ("H", H), ("L", L)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(preset, Parametrization):
        p = preset.with_(**overrides) if overrides else preset
    else:
        p = get_preset(preset, **overrides)
    is_adam(optimizer)  # ConfigError naming optimizer when unknown
    for pattern, role in roles.items():
        if role not in ROLE_NAMES:
            raise ValueError(f"roles: unknown role {role!r} for pattern {pattern!r}; roles are {', '.join(ROLE_NAMES)}")
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("model: already under a parametrization (torch.nn.utils.parametrize); build a fresh one")
    d = N * H
    io = seed if io_seed is None else io_seed
    param_roles = {k: v for k, v in roles.items() if v in PARAM_ROLES}
    module_roles = {k: v for k, v in roles.items() if v in MODULE_ROLES}
    params = [(n, w) for n, w in model.named_parameters() if w.requires_grad]
    marked = match_roles([n for n, _ in params], param_roles, "parameter")
    for n, _ in params:
        if n not in marked:
            raise ValueError(f"roles: parameter {n!r} matches no role; give it one of {', '.join(PARAM_ROLES)}")
    mods = match_roles([n for n, _ in model.named_modules() if n], module_roles, "module") if module_roles else {}
    blocks = [n for n, (r, _) in mods.items() if r == "block"]
    attention = [n for n, (r, _) in mods.items() if r == "attention"]
    mlps = [n for n, (r, _) in mods.items() if r == "mlp"]
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    blocks, attention, mlps = (sorted(x, key=order.__getitem__) for x in (blocks, attention, mlps))

    block_of = {n: next((i for i, b in enumerate(blocks) if n.startswith(b + ".")), -1) for n, _ in params}
    keys = _init_names(params, marked, block_of)
    rules = []
    for name, w in params:
        role = marked[name][0]
        rule = PARAM_ROLES[role]
        module, _, attr = name.rpartition(".")
        owner = model.get_submodule(module)
        block = block_of[name]
        if rule == "gain":
            if w.dim() > 1:
                raise ValueError(
                    f"roles: parameter {name!r} of shape {tuple(w.shape)} is marked {role}, a role of "
                    f"vectors and scalars; give a matrix a matrix role"
                )
            std, mult, fan_in = math.nan, vector_mult(p, "gain", d=d, N=N, L=L, optimizer=optimizer), 1
            with torch.no_grad():
                w.div_(mult)  # the value mult * w starts where the model set it
        else:
            if w.dim() != 2:
                raise ValueError(
                    f"roles: parameter {name!r} of shape {tuple(w.shape)} is marked {role}, a role of "
                    f"matrices; mark vectors and scalars 'vector'"
                )
            fan_in = _fan_in(owner, w, rule)
            if rule == "readout" and fan_in != d:
                raise ValueError(f"roles: readout {name!r} has fan-in {fan_in}, but N*H = {N}*{H} = {d}")
            std, mult = abc(p, rule, fan_in, d=d, N=N, L=L, optimizer=optimizer)
            key = init_key(keys[name], seed, io)
            with torch.no_grad():
                z = standard_normal(tuple(w.shape), keyed_generator(*key), _nest_dim(owner, rule))
                w.copy_(z.mul_(std) if not (rule == "readout" and p.centre == "zero_readout") else z.zero_())
        rules.append(ParamRule(name, module, attr, role, rule, tuple(w.shape), fan_in, std, mult, block))
    for r in rules:
        parametrize.register_parametrization(model.get_submodule(r.module), r.attr, Multiplier(r.mult))
    scale, branch = attention_scale(p, N), branch_multiplier(p, L)
    for name in attention:
        m = model.get_submodule(name)
        if not isinstance(getattr(m, "attn_scale", None), float):
            raise ValueError(
                f"roles: attention module {name!r} has no float attribute attn_scale: its forward must "
                f"compute A = attn_scale * q.k (docs/own-model.md)"
            )
        m.attn_scale = scale  # type: ignore[assignment]
    for name in attention + mlps:
        model.get_submodule(name).register_forward_hook(BranchScale(branch))
    return OwnModel(model, p, optimizer, N, H, L, rules, blocks, attention, mlps, scale, branch, seed)

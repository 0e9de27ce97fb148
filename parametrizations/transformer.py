"""The layer-wise-scaled (LWS) transformer (docs/design.md, "The model"), in abc form.

Per block l = 1..L (paper Sec. 2, Fig. 1; official code `train_vit_cifar.py`), with d = N*H residual width and
H_l heads of dimension N in layer l:
    u   = LN(h)                                            LN without affine parameters, eps 1e-6
    q,k = (N^(alpha_A-1)/sqrt(d)) W_Q u, (...) W_K u        W_Q, W_K ~ N(0, N^(2(1-alpha_A)))
    v   = W_V u / sqrt(d)                                   W_V ~ N(0, 1)
    A   = N^-alpha_A q k^T                                  per head, S x S (causal mask for the LM)
    h  <- h + beta0 (L/L0)^-alpha_L  W_O concat_h(softmax(A) v) / sqrt(H_l N)
    h  <- h + beta0 (L/L0)^-alpha_L  W_2 gelu_tanh(W_1 LN(h) / sqrt(d)) / sqrt(d_ff_l)
Front ends: vision (patches -> linear embedding + learned positions) or causal LM (token embedding + learned
positions). Readout: LN(h) mean-pooled over tokens (vision) or per token (LM), times the readout multiplier.
Every multiplier is a plain Python float on its module (FSDP and torch.compile keep those).

Seed ensembles: with `ensemble=E`, every weight carries a leading member dimension (E, rows, cols), member e is
initialised exactly as a separate model with seed e would be, and activations carry a leading E dimension
(E, B, S, d); the matmuls are batched over members (torch.bmm). Inputs (tokens, patches) are shared by members.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .checks import ConfigError, check_choice, check_float, check_int, check_int_list, check_str
from .lws import LayerShapes, LWSProfile, get_profile, resolve
from .spec import Parametrization, abc, attention_scale, branch_multiplier

LN_EPS = 1e-6  # LN_Fixed in the official code
# Upper bounds of the sizes, far above anything that fits in memory (probes.config.check_fits refuses what does
# not fit); they keep the per-layer shape lists and the size arithmetic cheap before that check.
MAX_SIZE = 1 << 20          # N, H, seq_len, d_in, per-layer heads and MLP widths
MAX_DEPTH = 10_000          # L (one shape entry per layer)
MAX_VOCAB = 1 << 32         # vocab_size, n_classes
MAX_FFN_MULT = 1024.0
# Tasks: "lm" (causal, token table) and the image tasks, which share one front end (patches -> linear embedding,
# readout mean-pooled over patches): "vision" (synthetic or CIFAR) and "digits" (scikit-learn's 8x8 digits).
TASKS = ("lm", "vision", "digits")
VISION_TASKS = ("vision", "digits")


def is_vision(task: str) -> bool:
    """True for the image tasks (patch tokens, mean-pooled readout, n_classes outputs), False for the LM."""
    return task in VISION_TASKS


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the model. N: head dim; H: heads of a full-width layer (d_model = N*H); L: depth.

    task: "lm" (causal, vocab_size tokens) or an image task, "vision" or "digits" (seq_len patches of d_in
          features, n_classes; `is_vision`).
    lws: LWS profile preset (isotropic, openelm, vanilla, framed, reverse, crown) or "explicit" with
         lws_heads / lws_d_ff per-layer lists given at H = lws_base_H. The profile is rounded once at
         H = lws_base_H (default H) and every layer's head count and MLP width is then multiplied by
         H / lws_base_H (round once, then scale; docs/design.md).
    ffn_mult: d_ff = ffn_mult * d for the isotropic profile (1 in the paper's code).
    axis: which size is the scaling axis of this run ("N", "H" or "L"); recorded, never implied.
    """

    N: int = 16
    H: int = 4
    L: int = 2
    task: str = "lm"
    vocab_size: int = 256
    n_classes: int = 10
    seq_len: int = 64
    d_in: int = 48
    ffn_mult: float = 1.0
    lws: str = "isotropic"
    lws_base_H: int | None = None
    lws_heads: tuple[int, ...] | None = None
    lws_d_ff: tuple[int, ...] | None = None
    axis: str = "N"

    def __post_init__(self) -> None:
        for name, hi in (("N", MAX_SIZE), ("H", MAX_SIZE), ("L", MAX_DEPTH), ("seq_len", MAX_SIZE),
                         ("vocab_size", MAX_VOCAB), ("n_classes", MAX_VOCAB), ("d_in", MAX_SIZE)):
            check_int(name, getattr(self, name), 1, hi)
        check_choice("task", self.task, TASKS)
        check_choice("axis", self.axis, ("N", "H", "L"))
        check_float("ffn_mult", self.ffn_mult, 0.0, MAX_FFN_MULT, lo_open=True)
        check_str("lws", self.lws)
        if self.lws_base_H is not None:
            check_int("lws_base_H", self.lws_base_H, 1, MAX_SIZE)
        for name in ("lws_heads", "lws_d_ff"):
            if getattr(self, name) is not None:
                check_int_list(name, getattr(self, name), 1, MAX_SIZE, max_len=MAX_DEPTH)
        base = self.lws_base_H or self.H
        if self.H % base:
            raise ConfigError("lws_base_H", f"must divide H: H={self.H} must be a positive multiple of "
                                            f"lws_base_H={base}")

    @property
    def d_model(self) -> int:
        return self.N * self.H

    def profile(self) -> LWSProfile:
        """The LWS profile of this config."""
        if self.lws == "explicit":
            if self.lws_heads is None or self.lws_d_ff is None:
                raise ValueError("lws='explicit' needs lws_heads and lws_d_ff")
            return LWSProfile("explicit", heads=tuple(self.lws_heads), d_ff=tuple(self.lws_d_ff))
        prof = get_profile(self.lws)
        if self.lws == "isotropic" and self.ffn_mult != 1.0:
            prof = LWSProfile("isotropic", prof.qkv, (self.ffn_mult,))
        return prof

    def shapes(self) -> LayerShapes:
        """Per-layer heads and MLP widths: rounded at H = lws_base_H, then multiplied by H / lws_base_H."""
        base = self.lws_base_H or self.H
        shapes = resolve(self.profile(), self.L, self.N * base, self.N)
        factor = self.H // base
        return shapes.scaled(head_factor=factor, ffn_factor=factor) if factor != 1 else shapes

    def to_dict(self) -> dict:
        return asdict(self)


class ScaledWeight(nn.Module):
    """A weight W (rows, cols) ~ N(0, init_std^2) used with a forward multiplier (abc form); role names its rule.
    With ensemble=E the weight is (E, rows, cols), one independent draw per member."""

    def __init__(self, rows: int, cols: int, role: str, init_std: float, mult: float, ensemble: int | None = None):
        super().__init__()
        shape = (rows, cols) if ensemble is None else (ensemble, rows, cols)
        self.weight = nn.Parameter(torch.empty(shape))
        self.role, self.init_std, self.mult = role, float(init_std), float(mult)
        self.ensemble = ensemble

    def reset_parameters(self, generator: torch.Generator, member: int | None = None) -> None:
        """Draw the weight (or member `member`'s slice of it) from N(0, init_std^2) with `generator`."""
        with torch.no_grad():
            w = self.weight if member is None else self.weight[member]
            w.normal_(0.0, self.init_std, generator=generator)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, role={self.role}, std={self.init_std:.4g}, mult={self.mult:.4g}"


class ScaledLinear(ScaledWeight):
    """y = mult * W x, W (fan_out, fan_in). No bias (as the official code). In an ensemble x is (E, ..., fan_in)."""

    def __init__(self, fan_in: int, fan_out: int, role: str, init_std: float, mult: float, ensemble: int | None = None):
        super().__init__(fan_out, fan_in, role, init_std, mult, ensemble)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mult * (W x) computed as (mult W) x: the multiplier scales the weight, not the (larger) activations
        w = self.weight * self.mult
        if self.ensemble is None:
            return F.linear(x, w)
        E, fan_in = w.shape[0], x.shape[-1]
        y = torch.bmm(x.reshape(E, -1, fan_in), w.transpose(1, 2))   # (E, M, fan_out)
        return y.view(*x.shape[:-1], w.shape[1])


class ScaledTable(ScaledWeight):
    """A table of vectors (token embedding or learned positions), y = mult * W[i], W (rows, dim); in an ensemble
    W is (E, rows, dim) and y (E, *idx.shape, dim)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.mult                               # mult W[i], the multiplier on the (small) table
        if self.ensemble is None:
            return F.embedding(idx, w)
        return w[:, idx]                                          # (E, *idx.shape, dim)


def layer_norm(h: torch.Tensor) -> torch.Tensor:
    """LN over features without affine parameters (population variance, eps 1e-6)."""
    return F.layer_norm(h, (h.shape[-1],), eps=LN_EPS)


def attention_logits(q: torch.Tensor, k: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """A = scale * q k^T per head, (..., H, S, S) from q, k (..., H, S, N); entries s' > s are -inf when causal."""
    A = scale * (q @ k.transpose(-2, -1))                         # (..., H, S, S)
    if causal:
        S = q.shape[-2]
        mask = torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1)
        A = A.masked_fill(mask, float("-inf"))
    return A


class Block(nn.Module):
    """One pre-LN block: MHSA then MLP, each on a residual branch scaled by beta0 (L/L0)^-alpha_L."""

    def __init__(self, d: int, H_l: int, N: int, d_ff: int, p: Parametrization, L: int, optimizer: str, causal: bool,
                 ensemble: int | None = None):
        super().__init__()
        self.H, self.N, self.causal = H_l, N, causal

        def lin(fan_in: int, fan_out: int, role: str) -> ScaledLinear:
            std, mult = abc(p, role, fan_in, d=d, N=N, L=L, optimizer=optimizer)
            return ScaledLinear(fan_in, fan_out, role, std, mult, ensemble)

        self.q, self.k, self.v = lin(d, H_l * N, "q"), lin(d, H_l * N, "k"), lin(d, H_l * N, "v")
        self.o = lin(H_l * N, d, "o")
        self.mlp_in, self.mlp_out = lin(d, d_ff, "mlp_in"), lin(d_ff, d, "mlp_out")
        self.branch = float(branch_multiplier(p, L))       # beta0 (L/L0)^-alpha_L
        self.attn_scale = float(attention_scale(p, N))     # N^-alpha_A

    def heads_qkv(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head q, k, v, each (..., H, S, N) from u (..., S, d) (leading dims: batch, or ensemble and batch):
        q,k = N^(alpha_A-1)/sqrt(d) W_{Q,K} u, v = W_V u / sqrt(d)."""
        *lead, S, _ = u.shape
        q = self.q(u).view(*lead, S, self.H, self.N).transpose(-3, -2)  # (..., H, S, N)
        k = self.k(u).view(*lead, S, self.H, self.N).transpose(-3, -2)  # (..., H, S, N)
        v = self.v(u).view(*lead, S, self.H, self.N).transpose(-3, -2)  # (..., H, S, N)
        return q, k, v

    def attention_variables(self, u: torch.Tensor, taps: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (A, v): A = N^-alpha_A q k^T (..., H, S, S), causal-masked with -inf; v (..., H, S, N).
        With `taps`, q, k, v are stored there too."""
        q, k, v = self.heads_qkv(u)
        A = attention_logits(q, k, self.attn_scale, self.causal)
        if taps is not None:
            taps["q"], taps["k"], taps["v"] = q, k, v
        return A, v

    def mhsa(self, u: torch.Tensor, taps: dict | None = None, attention_maps: bool = False) -> torch.Tensor:
        """The MHSA branch output W_O concat(softmax(A) v) / sqrt(H_l N), shape (..., S, d). With `taps`, q, k, v
        are stored; with attention_maps also A and P = softmax(A) (..., H, S, S), through the explicit math path."""
        *lead, S, _ = u.shape
        if attention_maps and taps is not None:
            A, v = self.attention_variables(u, taps)
            P = torch.softmax(A, dim=-1)                          # (..., H, S, S)
            taps["A"], taps["P"] = A, P
            o = P @ v                                             # (..., H, S, N)
        else:
            q, k, v = self.heads_qkv(u)
            if taps is not None:
                taps["q"], taps["k"], taps["v"] = q, k, v
            # the scale is passed explicitly: SDPA's default would be N^-1/2 whatever alpha_A is. 4-D inputs
            # (an ensemble's (E, B) flattened) keep the fused CPU kernel; 5-D ones fall back to the math path.
            o = F.scaled_dot_product_attention(q.reshape(-1, *q.shape[-3:]), k.reshape(-1, *k.shape[-3:]),
                                               v.reshape(-1, *v.shape[-3:]), is_causal=self.causal,
                                               scale=self.attn_scale).view(q.shape)   # (..., H, S, N)
        o = o.transpose(-3, -2).reshape(*lead, S, self.H * self.N)  # (..., S, H*N)
        return self.o(o)

    def mlp(self, u: torch.Tensor, taps: dict | None = None) -> torch.Tensor:
        """The MLP branch output W_2 gelu_tanh(W_1 u / sqrt(d)) / sqrt(d_ff), shape (B, S, d); with `taps`, the
        hidden pre-activation W_1 u / sqrt(d) (B, S, d_ff) is stored as "mlp_hidden"."""
        z = self.mlp_in(u)
        if taps is not None:
            taps["mlp_hidden"] = z
        return self.mlp_out(F.gelu(z, approximate="tanh"))

    def forward(self, h: torch.Tensor, taps: dict | None = None, attention_maps: bool = False) -> torch.Tensor:
        a = self.mhsa(layer_norm(h), taps, attention_maps)
        h = h + self.branch * a
        m = self.mlp(layer_norm(h), taps)
        h = h + self.branch * m
        if taps is not None:
            taps["attn_out"], taps["mlp_out"], taps["h"] = a, m, h
        return h


class LWSTransformer(nn.Module):
    """The parametrized transformer. `param_roles` maps parameter names to roles for the optimizer rules.

    forward(x, taps=None) returns logits: (B, n_classes) for vision, (B, T, vocab_size) for the LM, with a leading
    member dimension E when `ensemble` is set. If `taps` is a list, one dict per block is appended with "q", "k",
    "v" (B, H_l, S, N), "attn_out", "mlp_out" (unscaled branch outputs, (B, S, d)), "mlp_hidden" (the MLP
    pre-activation, (B, S, d_ff)) and "h" (residual stream after the block), each with the leading E in an
    ensemble; with attention_maps=True also "A" (B, H_l, S, S; pre-softmax) and "P" = softmax(A) through the
    explicit math path. taps is for probe passes only.
    """

    def __init__(self, cfg: ModelConfig, p: Parametrization, optimizer: str = "adam", ensemble: int | None = None):
        super().__init__()
        if ensemble is not None and int(ensemble) < 1:
            raise ValueError(f"ensemble must be a positive number of members, got {ensemble}")
        self.cfg, self.p, self.optimizer, self.ensemble = cfg, p, optimizer, ensemble
        self.shapes = cfg.shapes()
        d = cfg.d_model

        def ab(role: str, fan_in: int) -> tuple[float, float]:
            return abc(p, role, fan_in, d=d, N=cfg.N, L=cfg.L, optimizer=optimizer)

        if is_vision(cfg.task):
            self.embed: nn.Module = ScaledLinear(cfg.d_in, d, "embed", *ab("embed", cfg.d_in), ensemble)
        else:
            self.embed = ScaledTable(cfg.vocab_size, d, "embed", *ab("embed", 1), ensemble)
        self.pos = ScaledTable(cfg.seq_len, d, "pos", *ab("pos", 1), ensemble)
        self.blocks = nn.ModuleList(
            Block(d, H_l, cfg.N, d_ff, p, cfg.L, optimizer, causal=cfg.task == "lm", ensemble=ensemble)
            for H_l, d_ff in zip(self.shapes.heads, self.shapes.d_ff)
        )
        n_out = cfg.n_classes if is_vision(cfg.task) else cfg.vocab_size
        self.readout = ScaledLinear(d, n_out, "readout", *ab("readout", d), ensemble)
        self.param_roles = {name: self._role_of(name) for name, _ in self.named_parameters()}

    def _role_of(self, name: str) -> str:
        module = self.get_submodule(name.rsplit(".", 1)[0])
        return module.role

    def reset_parameters(self, seed: int | Sequence[int]) -> "LWSTransformer":
        """Draw every weight from its init law with a generator seeded by `seed` (one seed per member in an
        ensemble: member e gets exactly the weights of a separate model with seed seeds[e]); returns self."""
        seeds = [seed] if self.ensemble is None else list(seed)   # type: ignore[arg-type]
        if self.ensemble is not None and len(seeds) != self.ensemble:
            raise ValueError(f"an ensemble of {self.ensemble} members needs {self.ensemble} seeds, got {len(seeds)}")
        for e, s in enumerate(seeds):
            g = torch.Generator(device="cpu").manual_seed(int(s))
            for module in self.modules():
                if isinstance(module, ScaledWeight):
                    module.reset_parameters(g, None if self.ensemble is None else e)
        if self.p.centre == "zero_readout":
            with torch.no_grad():
                self.readout.weight.zero_()
        return self

    def member(self, e: int) -> "LWSTransformer":
        """Member e of an ensemble as a separate (non-ensemble) model on the same device, weights copied."""
        if self.ensemble is None:
            raise ValueError("member() needs an ensemble model")
        single = LWSTransformer(self.cfg, self.p, self.optimizer).to(self.readout.weight.device)
        with torch.no_grad():
            for (name, w), w_e in zip(single.named_parameters(), self.parameters()):
                w.copy_(w_e[e])
        return single

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Residual stream h^0 (B, S, d), or (E, B, S, d) in an ensemble: embedding plus learned positions."""
        S = x.shape[1]
        if S > self.cfg.seq_len:
            raise ValueError(f"input has {S} tokens but the model was built for seq_len={self.cfg.seq_len}")
        pos = self.pos(torch.arange(S, device=x.device))          # (S, d) or (E, S, d)
        if self.ensemble is None:
            return self.embed(x) + pos
        if is_vision(self.cfg.task):
            x = x.expand(self.ensemble, *x.shape)                 # (E, B, S, d_in), shared patches, no copy
        return self.embed(x) + pos.unsqueeze(1)                   # (E, B, S, d)

    def forward(self, x: torch.Tensor, taps: list | None = None, attention_maps: bool = False) -> torch.Tensor:
        h = self.embed_tokens(x)
        for block in self.blocks:
            if taps is None:
                h = block(h)
            else:
                taps.append({})
                h = block(h, taps[-1], attention_maps)
        u = layer_norm(h)
        if is_vision(self.cfg.task):
            u = u.mean(dim=-2)                                    # (..., B, d), mean over patches
        return self.readout(u)


def build_model(cfg: ModelConfig, p: Parametrization, optimizer: str, seed: int | Sequence[int],
                device: str | torch.device = "cpu", ensemble: int | None = None) -> LWSTransformer:
    """Build and initialise the model on `device` (weights drawn on the CPU, so every device sees the same init).
    With `ensemble` = E, `seed` is a list of E seeds, one per member."""
    return LWSTransformer(cfg, p, optimizer, ensemble).reset_parameters(seed).to(device)

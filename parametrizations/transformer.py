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
Block variants (`parametrizations.variants`, docs/variants.md) change the norm (RMSNorm with a gain), add QK-norm,
RoPE, GQA, SwiGLU or Pattention MLPs, tie the readout to the token table, or replace the residual update (nGPT's
normalised stream, LAUREL's learned residuals); their new parameters follow `spec.vector_mult` / `spec.laurel_abc`.

Seed ensembles: with `ensemble=E`, every weight carries a leading member dimension (E, rows, cols), member e is
initialised exactly as a separate model with seed e would be, and activations carry a leading E dimension
(E, B, S, d); the matmuls are batched over members (torch.bmm). Inputs (tokens, patches) are shared by members.

Keyed initialisation (`init_key`, `parametrizations.layers.keyed_generator`): block l's weights are drawn from
generators keyed by (seed, l, name), every other weight (embedding, positions, readout) from generators keyed by
(io_seed, name), io_seed = seed unless given. So the draws of a weight never depend on the depth or on the other
weights: a seed's deep and shallow models share their embedding, positions and readout (equal up to their
L-dependent init std) and their first blocks, and several block draws can share one embedding and readout (the
paired depth design, `dmft.depth`). The embedding, positions and readout are drawn one residual coordinate at a
time, so a narrower model's are the leading coordinates of a wider one's (N = 4 is the first half of N = 8).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from .checks import ConfigError, check_bool, check_choice, check_float, check_int, check_int_list, check_str
from .layers import ScaledLinear, ScaledTable, ScaledVector, ScaledWeight, TiedReadout, keyed_generator
from .lws import LayerShapes, LWSProfile, get_profile, resolve
from .rmsnorm import rms_norm
from .rope import rope
from .spec import Parametrization, abc, attention_scale, branch_multiplier, vector_mult
from .variants import DEFAULTS, LAUREL_DEFAULT, LAUREL_FORMS, MLPS, NORMS, VARIANTS, BlockOptions

LN_EPS = 1e-6  # LN_Fixed in the official code
# Upper bounds of the sizes, far above anything that fits in memory (probes.experiment.config.check_fits refuses what does
# not fit); they keep the per-layer shape lists and the size arithmetic cheap before that check.
MAX_SIZE = 1 << 20  # N, H, seq_len, d_in, per-layer heads and MLP widths
MAX_DEPTH = 10_000  # L (one shape entry per layer)
MAX_VOCAB = 1 << 32  # vocab_size, n_classes
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
    variant: the block variant (`parametrizations.variants`): paper, openelm, ngpt, laurel or tokenformer.
    norm, qk_norm, rope, kv_group, mlp, tie_embeddings: the block options (None: the variant's default;
          kv_group is the GQA group size, query heads per KV head, fixed as H grows).
    laurel, laurel_rank, laurel_k: the LAUREL form (rw, lr, pa or a "+" combination; None: rw+lr+pa, the
          paper's full form; only with variant laurel), the rank r of LR and the
          number k of stream states PA weighs.
    ffn_divisor: LWS rounds each d_ff to a multiple of it (OpenELM: 256); heads are rounded to multiples of
          kv_group.
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
    variant: str = "paper"
    norm: str | None = None
    qk_norm: bool | None = None
    rope: bool | None = None
    kv_group: int | None = None
    mlp: str | None = None
    tie_embeddings: bool | None = None
    laurel: str | None = None
    laurel_rank: int = 4
    laurel_k: int = 3
    ffn_divisor: int = 1

    def __post_init__(self) -> None:
        for name, hi in (
            ("N", MAX_SIZE),
            ("H", MAX_SIZE),
            ("L", MAX_DEPTH),
            ("seq_len", MAX_SIZE),
            ("vocab_size", MAX_VOCAB),
            ("n_classes", MAX_VOCAB),
            ("d_in", MAX_SIZE),
        ):
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
            raise ConfigError(
                "lws_base_H", f"must divide H: H={self.H} must be a positive multiple of lws_base_H={base}"
            )
        check_choice("variant", self.variant, VARIANTS)
        if self.norm is not None:
            check_choice("norm", self.norm, NORMS)
        if self.mlp is not None:
            check_choice("mlp", self.mlp, MLPS)
        for name in ("qk_norm", "rope", "tie_embeddings"):
            if getattr(self, name) is not None:
                check_bool(name, getattr(self, name))
        if self.kv_group is not None:
            check_int("kv_group", self.kv_group, 1, MAX_SIZE)
        if self.laurel is not None:
            check_choice("laurel", self.laurel, LAUREL_FORMS)
            if self.variant != "laurel":
                raise ConfigError("laurel", f"is a form of the laurel variant; got it with variant {self.variant}")
        check_int("laurel_rank", self.laurel_rank, 1, MAX_SIZE)
        check_int("laurel_k", self.laurel_k, 1, MAX_DEPTH)
        check_int("ffn_divisor", self.ffn_divisor, 1, MAX_SIZE)
        o = self.block_options()
        if o.tie and is_vision(self.task):
            raise ConfigError(
                "tie_embeddings", f"needs task lm (an image task has no token table to tie), got task {self.task}"
            )
        if o.rope and self.N % 2:
            raise ConfigError("N", f"must be even with RoPE (it rotates pairs of coordinates), got N={self.N}")
        if self.lws == "isotropic" and base % o.kv_group:
            raise ConfigError(
                "kv_group",
                f"must divide the heads of a layer: H={base} heads are not a multiple of "
                f"the GQA group size {o.kv_group}",
            )

    def block_options(self) -> BlockOptions:
        """The block options: each given field, else the variant's default (`parametrizations.variants`)."""
        d = DEFAULTS[self.variant]

        def pick(name: str, default_key: str | None = None):
            v = getattr(self, name)
            return d[default_key or name] if v is None else v

        tie = pick("tie_embeddings")
        if self.tie_embeddings is None and is_vision(self.task):
            tie = False  # the variant's tying applies to the LM only
        form = self.laurel or LAUREL_DEFAULT
        laurel = frozenset(form.split("+")) if self.variant == "laurel" else frozenset()
        return BlockOptions(
            self.variant,
            pick("norm"),
            pick("qk_norm"),
            pick("rope"),
            pick("kv_group"),
            pick("mlp"),
            tie,
            self.variant == "ngpt",
            laurel,
            self.laurel_rank,
            self.laurel_k,
        )

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
        g = self.block_options().kv_group
        shapes = resolve(
            self.profile(),
            self.L,
            self.N * base,
            self.N,
            head_multiple_of=1 if self.lws == "isotropic" else g,
            ffn_divisor=self.ffn_divisor,
        )
        factor = self.H // base
        return shapes.scaled(head_factor=factor, ffn_factor=factor) if factor != 1 else shapes

    def to_dict(self) -> dict:
        return asdict(self)


def layer_norm(h: torch.Tensor) -> torch.Tensor:
    """LN over features without affine parameters (population variance, eps 1e-6)."""
    return F.layer_norm(h, (h.shape[-1],), eps=LN_EPS)


def attention_logits(q: torch.Tensor, k: torch.Tensor, scale: float, causal: bool) -> torch.Tensor:
    """A = scale * q k^T per head, (..., H, S, S) from q, k (..., H, S, N); entries s' > s are -inf when causal."""
    A = scale * (q @ k.transpose(-2, -1))  # (..., H, S, S)
    if causal:
        S = q.shape[-2]
        mask = torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1)
        A = A.masked_fill(mask, float("-inf"))
    return A


def normalise(x: torch.Tensor) -> torch.Tensor:
    """nGPT's Norm in RMS form: x / RMS(x) over the last dim (nGPT's unit vectors times sqrt(dim), so coordinates
    stay O(1) and kernels h.h'/d are cosines); the fused RMSNorm without a gain."""
    return rms_norm(x)


class Block(nn.Module):
    """One block: MHSA then MLP, each on a residual branch scaled by beta0 (L/L0)^-alpha_L; the block options
    (`parametrizations.variants`) pick the norm, QK-norm, RoPE, GQA, MLP kind and the residual update (standard,
    nGPT, LAUREL)."""

    q: ScaledLinear
    k: ScaledLinear
    v: ScaledLinear
    o: ScaledLinear
    mlp_in: ScaledLinear
    mlp_out: ScaledLinear
    attn_scale: float

    def __init__(
        self,
        d: int,
        H_l: int,
        N: int,
        d_ff: int,
        p: Parametrization,
        L: int,
        optimizer: str,
        causal: bool,
        ensemble: int | None = None,
        opts: BlockOptions | None = None,
    ):
        super().__init__()
        opts = opts or ModelConfig().block_options()
        self.H, self.N, self.causal, self.opts = H_l, N, causal, opts
        if H_l % opts.kv_group:
            raise ConfigError(
                "kv_group",
                f"must divide every layer's heads: a layer has {H_l} heads, not a multiple "
                f"of the GQA group size {opts.kv_group}",
            )
        self.H_kv = H_l // opts.kv_group

        def lin(fan_in: int, fan_out: int, role: str) -> ScaledLinear:
            std, mult = abc(p, role, fan_in, d=d, N=N, L=L, optimizer=optimizer)
            return ScaledLinear(fan_in, fan_out, role, std, mult, ensemble)

        def vec(n: int, role: str, init: float = 1.0) -> ScaledVector:
            return ScaledVector(
                n, role, init, vector_mult(p, role, d=d, N=N, L=L, optimizer=optimizer, H_l=H_l), ensemble
            )

        self.q = lin(d, H_l * N, "q")
        self.k, self.v = lin(d, self.H_kv * N, "k"), lin(d, self.H_kv * N, "v")  # GQA: H_l / kv_group KV heads
        self.o = lin(H_l * N, d, "o")
        gated = opts.mlp == "swiglu"
        self.mlp_in, self.mlp_out = lin(d, 2 * d_ff if gated else d_ff, "mlp_in"), lin(d_ff, d, "mlp_out")
        self.branch = float(branch_multiplier(p, L))  # beta0 (L/L0)^-alpha_L
        self.attn_scale = float(attention_scale(p, N))  # N^-alpha_A
        if opts.ngpt:
            # nGPT's eigen learning rates of the attention and MLP branches (nGPT calls them alpha_A, alpha_M; not
            # the paper's exponent alpha_A) start at the branch multiplier (spec.VARIANT_NOTES "eigen")
            self.eigen_lr_attn, self.eigen_lr_mlp = vec(d, "eigen", self.branch), vec(d, "eigen", self.branch)
            self.s_qk = vec(H_l * N, "ngpt_sqk")
            self.s_uv = vec(2 * d_ff if gated else d_ff, "gain")  # one per output of mlp_in
        elif opts.norm == "rms":
            self.norm_attn, self.norm_mlp = vec(d, "gain"), vec(d, "gain")
        if opts.qk_norm and not opts.ngpt:
            self.q_norm, self.k_norm = vec(N, "qk_gain"), vec(N, "qk_gain")  # one N-vector shared by the heads
        if opts.laurel:
            from .laurel import Laurel

            self.laurel_attn, self.laurel_mlp = (
                Laurel(opts.laurel, d, opts.laurel_rank, opts.laurel_k, p, N, L, optimizer, self.branch, ensemble)
                for _ in range(2)
            )

    def pre_norm(self, h: torch.Tensor, which: str) -> torch.Tensor:
        """The branch input: LN (paper), RMSNorm with a gain (OpenELM), or h itself (nGPT: h is normalised)."""
        if self.opts.ngpt:
            return h
        if self.opts.norm == "rms":
            gain = self.norm_attn if which == "attn" else self.norm_mlp
            return rms_norm(h, gain.value())
        return layer_norm(h)

    def heads_qkv(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head q, k, v, each (..., H, S, N) from u (..., S, d) (leading dims: batch, or ensemble and batch):
        q,k = N^(alpha_A-1)/sqrt(d) W_{Q,K} u, v = W_V u / sqrt(d); then, as the options say, QK RMSNorm with the
        shared gain and RoPE (OpenELM: norm, then RoPE), or RoPE then q, k <- s_qk Norm(q, k) per head (nGPT).
        Under GQA, k and v are repeated over the kv_group query heads of each KV head, so every query head has
        its own (q, k) pair (the probes' variance over heads is over query heads)."""
        *lead, S, _ = u.shape
        o = self.opts
        q = self.q(u).view(*lead, S, self.H, self.N).transpose(-3, -2)  # (..., H, S, N)
        k = self.k(u).view(*lead, S, self.H_kv, self.N).transpose(-3, -2)  # (..., H_kv, S, N)
        v = self.v(u).view(*lead, S, self.H_kv, self.N).transpose(-3, -2)  # (..., H_kv, S, N)
        if o.qk_norm and not o.ngpt:
            q, k = rms_norm(q, self.q_norm.value()), rms_norm(k, self.k_norm.value())
        if o.rope:
            q, k = rope(q), rope(k)
        if o.kv_group > 1:
            k = k.repeat_interleave(o.kv_group, dim=-3)  # (..., H, S, N)
            v = v.repeat_interleave(o.kv_group, dim=-3)  # (..., H, S, N)
        if o.ngpt:
            s_qk = self.s_qk.value_for(q, (self.H, 1, self.N))  # per head and coordinate
            q, k = s_qk * normalise(q), s_qk * normalise(k)
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
            P = torch.softmax(A, dim=-1)  # (..., H, S, S)
            taps["A"], taps["P"] = A, P
            o = P @ v  # (..., H, S, N)
        else:
            q, k, v = self.heads_qkv(u)
            if taps is not None:
                taps["q"], taps["k"], taps["v"] = q, k, v
            # the scale is passed explicitly: SDPA's default would be N^-1/2 whatever alpha_A is. 4-D inputs
            # (an ensemble's (E, B) flattened) keep the fused CPU kernel; 5-D ones fall back to the math path.
            o = F.scaled_dot_product_attention(
                q.reshape(-1, *q.shape[-3:]),
                k.reshape(-1, *k.shape[-3:]),
                v.reshape(-1, *v.shape[-3:]),
                is_causal=self.causal,
                scale=self.attn_scale,
            ).view(q.shape)  # (..., H, S, N)
        o = o.transpose(-3, -2).reshape(*lead, S, self.H * self.N)  # (..., S, H*N)
        return self.o(o)

    def mlp(self, u: torch.Tensor, taps: dict | None = None) -> torch.Tensor:
        """The MLP branch output, shape (..., S, d): W_2 phi(W_1 u / sqrt(d)) / sqrt(d_ff) with phi = gelu_tanh
        (paper), SwiGLU silu(z1) * z2 of the two halves of W_1 u (OpenELM; nGPT scales them by s_uv first), or
        Pattention's GeLU of the scores normalised to RMS 1 over the d_ff parameter tokens (TokenFormer: tau =
        sqrt(n) times the L2-normalised scores). With `taps`, the hidden pre-activation is stored as "mlp_hidden"."""
        z = self.mlp_in(u)
        if self.opts.ngpt:
            z = z * self.s_uv.value_for(z, (z.shape[-1],))
        if taps is not None:
            taps["mlp_hidden"] = z
        if self.opts.mlp == "swiglu":
            z1, z2 = z.chunk(2, dim=-1)  # (..., S, d_ff) each
            return self.mlp_out(F.silu(z1) * z2)
        if self.opts.mlp == "pattention":
            return self.mlp_out(F.gelu(rms_norm(z)))
        return self.mlp_out(F.gelu(z, approximate="tanh"))

    def forward(
        self,
        h: torch.Tensor,
        taps: dict | None = None,
        attention_maps: bool = False,
        history: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """h (..., S, d) after this block. history: the stream states at the previous residual adds (LAUREL PA;
        this block appends its own)."""
        a = self.mhsa(self.pre_norm(h, "attn"), taps, attention_maps)
        if self.opts.ngpt:
            a = normalise(a)  # h_A = Norm(ATTN(h))
        h = self.residual(h, a, "attn", history)
        m = self.mlp(self.pre_norm(h, "mlp"), taps)
        if self.opts.ngpt:
            m = normalise(m)  # h_M = Norm(MLP(h))
        h = self.residual(h, m, "mlp", history)
        if taps is not None:
            taps["attn_out"], taps["mlp_out"], taps["h"] = a, m, h
        return h

    def residual(
        self, h: torch.Tensor, out: torch.Tensor, which: str, history: list[torch.Tensor] | None
    ) -> torch.Tensor:
        """The residual add of branch output `out` ("attn" or "mlp") to h: h + beta0 (L/L0)^-alpha_L out (paper),
        Norm(h + |alpha| (out - h)) with the branch's eigen learning rate (nGPT), or LAUREL's learned residual; the
        new h is appended to `history` (LAUREL PA) when given."""
        if self.opts.ngpt:
            alpha = (self.eigen_lr_attn if which == "attn" else self.eigen_lr_mlp).value_for(h, (h.shape[-1],)).abs()
            h = normalise(h + alpha * (out - h))  # h <- Norm(h + |alpha| (h_branch - h))
        elif self.opts.laurel:
            h = (self.laurel_attn if which == "attn" else self.laurel_mlp)(h, self.branch * out, history)
        else:
            h = h + self.branch * out
        if history is not None:
            history.append(h)
        return h


def check_centre(cfg: ModelConfig, p: Parametrization) -> None:
    """ConfigError("centre", ...) when the centring cannot be applied to this model: zero_readout needs a readout
    of its own that stays at zero (not a tied table, not nGPT's renormalised rows)."""
    opts = cfg.block_options()
    if p.centre == "zero_readout" and (opts.tie or opts.ngpt):
        raise ConfigError(
            "centre",
            f"zero_readout cannot zero a {'tied' if opts.tie else 'renormalised (nGPT)'} readout; use centre copy",
        )


class LWSTransformer(nn.Module):
    """The parametrized transformer. `param_roles` maps parameter names to roles for the optimizer rules.

    forward(x, taps=None) returns logits: (B, n_classes) for vision, (B, T, vocab_size) for the LM, with a leading
    member dimension E when `ensemble` is set. If `taps` is a list, one dict per block is appended with "q", "k",
    "v" (B, H_l, S, N), "attn_out", "mlp_out" (unscaled branch outputs, (B, S, d)), "mlp_hidden" (the MLP
    pre-activation, (B, S, d_ff)) and "h" (residual stream after the block), each with the leading E in an
    ensemble; with attention_maps=True also "A" (B, H_l, S, S; pre-softmax) and "P" = softmax(A) through the
    explicit math path. taps is for probe passes only.
    """

    embed: ScaledLinear | ScaledTable
    readout: TiedReadout | ScaledLinear
    param_roles: dict[str, str]

    def __init__(self, cfg: ModelConfig, p: Parametrization, optimizer: str = "adam", ensemble: int | None = None):
        super().__init__()
        if ensemble is not None and int(ensemble) < 1:
            raise ValueError(f"ensemble must be a positive number of members, got {ensemble}")
        self.cfg, self.p, self.optimizer, self.ensemble = cfg, p, optimizer, ensemble
        self.shapes = cfg.shapes()
        self.opts = opts = cfg.block_options()
        d = cfg.d_model
        check_centre(cfg, p)

        def ab(role: str, fan_in: int) -> tuple[float, float]:
            return abc(p, role, fan_in, d=d, N=cfg.N, L=cfg.L, optimizer=optimizer)

        # nest_dim: the embedding, positions and readout are drawn one residual coordinate at a time (layers.py)
        if is_vision(cfg.task):
            self.embed = ScaledLinear(cfg.d_in, d, "embed", *ab("embed", cfg.d_in), ensemble, nest_dim=0)
        else:
            self.embed = ScaledTable(cfg.vocab_size, d, "embed", *ab("embed", 1), ensemble, nest_dim=1)
        if not opts.rope:  # RoPE replaces the learned positions
            self.pos = ScaledTable(cfg.seq_len, d, "pos", *ab("pos", 1), ensemble, nest_dim=1)
        self.blocks = nn.ModuleList(
            Block(d, H_l, cfg.N, d_ff, p, cfg.L, optimizer, causal=cfg.task == "lm", ensemble=ensemble, opts=opts)
            for H_l, d_ff in zip(self.shapes.heads, self.shapes.d_ff)
        )
        n_out = cfg.n_classes if is_vision(cfg.task) else cfg.vocab_size

        def vec(n: int, role: str) -> ScaledVector:
            return ScaledVector(
                n, role, 1.0, vector_mult(p, role, d=d, N=cfg.N, L=cfg.L, optimizer=optimizer), ensemble
            )

        if opts.tie:
            # the token table read back with the readout's own multiplier: the abc rules give embedding and readout
            # the same init std (SGD l^(a_L-1/2), Adam d^-1/2 l^(a_L-1)), so one table serves both (docs/variants.md)
            assert isinstance(self.embed, ScaledTable)  # tie_embeddings is refused for images (ModelConfig)
            self.readout = TiedReadout(self.embed, ab("readout", d)[1])
        else:
            self.readout = ScaledLinear(d, n_out, "readout", *ab("readout", d), ensemble, nest_dim=1)
        if opts.ngpt:
            self.s_z = vec(n_out, "ngpt_sz")  # nGPT's logit scale s_z
        elif opts.norm == "rms":
            self.norm_out = vec(d, "gain_out")  # the final RMSNorm's gain
        self.param_roles = {name: self._role_of(name) for name, _ in self.named_parameters()}

    def _role_of(self, name: str) -> str:
        module = self.get_submodule(name.rsplit(".", 1)[0])
        assert isinstance(module, ScaledWeight)  # every parameter lives in a ScaledWeight
        return module.role

    def reset_parameters(self, seed: int | Sequence[int], io_seed: int | Sequence[int] | None = None) -> LWSTransformer:
        """Draw every weight from its init law, each from its own generator keyed by `init_key`: the blocks by
        `seed`, the embedding, positions and readout by `io_seed` (None: = seed). In an ensemble both are lists,
        one entry per member, and member e gets exactly the weights of a separate model with seed seeds[e] and
        io seed io_seeds[e]. Returns self."""
        seeds = _seed_list(seed, self.ensemble)
        io_seeds = seeds if io_seed is None else _seed_list(io_seed, self.ensemble)
        if self.ensemble is not None and len(seeds) != self.ensemble:
            raise ValueError(f"an ensemble of {self.ensemble} members needs {self.ensemble} seeds, got {len(seeds)}")
        if len(io_seeds) != len(seeds):
            raise ValueError(f"needs one io seed per seed, got {len(io_seeds)} for {len(seeds)}")
        for e, (s, io) in enumerate(zip(seeds, io_seeds)):
            for name, module in self.named_modules():
                if isinstance(module, ScaledWeight):
                    module.reset_parameters(
                        keyed_generator(*init_key(name, s, io)), None if self.ensemble is None else e
                    )
        if self.p.centre == "zero_readout":
            with torch.no_grad():
                self.readout.weight.zero_()
        if self.opts.ngpt:
            self.renormalise()
        return self

    def ngpt_matrices(self) -> list[tuple[ScaledWeight, int, float]]:
        """nGPT's normalised matrices: (module, dim of the weight along d_model, target norm of mult * w along it).
        Hidden matrices get unit norm (nGPT: rows of W_Q, W_K, W_V, W_1, columns of W_O, W_2). The embedding and
        the readout get the norm their abc init gives them, std * mult * sqrt(d): sqrt(d / D_in) for the embedding
        (its output has RMS-1 coordinates, the RMS form of nGPT's unit token vectors; unit vectors would make every
        update sqrt(d) times larger relative to them) and 1/(gamma0 sqrt(d)) for the readout (nGPT's unit rows times
        the mean-field readout factor; SP: 1, as nGPT itself)."""
        d = self.cfg.d_model
        out: list[tuple[ScaledWeight, int, float]] = []
        for blk in cast(Iterable[Block], self.blocks):
            out += [
                (blk.q, -1, 1.0),
                (blk.k, -1, 1.0),
                (blk.v, -1, 1.0),
                (blk.mlp_in, -1, 1.0),
                (blk.o, -2, 1.0),
                (blk.mlp_out, -2, 1.0),
            ]
        out.append(
            (
                self.embed,
                -1 if isinstance(self.embed, ScaledTable) else -2,
                self.embed.init_std * self.embed.mult * d**0.5,
            )
        )
        if isinstance(self.readout, ScaledLinear):
            out.append((self.readout, -1, self.readout.init_std * self.readout.mult * d**0.5))
        return out

    @torch.no_grad()
    def renormalise(self) -> None:
        """nGPT: set every d_model-vector of every normalised matrix (`ngpt_matrices`) to its target norm of
        mult * w (nGPT's normalize_matrices, run at init and after every optimizer step)."""
        for module, dim, target in self.ngpt_matrices():
            w = module.weight
            w.mul_(target / (module.mult * w.norm(dim=dim, keepdim=True).clamp_min(1e-30)))

    def after_step(self) -> None:
        """Called after every optimizer step: nGPT renormalises its matrices; the other variants do nothing."""
        if self.opts.ngpt:
            self.renormalise()

    def member(self, e: int) -> LWSTransformer:
        """Member e of an ensemble as a separate (non-ensemble) model on the same device, weights copied."""
        if self.ensemble is None:
            raise ValueError("member() needs an ensemble model")
        single = LWSTransformer(self.cfg, self.p, self.optimizer).to(self.readout.weight.device)
        with torch.no_grad():
            for w, w_e in zip(single.parameters(), self.parameters()):
                w.copy_(w_e[e])
        return single

    def embed_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Residual stream h^0 (B, S, d), or (E, B, S, d) in an ensemble: embedding plus learned positions."""
        S = x.shape[1]
        if S > self.cfg.seq_len:
            raise ValueError(f"input has {S} tokens but the model was built for seq_len={self.cfg.seq_len}")
        if self.ensemble is not None and is_vision(self.cfg.task):
            x = x.expand(self.ensemble, *x.shape)  # (E, B, S, d_in), shared patches, no copy
        h = self.embed(x)  # (B, S, d) or (E, B, S, d)
        if not self.opts.rope:
            pos = self.pos(torch.arange(S, device=x.device))  # (S, d) or (E, S, d)
            h = h + (pos if self.ensemble is None else pos.unsqueeze(1))
        return normalise(h) if self.opts.ngpt else h  # nGPT: the stream starts normalised

    def forward(self, x: torch.Tensor, taps: list | None = None, attention_maps: bool = False) -> torch.Tensor:
        h = self.embed_tokens(x)
        history = [h] if "pa" in self.opts.laurel else None  # LAUREL PA: stream states at the residual adds
        for block in self.blocks:
            if taps is None:
                h = block(h, history=history)
            else:
                taps.append({})
                h = block(h, taps[-1], attention_maps, history)
        if self.opts.ngpt:
            u = h  # nGPT: no final norm, h is normalised
        elif self.opts.norm == "rms":
            u = rms_norm(h, self.norm_out.value())
        else:
            u = layer_norm(h)
        if is_vision(self.cfg.task):
            u = u.mean(dim=-2)  # (..., B, d), mean over patches
        f = self.readout(u)
        if self.opts.ngpt:
            f = f * self.s_z.value_for(f, (f.shape[-1],))  # logits = s_z * (W_out h)
        return f


def _seed_list(seed: int | Sequence[int], ensemble: int | None) -> list[int]:
    """The seeds of `reset_parameters` as a list: [seed] for a single model (an int), list(seed) in an ensemble."""
    return [cast(int, seed)] if ensemble is None else list(cast(Sequence[int], seed))


def init_key(name: str, seed: int, io_seed: int) -> tuple[int | str, ...]:
    """The key of the generator that draws the parameter module `name` (a name of `LWSTransformer.named_modules`):
    ("block", seed, l, rest) for a module of block l (rest: its name inside the block, e.g. "q" or
    "laurel_attn.A"), ("io", io_seed, name) for every other one (embedding, positions, readout, final gains).
    No key holds L, N or H, so a weight's draw is the same at every depth (and, drawn by residual coordinate,
    its leading coordinates the same at every width)."""
    parts = name.split(".")
    if parts[0] == "blocks" and len(parts) > 2:
        return ("block", seed, int(parts[1]), ".".join(parts[2:]))
    return ("io", io_seed, name)


def build_model(
    cfg: ModelConfig,
    p: Parametrization,
    optimizer: str,
    seed: int | Sequence[int],
    device: str | torch.device = "cpu",
    ensemble: int | None = None,
    io_seed: int | Sequence[int] | None = None,
) -> LWSTransformer:
    """Build and initialise the model on `device` (weights drawn on the CPU, so every device sees the same init).
    With `ensemble` = E, `seed` (and `io_seed`, when given) is a list of E seeds, one per member. io_seed keys
    the embedding, positions and readout (None: the seed itself; `LWSTransformer.reset_parameters`)."""
    return LWSTransformer(cfg, p, optimizer, ensemble).reset_parameters(seed, io_seed).to(device)

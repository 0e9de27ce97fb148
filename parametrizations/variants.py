"""Block variants of the LWS transformer (docs/variants.md): which options each one turns on.

- "paper": the paper's pre-LN block (LN without affine, GELU MLP, learned positions, MHA, untied readout).
- "openelm": OpenELM's block (apple/corenet general_gpt.py): pre-norm RMSNorm with a gain, per-head QK RMSNorm
  (one N-vector gain shared by the heads of a layer, before RoPE), RoPE (theta 1e4, no learned positions),
  grouped-query attention with a fixed group size (query heads per KV head, so KV heads scale with H), SwiGLU MLP
  and, for the LM, tied input/output embeddings.
- "ngpt": nGPT (Loshchilov et al. 2024): a normalised residual stream h <- Norm(h + |alpha| (Norm(branch(h)) - h))
  with eigen-learning-rate vectors alpha, q and k normalised per head and scaled by s_qk, SwiGLU with s_uv, logits
  scaled by s_z, every matrix's d_model-vectors renormalised after every optimizer step, no norm layers, RoPE.
- "laurel": LAUREL (Menghani et al. 2025) learned residuals at each residual add: RW (x <- a f(x) + b x), LR (a
  rank-r map B A x added to the residual) and PA (gamma-weighted previous stream states), in any combination
  (`laurel` = "rw", "lr", "pa", "rw+lr", "rw+pa", "lr+pa", "rw+lr+pa").
- "tokenformer": TokenFormer's token-parameter attention (Pattention) as the MLP: the hidden units are n = d_ff_l
  key/value parameter tokens and the softmax is replaced by GeLU of the scores normalised to RMS 1 over tokens.

The OpenELM options are also fields of `ModelConfig` on their own (None: the variant's default), so e.g. the
paper's block with RoPE alone, or LAUREL on OpenELM's block, can be built.
"""

from __future__ import annotations

from dataclasses import dataclass

VARIANTS = ("paper", "openelm", "ngpt", "laurel", "tokenformer")
NORMS = ("ln", "rms")
MLPS = ("gelu", "swiglu", "pattention")
LAUREL_PARTS = ("rw", "lr", "pa")
LAUREL_FORMS = ("rw", "lr", "pa", "rw+lr", "rw+pa", "lr+pa", "rw+lr+pa")
LAUREL_DEFAULT = "rw+lr+pa"

# What each variant turns on when the option is not given (None in ModelConfig). tie_embeddings applies to the
# LM only (an image task has no token table to tie).
DEFAULTS: dict[str, dict[str, object]] = {
    "paper": dict(norm="ln", qk_norm=False, rope=False, kv_group=1, mlp="gelu", tie_embeddings=False),
    "openelm": dict(norm="rms", qk_norm=True, rope=True, kv_group=2, mlp="swiglu", tie_embeddings=True),
    "ngpt": dict(norm="ln", qk_norm=False, rope=True, kv_group=1, mlp="swiglu", tie_embeddings=False),
    "laurel": dict(norm="ln", qk_norm=False, rope=False, kv_group=1, mlp="gelu", tie_embeddings=False),
    "tokenformer": dict(norm="ln", qk_norm=False, rope=False, kv_group=1, mlp="pattention", tie_embeddings=False),
}

# Model presets: sets of ModelConfig fields (`--model-preset`; explicit options override them).
MODEL_PRESETS: dict[str, dict[str, object]] = {
    # OpenELM-270M (apple/corenet openelm_270M.yaml): 16 layers, d_model 1280, head dim 64, qkv multipliers
    # 0.5 -> 1.0 and FFN multipliers 0.5 -> 4.0 rounded by make_divisible (heads to multiples of 64 * 4, d_ff to 256),
    # GQA group 4, tied 32000-token embeddings, context 2048: query heads 12 x 5, 16 x 7, 20 x 4; d_ff 768 -> 5120.
    "openelm-270m": dict(
        variant="openelm",
        task="lm",
        N=64,
        H=20,
        L=16,
        lws="openelm",
        kv_group=4,
        ffn_divisor=256,
        vocab_size=32000,
        seq_len=2048,
    ),
    # The same block and profile at CPU size: d_model 128, head dim 16, 4 layers, GQA group 2 (heads 4, 6, 6, 8;
    # d_ff 64 -> 512), byte-level LM.
    "openelm-small": dict(
        variant="openelm",
        task="lm",
        N=16,
        H=8,
        L=4,
        lws="openelm",
        kv_group=2,
        ffn_divisor=16,
        vocab_size=256,
        seq_len=64,
    ),
}


@dataclass(frozen=True)
class BlockOptions:
    """The resolved options of a model's blocks. norm: pre-norm kind ("ln" or "rms"; nGPT uses neither);
    qk_norm: per-head RMSNorm of q and k; rope: rotary positions instead of learned ones; kv_group: query heads per
    KV head (1: MHA); mlp: "gelu", "swiglu" or "pattention"; tie: the readout reuses the token embedding;
    ngpt: the normalised residual stream; laurel: the LAUREL parts on (a subset of LAUREL_PARTS), rank and k."""

    variant: str
    norm: str
    qk_norm: bool
    rope: bool
    kv_group: int
    mlp: str
    tie: bool
    ngpt: bool
    laurel: frozenset
    laurel_rank: int
    laurel_k: int

    def summary(self) -> str:
        """One line naming the options, for `describe`."""
        parts = [f"variant {self.variant}:"]
        parts.append("normalised residual stream (nGPT), no norm layers" if self.ngpt else f"pre-norm {self.norm}")
        if self.qk_norm:
            parts.append("QK RMSNorm")
        parts.append("RoPE" if self.rope else "learned positions")
        parts.append("MHA" if self.kv_group == 1 else f"GQA group {self.kv_group}")
        parts.append(f"{self.mlp} MLP")
        if self.tie:
            parts.append("tied embeddings")
        if self.laurel:
            parts.append(
                "LAUREL "
                + "+".join(p for p in LAUREL_PARTS if p in self.laurel)
                + (f" rank {self.laurel_rank}" if "lr" in self.laurel else "")
                + (f" k {self.laurel_k}" if "pa" in self.laurel else "")
            )
        return " ".join(parts[:1]) + " " + ", ".join(parts[1:])

"""How many parameters the model of a `ModelConfig` has, counted from its shapes without building it.

The one count the memory estimates use (`probes.experiment.memory`): per block l with H_l heads, H_l / kv_group
key/value heads and MLP width f_l, the attention's W_Q, W_O (d x H_l N) and W_K, W_V (d x H_l N / kv_group); the
MLP's W_1 (d x 2 f_l for SwiGLU, which gates one half of it with the other; d x f_l for GeLU and Pattention) and
W_2 (f_l x d); and the variants' vectors (RMSNorm and QK-norm gains, nGPT's eigen learning rates and scales,
LAUREL's weights). Plus the embedding, the learned positions (none with RoPE) and the readout (none when tied).
`tests/test_memory_model.py` compares it with sum(p.numel()) of built models.
"""

from __future__ import annotations

from .transformer import ModelConfig, is_vision

__all__ = ["block_parameter_count", "parameter_count"]


def block_parameter_count(cfg: ModelConfig, H_l: int, d_ff: int) -> int:
    """Parameters (a count) of one block of `cfg` with H_l heads and MLP width d_ff."""
    o = cfg.block_options()
    d, N = cfg.d_model, cfg.N
    H_kv = H_l // o.kv_group
    gated = o.mlp == "swiglu"
    mlp_in = (2 if gated else 1) * d_ff  # SwiGLU: W_1 gives both halves, 3 d f weights in all
    n = 2 * d * H_l * N + 2 * d * H_kv * N + d * mlp_in + d_ff * d
    if o.ngpt:
        n += 2 * d + H_l * N + mlp_in  # eigen learning rates (attn, mlp), s_qk, s_uv
    elif o.norm == "rms":
        n += 2 * d  # the two pre-norm gains
    if o.qk_norm and not o.ngpt:
        n += 2 * N  # q and k gains, one N-vector each
    if o.laurel:
        per_add = (
            (2 if "rw" in o.laurel else 0)
            + (2 * d * o.laurel_rank if "lr" in o.laurel else 0)
            + (o.laurel_k if "pa" in o.laurel else 0)
        )
        n += 2 * per_add  # one LAUREL per residual add, two adds per block
    return n


def parameter_count(cfg: ModelConfig) -> int:
    """Parameters (a count) of the model `LWSTransformer(cfg, ...)` builds: embedding, positions, blocks, readout
    and the output norm's or nGPT's logit scale. One member of a seed ensemble (an ensemble of E holds E times it)."""
    o = cfg.block_options()
    d, S = cfg.d_model, cfg.seq_len
    vision = is_vision(cfg.task)
    n_out = cfg.n_classes if vision else cfg.vocab_size
    n = (cfg.d_in if vision else cfg.vocab_size) * d  # embedding
    if not o.rope:
        n += S * d  # learned positions
    sh = cfg.shapes()
    n += sum(block_parameter_count(cfg, H_l, f) for H_l, f in zip(sh.heads, sh.d_ff))
    if not o.tie:
        n += d * n_out  # readout
    if o.ngpt:
        n += n_out  # s_z
    elif o.norm == "rms":
        n += d  # the final norm's gain
    return n

"""Statistics over heads of one attention layer's logits and probabilities, per (sample, s, s').

For q, k of shape (B, H, S, N) the attention logits of head h are A_h = scale * q_h k_h^T (B, S, S), with the
causal mask s' > s when causal, and the probabilities are P_h = softmax over s' of A_h. `head_stats` returns,
for every (b, s, s'), the mean over heads and M2 = sum_h (x_h - mean)^2 of x = A and x = P (the unbiased
variance over heads is M2 / (H - 1)); given the same layer's q0, k0 at a reference time (step 0), also of
x = A - A0 ("dA") and x = P - P0 ("dP"). Masked entries (s' > s under causal) are exactly 0 in every output.

Kernel design (CUDA, Triton):
1. `_row_lse_kernel`, one program per (b, h, block of s): streams over blocks of s', keeping the running row
   max and sum of exp (online softmax), and writes the log-sum-exp of each row of A, shape (B, H, S).
2. `_head_stats_kernel`, one program per (block of s, block of s', b): loops over heads h = 0..H-1,
   recomputes the A tile = scale * q_tile k_tile^T (and P = exp(A - lse), and A0, P0 when given), applies the
   mask, and updates Welford accumulators (mean, M2) for A, P, dA, dP held in float32 registers; then writes
   the mean and M2 tiles. Tiles entirely above the diagonal (causal) skip the head loop and write zeros.
Memory: the outputs are 4 (or 8, with the reference) float32 (B, S, S) tensors plus two (B, H, S) log-sum-exp
tensors; the (B, H, S, S) logits are never materialised, so a probe costs O(B S^2) memory for any H.

Numerics: everything is computed in float32 whatever the input dtype. The variance uses Welford's update
over heads (kernel) or a two-pass `x - mean` (fallback), never E[x^2] - E[x]^2, which cancels
catastrophically when the logits share a large common offset across heads. `tl.dot` runs with
input_precision="ieee": its default on NVIDIA GPUs is TF32 (10-bit mantissa), which would silently make A
accurate to only ~1e-3 relative, far above the spread over heads being measured.

Backends: "triton" (CUDA tensors, or CPU tensors under the Triton interpreter, TRITON_INTERPRET=1 set before
this module is imported), "torch" (a fallback that materialises (B, H, S, S) in float32), and "auto" (triton
when q is on CUDA and triton imports, else torch).
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # e.g. macOS / Windows: only the torch fallback is available
    HAS_TRITON = False

STAT_NAMES = ("A", "P", "dA", "dP")
_BLOCK_M = 32  # rows (s) per tile; tl.dot needs every block dimension >= 16
_BLOCK_N = 32  # columns (s') per tile

Stats = dict[str, tuple[Tensor, Tensor]]


def _check_inputs(q: Tensor, k: Tensor, q0: Tensor | None, k0: Tensor | None) -> None:
    """Raise ValueError unless q, k (and q0, k0) are (B, H, S, N) tensors of one shape on one device."""
    if q.ndim != 4 or k.ndim != 4:
        raise ValueError(f"q and k must be (B, H, S, N), got ndim {q.ndim} and {k.ndim}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape (B, H, S, N), got {tuple(q.shape)} and {tuple(k.shape)}")
    if (q0 is None) != (k0 is None):
        raise ValueError("give both q0 and k0 (the reference-time q and k), or neither")
    for name, t in (("q0", q0), ("k0", k0)):
        if t is not None and t.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q {tuple(q.shape)}, got {tuple(t.shape)}")
    for t in (k, q0, k0):
        if t is not None and t.device != q.device:
            raise ValueError(f"q, k, q0, k0 must be on one device, got {q.device} and {t.device}")


# ----------------------------------------------------------------------------------------------- fallback
def _logits_probs(q: Tensor, k: Tensor, scale: float, causal: bool) -> tuple[Tensor, Tensor]:
    """A = scale q k^T and P = softmax_{s'}(A), both float32 (B, H, S, S), masked entries set to 0."""
    A = torch.matmul(q.float(), k.float().transpose(-1, -2)).mul_(scale)  # (B, H, S, S)
    if not causal:
        return A, torch.softmax(A, dim=-1)
    S = q.shape[2]
    masked = torch.ones(S, S, dtype=torch.bool, device=q.device).triu(1)  # (S, S): s' > s
    bias = torch.zeros(S, S, device=q.device).masked_fill(masked, float("-inf"))  # (S, S): 0, or -inf where masked
    # A + bias and where() give the values of A.masked_fill(masked, ...) (A + 0 = A) without its slow broadcast
    # mask; where() writes into A itself (no new (B, H, S, S) buffer)
    P = torch.softmax(A + bias, dim=-1)  # exactly 0 where masked
    return torch.where(masked, A.new_zeros(()), A, out=A), P


def _two_pass(x: Tensor, out: Tensor) -> None:
    """(mean, M2) over dim 1 (heads) of x (B, H, S, S), written into out (2, B, S, S): M2 = sum_h (x_h - mean)^2."""
    torch.mean(x, dim=1, out=out[0])  # (B, S, S)
    torch.sum((x - out[0].unsqueeze(1)).square_(), dim=1, out=out[1])


def reference_logits(q0: Tensor, k0: Tensor, scale: float, causal: bool) -> tuple[Tensor, Tensor]:
    """(A0, P0) of the reference q0, k0 (B, H, S, N): float32 (B, H, S, S) each, masked entries 0, exactly what
    `head_stats_torch` computes from q0, k0; pass them back as `ref` to skip recomputing them at every call."""
    _check_inputs(q0, k0, None, None)
    return _logits_probs(q0, k0, scale, causal)


def stacked(stats: Stats) -> Tensor:
    """The statistics of `head_stats` as one (n_stats, 2, B, S, S) tensor in STAT_NAMES order ([:, 0] the means,
    [:, 1] the M2s): the buffer both backends write them into (no copy), or a stacked copy of other tensors."""
    views = [t for name in STAT_NAMES[: len(stats)] for t in stats[name]]
    base = views[0]._base
    if base is not None and base.shape == (len(stats), 2, *views[0].shape) and base.is_contiguous():
        parts = base.flatten(0, 1)  # (n_stats * 2, B, S, S)
        if all(v.data_ptr() == parts[i].data_ptr() and v.stride() == parts[i].stride() for i, v in enumerate(views)):
            return base
    return torch.stack([torch.stack(stats[name]) for name in STAT_NAMES[: len(stats)]])


def head_stats_torch(
    q: Tensor,
    k: Tensor,
    scale: float,
    causal: bool,
    q0: Tensor | None = None,
    k0: Tensor | None = None,
    ref: tuple[Tensor, Tensor] | None = None,
) -> Stats:
    """PyTorch fallback of `head_stats` (materialises (B, H, S, S) in float32; two-pass variance).
    Returns {"A": (mean, m2), "P": (mean, m2)} plus "dA", "dP" when q0, k0 (or ref) are given; each float32
    (B, S, S) (views into one (n_stats, 2, B, S, S) buffer, `stacked`). ref: the reference's (A0, P0) from
    `reference_logits(q0, k0, scale, causal)`, instead of q0, k0 (the same results, bit for bit, without the
    reference's matmul and softmax)."""
    _check_inputs(q, k, q0, k0)
    if ref is not None and q0 is not None:
        raise ValueError("give the reference as q0, k0 or as ref = (A0, P0), not both")
    A, P = _logits_probs(q, k, scale, causal)
    if ref is not None and (ref[0].shape != A.shape or ref[1].shape != A.shape):
        raise ValueError(f"ref (A0, P0) must be of shape {tuple(A.shape)}, got {tuple(ref[0].shape)}")
    if ref is None and q0 is not None and k0 is not None:  # both or neither (_check_inputs)
        ref = _logits_probs(q0, k0, scale, causal)
    n_stats = 2 if ref is None else 4
    buf = torch.empty(n_stats, 2, *A.shape[:1], *A.shape[2:], dtype=torch.float32, device=A.device)  # (n, 2, B, S, S)
    _two_pass(A, buf[0])
    _two_pass(P, buf[1])
    if ref is not None:  # A - A0 and P - P0, in place: A and P are not needed any more
        _two_pass(A.sub_(ref[0]), buf[2])
        _two_pass(P.sub_(ref[1]), buf[3])
    return {name: (buf[i, 0], buf[i, 1]) for i, name in enumerate(STAT_NAMES[:n_stats])}


# ------------------------------------------------------------------------------------------------ Triton
if HAS_TRITON:

    @triton.jit
    def _row_lse_kernel(
        q_ptr,
        k_ptr,
        lse_ptr,
        sq_b,
        sq_h,
        sq_s,
        sq_n,
        sk_b,
        sk_h,
        sk_s,
        sk_n,
        H,
        S,
        N,
        scale,
        CAUSAL: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """lse[b, h, s] = log sum_{s' unmasked} exp(A[b, h, s, s']) for one (b, h) and one block of s."""
        pid_bh = tl.program_id(0).to(tl.int64)
        pid_m = tl.program_id(1)
        b = pid_bh // H
        h = pid_bh % H
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        q = tl.load(
            q_ptr + b * sq_b + h * sq_h + offs_m[:, None] * sq_s + offs_d[None, :] * sq_n,
            mask=(offs_m[:, None] < S) & (offs_d[None, :] < N),
            other=0.0,
        ).to(tl.float32)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max
        l_i = tl.zeros([BLOCK_M], tl.float32)  # running sum of exp(A - m_i)
        hi = S
        if CAUSAL:
            hi = tl.minimum(S, (pid_m + 1) * BLOCK_M)
        # only columns are masked, so every row (also rows s >= S) has the unmasked s' = 0 in the first block
        # and m_i is finite after it: no inf - inf
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            k = tl.load(
                k_ptr + b * sk_b + h * sk_h + offs_n[:, None] * sk_s + offs_d[None, :] * sk_n,
                mask=(offs_n[:, None] < S) & (offs_d[None, :] < N),
                other=0.0,
            ).to(tl.float32)
            a = tl.dot(q, tl.trans(k), input_precision="ieee") * scale  # (BLOCK_M, BLOCK_N)
            valid = offs_n[None, :] < S
            if CAUSAL:
                valid = valid & (offs_n[None, :] <= offs_m[:, None])
            a = tl.where(valid, a, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(a, 1))
            l_i = l_i * tl.exp(m_i - m_new) + tl.sum(tl.exp(a - m_new[:, None]), 1)
            m_i = m_new
        tl.store(lse_ptr + pid_bh * S + offs_m, m_i + tl.log(l_i), mask=offs_m < S)

    @triton.jit
    def _welford(x, mean, m2, n):
        """One Welford step with the n-th sample x (n >= 1): returns the updated (mean, m2)."""
        delta = x - mean
        mean = mean + delta / n
        return mean, m2 + delta * (x - mean)

    @triton.jit
    def _tile_AP(
        q_ptr,
        k_ptr,
        lse_ptr,
        b,
        h,
        sq_b,
        sq_h,
        sq_s,
        sq_n,
        sk_b,
        sk_h,
        sk_s,
        sk_n,
        H,
        S,
        N,
        scale,
        offs_m,
        offs_n,
        offs_d,
        valid,
    ):
        """The masked (A, P) tile (BLOCK_M, BLOCK_N) of head h of sample b, both 0 where not valid."""
        q = tl.load(
            q_ptr + b * sq_b + h * sq_h + offs_m[:, None] * sq_s + offs_d[None, :] * sq_n,
            mask=(offs_m[:, None] < S) & (offs_d[None, :] < N),
            other=0.0,
        ).to(tl.float32)
        k = tl.load(
            k_ptr + b * sk_b + h * sk_h + offs_n[:, None] * sk_s + offs_d[None, :] * sk_n,
            mask=(offs_n[:, None] < S) & (offs_d[None, :] < N),
            other=0.0,
        ).to(tl.float32)
        a = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        lse = tl.load(lse_ptr + (b * H + h) * S + offs_m, mask=offs_m < S, other=0.0)
        p = tl.exp(tl.where(valid, a - lse[:, None], float("-inf")))  # no overflow where masked
        return tl.where(valid, a, 0.0), p

    @triton.jit
    def _head_stats_kernel(
        q_ptr,
        k_ptr,
        lse_ptr,
        q0_ptr,
        k0_ptr,
        lse0_ptr,
        out_ptr,
        sq_b,
        sq_h,
        sq_s,
        sq_n,
        sk_b,
        sk_h,
        sk_s,
        sk_n,
        s0q_b,
        s0q_h,
        s0q_s,
        s0q_n,
        s0k_b,
        s0k_h,
        s0k_s,
        s0k_n,
        so_st,
        so_b,
        H,
        S,
        N,
        scale,
        CAUSAL: tl.constexpr,
        HAS_REF: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """Welford (mean, M2) over heads of A, P (and A - A0, P - P0) for one (s-block, s'-block, b) tile;
        out is (n_stats, 2, B, S, S) contiguous, [stat, 0] = mean, [stat, 1] = M2; so_st = B S S, so_b = S S."""
        pid_m = tl.program_id(0)
        pid_n = tl.program_id(1)
        b = tl.program_id(2).to(tl.int64)
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        valid = (offs_m[:, None] < S) & (offs_n[None, :] < S)
        n_heads = H
        if CAUSAL:
            valid = valid & (offs_n[None, :] <= offs_m[:, None])
            # a tile entirely above the diagonal: skip the head loop, write zeros
            n_heads = tl.where(pid_n * BLOCK_N > pid_m * BLOCK_M + BLOCK_M - 1, 0, H)
        zero = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
        a_mean, a_m2, p_mean, p_m2 = zero, zero, zero, zero
        da_mean, da_m2, dp_mean, dp_m2 = zero, zero, zero, zero
        for h in range(n_heads):
            n = tl.cast(h + 1, tl.float32)
            a, p = _tile_AP(
                q_ptr,
                k_ptr,
                lse_ptr,
                b,
                h,
                sq_b,
                sq_h,
                sq_s,
                sq_n,
                sk_b,
                sk_h,
                sk_s,
                sk_n,
                H,
                S,
                N,
                scale,
                offs_m,
                offs_n,
                offs_d,
                valid,
            )
            a_mean, a_m2 = _welford(a, a_mean, a_m2, n)
            p_mean, p_m2 = _welford(p, p_mean, p_m2, n)
            if HAS_REF:
                a0, p0 = _tile_AP(
                    q0_ptr,
                    k0_ptr,
                    lse0_ptr,
                    b,
                    h,
                    s0q_b,
                    s0q_h,
                    s0q_s,
                    s0q_n,
                    s0k_b,
                    s0k_h,
                    s0k_s,
                    s0k_n,
                    H,
                    S,
                    N,
                    scale,
                    offs_m,
                    offs_n,
                    offs_d,
                    valid,
                )
                da_mean, da_m2 = _welford(a - a0, da_mean, da_m2, n)
                dp_mean, dp_m2 = _welford(p - p0, dp_mean, dp_m2, n)
        so_st = tl.cast(so_st, tl.int64)  # 8 B S^2 may exceed 2^31
        ptrs = out_ptr + b * so_b + offs_m[:, None] * S + offs_n[None, :]  # out[0, 0, b] (mean of A)
        in_bounds = (offs_m[:, None] < S) & (offs_n[None, :] < S)
        tl.store(ptrs, a_mean, mask=in_bounds)
        tl.store(ptrs + so_st, a_m2, mask=in_bounds)
        tl.store(ptrs + 2 * so_st, p_mean, mask=in_bounds)
        tl.store(ptrs + 3 * so_st, p_m2, mask=in_bounds)
        if HAS_REF:
            tl.store(ptrs + 4 * so_st, da_mean, mask=in_bounds)
            tl.store(ptrs + 5 * so_st, da_m2, mask=in_bounds)
            tl.store(ptrs + 6 * so_st, dp_mean, mask=in_bounds)
            tl.store(ptrs + 7 * so_st, dp_m2, mask=in_bounds)


def _row_lse(q: Tensor, k: Tensor, scale: float, causal: bool, block_d: int) -> Tensor:
    """Log-sum-exp over unmasked s' of each row of A = scale q k^T: float32 (B, H, S)."""
    B, H, S, N = q.shape
    lse = torch.empty(B, H, S, dtype=torch.float32, device=q.device)
    grid = (B * H, triton.cdiv(S, _BLOCK_M))
    _row_lse_kernel[grid](
        q,
        k,
        lse,
        *q.stride(),
        *k.stride(),
        H,
        S,
        N,
        float(scale),
        CAUSAL=causal,
        BLOCK_M=_BLOCK_M,
        BLOCK_N=_BLOCK_N,
        BLOCK_D=block_d,
    )
    return lse


def head_stats_triton(
    q: Tensor, k: Tensor, scale: float, causal: bool, q0: Tensor | None = None, k0: Tensor | None = None
) -> Stats:
    """Triton implementation of `head_stats` (never materialises (B, H, S, S)).
    Returns {"A": (mean, m2), "P": (mean, m2)} plus "dA", "dP" when q0, k0 are given; each float32 (B, S, S)
    (views into one (n_stats, 2, B, S, S) buffer)."""
    _check_inputs(q, k, q0, k0)
    if not HAS_TRITON:
        raise ValueError("backend 'triton' needs the triton package, which cannot be imported here")
    if not q.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend 'triton' needs CUDA tensors (got {q.device}) or TRITON_INTERPRET=1 "
            "set before probes.hooks.head_stats is imported; use backend 'torch' or 'auto'"
        )
    B, H, S, N = q.shape
    has_ref = q0 is not None
    block_d = max(16, triton.next_power_of_2(N))  # N padded with masked loads
    with torch.cuda.device(q.device) if q.is_cuda else nullcontext():
        lse = _row_lse(q, k, scale, causal, block_d)  # (B, H, S)
        if q0 is not None and k0 is not None:  # has_ref (both or neither: _check_inputs)
            lse0 = _row_lse(q0, k0, scale, causal, block_d)  # (B, H, S)
            r_q, r_k = q0, k0
        else:
            lse0, r_q, r_k = lse, q, k  # placeholders when there is no reference
        n_stats = 4 if has_ref else 2
        out = torch.empty(n_stats, 2, B, S, S, dtype=torch.float32, device=q.device)
        grid = (triton.cdiv(S, _BLOCK_M), triton.cdiv(S, _BLOCK_N), B)  # B <= 65535 (grid dim 2)
        _head_stats_kernel[grid](
            q,
            k,
            lse,
            r_q,
            r_k,
            lse0,
            out,
            *q.stride(),
            *k.stride(),
            *r_q.stride(),
            *r_k.stride(),
            out.stride(1),
            out.stride(2),
            H,
            S,
            N,
            float(scale),
            CAUSAL=causal,
            HAS_REF=has_ref,
            BLOCK_M=_BLOCK_M,
            BLOCK_N=_BLOCK_N,
            BLOCK_D=block_d,
        )
    return {name: (out[i, 0], out[i, 1]) for i, name in enumerate(STAT_NAMES[:n_stats])}


def head_stats(
    q: Tensor,
    k: Tensor,
    scale: float,
    causal: bool,
    q0: Tensor | None = None,
    k0: Tensor | None = None,
    backend: str = "auto",
) -> Stats:
    """Mean and M2 over heads of the attention logits and probabilities of one layer, per (b, s, s').

    q, k: (B, H, S, N) (any strides, float32 or lower precision; computed in float32). q0, k0: the same
    layer's q, k at the reference time (step 0), same shape, or None.
    A = scale * q @ k^T per head (B, H, S, S), causal mask s' > s when causal; P = softmax over s' of A.
    Returns {"A": (mean, m2), "P": (mean, m2)} and, when q0/k0 are given, also "dA": stats of A - A0 and
    "dP": stats of P - P0 (P0 = softmax(A0)). mean and m2 are float32 (B, S, S): mean over heads and
    M2 = sum_h (x_h - mean)^2 (so the unbiased variance is m2 / (H - 1); m2 = 0 when H = 1).
    Masked entries (s' > s under causal) are exactly 0 in every output.
    backend: "triton" (CUDA tensors, or CPU tensors when the environment variable TRITON_INTERPRET=1 is set),
    "torch" (the fallback), "auto": triton when q.is_cuda and triton imports, else torch.
    """
    if backend == "auto":
        backend = "triton" if (q.is_cuda and HAS_TRITON) else "torch"
    if backend == "triton":
        return head_stats_triton(q, k, scale, causal, q0, k0)
    if backend == "torch":
        return head_stats_torch(q, k, scale, causal, q0, k0)
    raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")

"""Fused RMSNorm, forward and backward: y = x * rsqrt(mean(x^2 over the last dim) + eps) * weight.

Why: OpenELM's RMSNorm is written naively in PyTorch (x.float(), pow, mean, add, rsqrt, two multiplies, a cast
back), so every normalisation runs several separate elementwise / reduction kernels with an fp32 round trip
through memory, forward and backward; it was a known throughput bottleneck of OpenELM training. The fused
kernels here read x once and write y once in the forward, and read x and the output gradient g once (and write dx
once) in the backward.

Shapes: x is (..., D) with any leading shape. weight is None (no gain), (D,) (one gain shared by every row), or
(E, D) with x of shape (E, ..., D) (an ensemble of E models: member e's rows use weight[e]).

Kernel design (Triton; x is flattened to a contiguous (M, D) matrix whose member e owns the R = M / E rows
[e R, (e + 1) R); without an ensemble weight E = 1 and R = M):
1. `_rms_fwd_kernel`, grid (row blocks of a member, E): each program loads a (BLOCK_M, BLOCK_D) tile of x (BLOCK_D
   = the next power of two >= D, the tail masked), computes rstd = rsqrt(sum(x^2) / D + eps) per row in float32,
   writes y = x * rstd * w (w = weight[e], loaded once per program) in x's dtype and saves rstd (float32, one per
   row) for the backward.
2. `_rms_bwd_kernel`, grid (P programs per member, E): program p of member e walks its contiguous chunk of rows
   in (BLOCK_M, BLOCK_D) tiles; with x_hat = x * rstd and gw = g * w it writes
       dx = rstd * (gw - x_hat * mean(gw * x_hat))        (mean over the row)
   and accumulates sum over its rows of g * x_hat in float32 registers, stored once into its own row of a
   (E, P, D) partial buffer; dweight = partial.sum(1). Each program owns its partial row and the final sum is a
   torch reduction: deterministic, no atomics. Without a weight (or when it needs no gradient) P = the number of
   row blocks and no partial buffer is written.
Very large D (> MAX_BLOCK_D, default 8192 elements): the row no longer fits one tile, so the kernels loop over D in
BLOCK_D chunks: the forward reads x twice (sum of squares, then y), and the backward runs `_rms_bwd_dot_kernel`
first (mean(gw * x_hat) per row) and then `_rms_bwd_kernel` with it precomputed, reading x and g twice.

Numerics: everything is computed in float32 whatever the input dtype (as OpenELM does) and cast back to x's dtype
(y, dx) and weight's dtype (dweight). The sum of squares is a float32 tree reduction of non-negative terms, so its
relative error is ~log2(D) float32 ulps even with a large common offset in x (no cancellation); the backward uses
the x_hat form above, never E[x^2]-type differences.

Backends: "triton" (CUDA tensors, or CPU tensors under the Triton interpreter, TRITON_INTERPRET=1 set before this
module is imported), "torch" (`rms_norm_torch`, the reference; autograd through PyTorch ops), and "auto" (triton
when x is on CUDA and triton imports, else torch).
"""

from __future__ import annotations

import os
from contextlib import nullcontext

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

try:
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # e.g. macOS / Windows: only the torch reference is available
    HAS_TRITON = False

__all__ = ["EPS", "HAS_TRITON", "MAX_BLOCK_D", "rms_norm", "rms_norm_torch", "rms_norm_triton"]

EPS = 1e-6  # OpenELM's RMSNorm eps
MAX_BLOCK_D = 8192  # widest row held in one tile; wider rows loop over D in chunks of this size
_TILE = 4096  # target elements per (BLOCK_M, BLOCK_D) tile
_MAX_BLOCK_M = 64


def _members(x: Tensor, weight: Tensor | None) -> int:
    """Check weight against x; returns E, the number of ensemble members (1 unless weight is (E, D)).
    Raises ValueError (one line naming both shapes) when weight is neither None, (D,) nor (E, D) with x (E, ..., D)."""
    if x.ndim == 0:
        raise ValueError("x must have at least one dimension (..., D), got a 0-d tensor")
    if weight is None:
        return 1
    D = x.shape[-1]
    if weight.ndim == 1 and weight.shape[0] == D:
        return 1
    if weight.ndim == 2 and x.ndim >= 2 and weight.shape == (x.shape[0], D):
        return weight.shape[0]
    raise ValueError(
        f"weight must be None, ({D},) or (E, {D}) with x of shape (E, ..., {D}); "
        f"got weight {tuple(weight.shape)} for x {tuple(x.shape)}"
    )


# ---------------------------------------------------------------------------------------------- reference
def rms_norm_torch(x: Tensor, weight: Tensor | None = None, eps: float = EPS) -> Tensor:
    """Reference RMSNorm in PyTorch ops: x * rsqrt(mean(x^2, last dim) + eps) * weight, computed in float32.
    weight: None, (D,), or (E, D) with x (E, ..., D) (member e's rows use weight[e]).
    Returns a tensor of x's shape and dtype."""
    E = _members(x, weight)
    xf = x.float()
    y = xf * torch.rsqrt(xf.square().mean(dim=-1, keepdim=True) + eps)
    if weight is not None:
        w = weight.float()
        if weight.ndim == 2:
            w = w.view(E, *([1] * (x.ndim - 2)), x.shape[-1])  # broadcast over member e's rows
        y = y * w
    return y.to(x.dtype)


# ------------------------------------------------------------------------------------------------ Triton
if HAS_TRITON:

    @triton.jit
    def _rms_fwd_kernel(
        x_ptr,
        w_ptr,
        y_ptr,
        rstd_ptr,
        R,
        D,
        eps,
        HAS_W: tl.constexpr,
        SINGLE: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """y = x * rstd * w[e] and rstd for BLOCK_M rows of member e = program_id(1) (rows e R + offs_r)."""
        e = tl.program_id(1).to(tl.int64)
        offs_r = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)  # rows within member e
        row_ok = offs_r < R
        rows = e * R + offs_r  # int64: M D may exceed 2^31
        offs_d = tl.arange(0, BLOCK_D)
        if SINGLE:  # the whole row in one tile: x read once
            mask = row_ok[:, None] & (offs_d[None, :] < D)
            offs = rows[:, None] * D + offs_d[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            rstd = tl.rsqrt(tl.sum(x * x, 1) / D + eps)
            y = x * rstd[:, None]
            if HAS_W:
                w = tl.load(w_ptr + e * D + offs_d, mask=offs_d < D, other=0.0).to(tl.float32)
                y = y * w[None, :]
            tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        else:  # D > BLOCK_D: two passes over D
            ss = tl.zeros([BLOCK_M], tl.float32)
            for d0 in range(0, D, BLOCK_D):
                cols = d0 + offs_d
                x = tl.load(
                    x_ptr + rows[:, None] * D + cols[None, :], mask=row_ok[:, None] & (cols[None, :] < D), other=0.0
                ).to(tl.float32)
                ss += tl.sum(x * x, 1)
            rstd = tl.rsqrt(ss / D + eps)
            for d0 in range(0, D, BLOCK_D):
                cols = d0 + offs_d
                mask = row_ok[:, None] & (cols[None, :] < D)
                offs = rows[:, None] * D + cols[None, :]
                y = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) * rstd[:, None]
                if HAS_W:
                    w = tl.load(w_ptr + e * D + cols, mask=cols < D, other=0.0).to(tl.float32)
                    y = y * w[None, :]
                tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        tl.store(rstd_ptr + rows, rstd, mask=row_ok)

    @triton.jit
    def _rms_bwd_dot_kernel(
        x_ptr, w_ptr, g_ptr, rstd_ptr, c_ptr, R, D, HAS_W: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr
    ):
        """c = mean over the row of (g * w[e]) * x_hat for BLOCK_M rows of member e (only used when D > BLOCK_D)."""
        e = tl.program_id(1).to(tl.int64)
        offs_r = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = offs_r < R
        rows = e * R + offs_r
        offs_d = tl.arange(0, BLOCK_D)
        acc = tl.zeros([BLOCK_M], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            cols = d0 + offs_d
            mask = row_ok[:, None] & (cols[None, :] < D)
            offs = rows[:, None] * D + cols[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            gw = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            if HAS_W:
                w = tl.load(w_ptr + e * D + cols, mask=cols < D, other=0.0).to(tl.float32)
                gw = gw * w[None, :]
            acc += tl.sum(gw * x, 1)
        rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
        tl.store(c_ptr + rows, acc * rstd / D, mask=row_ok)

    @triton.jit
    def _rms_bwd_kernel(
        x_ptr,
        w_ptr,
        g_ptr,
        rstd_ptr,
        c_ptr,
        dx_ptr,
        dwp_ptr,
        R,
        D,
        rows_per_prog,
        P,
        HAS_W: tl.constexpr,
        HAS_DW: tl.constexpr,
        HAS_C: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_D: tl.constexpr,
    ):
        """dx for rows [p rows_per_prog, (p + 1) rows_per_prog) of member e (p, e = program ids) and, when HAS_DW,
        this program's partial dweight = sum over those rows of g * x_hat, stored in dwp[e, p, :] ((E, P, D)).
        HAS_C: mean(gw * x_hat) per row precomputed in c (D > BLOCK_D); else computed from the tile (D <= BLOCK_D)."""
        p = tl.program_id(0)
        e = tl.program_id(1).to(tl.int64)
        r_start = p * rows_per_prog
        r_end = tl.minimum(r_start + rows_per_prog, R)
        offs_m = tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        for d0 in range(0, D, BLOCK_D):  # one iteration unless HAS_C
            cols = d0 + offs_d
            col_ok = cols < D
            if HAS_W:
                w = tl.load(w_ptr + e * D + cols, mask=col_ok, other=0.0).to(tl.float32)
            dw_acc = tl.zeros([BLOCK_D], tl.float32)
            for m0 in range(r_start, r_end, BLOCK_M):
                offs_r = m0 + offs_m
                row_ok = offs_r < r_end
                rows = e * R + offs_r
                mask = row_ok[:, None] & col_ok[None, :]
                offs = rows[:, None] * D + cols[None, :]
                x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
                rstd = tl.load(rstd_ptr + rows, mask=row_ok, other=0.0)
                x_hat = x * rstd[:, None]
                if HAS_W:
                    gw = g * w[None, :]
                else:
                    gw = g
                if HAS_C:
                    c = tl.load(c_ptr + rows, mask=row_ok, other=0.0)
                else:
                    c = tl.sum(gw * x_hat, 1) / D
                dx = rstd[:, None] * (gw - x_hat * c[:, None])
                tl.store(dx_ptr + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
                if HAS_DW:
                    dw_acc += tl.sum(g * x_hat, 0)  # masked rows / columns load 0: contribute 0
            if HAS_DW:
                tl.store(dwp_ptr + (e * P + p) * D + cols, dw_acc, mask=col_ok)


def _blocks(D: int, max_block_d: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_D, num_warps) for rows of width D: BLOCK_D = next power of two >= D (at least 16, at most
    max_block_d), BLOCK_M rows so that a tile holds about _TILE elements."""
    block_d = min(max(16, triton.next_power_of_2(D)), max_block_d)
    block_m = max(1, min(_MAX_BLOCK_M, _TILE // block_d))
    return block_m, block_d, (8 if block_d >= 4096 else 4)


def _programs_per_member(n_row_blocks: int, E: int, device: torch.device) -> int:
    """How many backward programs share one member's rows when dweight is accumulated: enough to fill the GPU
    (4 per SM over all members; 4 in all under the interpreter), at most one per row block."""
    target = 4 * torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return max(1, min(n_row_blocks, -(-target // E)))


def _forward(x2: Tensor, w: Tensor | None, E: int, eps: float, max_block_d: int) -> tuple[Tensor, Tensor]:
    """Run the forward kernel on contiguous x2 (M, D); returns y (M, D) in x2's dtype and rstd (M,) float32."""
    M, D = x2.shape
    R = M // E
    block_m, block_d, warps = _blocks(D, max_block_d)
    y = torch.empty_like(x2)
    rstd = torch.empty(M, dtype=torch.float32, device=x2.device)
    grid = (triton.cdiv(R, block_m), E)
    _rms_fwd_kernel[grid](
        x2,
        w if w is not None else x2,
        y,
        rstd,
        R,
        D,
        float(eps),
        HAS_W=w is not None,
        SINGLE=block_d >= D,
        BLOCK_M=block_m,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    return y, rstd


def _backward(
    g2: Tensor, x2: Tensor, w: Tensor | None, rstd: Tensor, E: int, need_dw: bool, max_block_d: int
) -> tuple[Tensor, Tensor | None]:
    """Run the backward kernel(s); returns dx (M, D) in x2's dtype and, when need_dw, dweight float32 (E, D)."""
    M, D = x2.shape
    R = M // E
    block_m, block_d, warps = _blocks(D, max_block_d)
    n_row_blocks = triton.cdiv(R, block_m)
    P = _programs_per_member(n_row_blocks, E, x2.device) if need_dw else n_row_blocks
    rows_per_prog = triton.cdiv(n_row_blocks, P) * block_m
    P = triton.cdiv(R, rows_per_prog)
    dx = torch.empty_like(x2)
    has_c = block_d < D
    c = torch.empty(M, dtype=torch.float32, device=x2.device) if has_c else rstd  # placeholder when unused
    if has_c:
        _rms_bwd_dot_kernel[(n_row_blocks, E)](
            x2,
            w if w is not None else x2,
            g2,
            rstd,
            c,
            R,
            D,
            HAS_W=w is not None,
            BLOCK_M=block_m,
            BLOCK_D=block_d,
            num_warps=warps,
        )
    partial = torch.empty(E, P, D, dtype=torch.float32, device=x2.device) if need_dw else rstd
    _rms_bwd_kernel[(P, E)](
        x2,
        w if w is not None else x2,
        g2,
        rstd,
        c,
        dx,
        partial,
        R,
        D,
        rows_per_prog,
        P,
        HAS_W=w is not None,
        HAS_DW=need_dw,
        HAS_C=has_c,
        BLOCK_M=block_m,
        BLOCK_D=block_d,
        num_warps=warps,
    )
    return dx, (partial.sum(dim=1) if need_dw else None)


class _RMSNormFn(torch.autograd.Function):
    """Autograd wrapper of the fused kernels: saves x (contiguous), weight and rstd (M,) for the backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor | None, eps: float, max_block_d: int) -> Tensor:
        E = _members(x, weight)
        D = x.shape[-1]
        x2 = x.reshape(-1, D).contiguous()
        w = weight.contiguous() if weight is not None else None
        with torch.cuda.device(x.device) if x.is_cuda else nullcontext():
            y, rstd = _forward(x2, w, E, eps, max_block_d)
        ctx.save_for_backward(x2, w, rstd)
        ctx.E, ctx.max_block_d, ctx.x_shape = E, max_block_d, x.shape
        return y.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x2, w, rstd = ctx.saved_tensors
        need_dw = w is not None and ctx.needs_input_grad[1]
        g2 = gy.reshape(-1, x2.shape[1]).contiguous()
        with torch.cuda.device(x2.device) if x2.is_cuda else nullcontext():
            dx, dw = _backward(g2, x2, w, rstd, ctx.E, need_dw, ctx.max_block_d)
        if dw is not None:
            dw = dw.view(w.shape).to(w.dtype)
        return dx.view(ctx.x_shape), dw, None, None


def rms_norm_triton(
    x: Tensor, weight: Tensor | None = None, eps: float = EPS, *, max_block_d: int = MAX_BLOCK_D
) -> Tensor:
    """RMSNorm through the fused Triton kernels (differentiable in x and weight; see the module docstring).
    max_block_d: widest row held in one tile (a power of two); wider rows loop over D (tests lower it to exercise
    that path). Returns a tensor of x's shape and dtype."""
    _members(x, weight)
    if not HAS_TRITON:
        raise ValueError("backend 'triton' needs the triton package, which cannot be imported here")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend 'triton' needs CUDA tensors (got {x.device}) or TRITON_INTERPRET=1 set before "
            "parametrizations.rmsnorm is imported; use backend 'torch' or 'auto'"
        )
    if weight is not None and weight.device != x.device:
        raise ValueError(f"x and weight must be on one device, got {x.device} and {weight.device}")
    if max_block_d < 16 or max_block_d & (max_block_d - 1):
        raise ValueError(f"max_block_d must be a power of two >= 16, got {max_block_d}")
    if x.numel() == 0:
        return rms_norm_torch(x, weight, eps)
    return _RMSNormFn.apply(x, weight, eps, max_block_d)


def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = EPS, backend: str = "auto") -> Tensor:
    """RMSNorm over the last dim: x * rsqrt(mean(x^2) + eps) * weight, computed in float32, in x's dtype.

    x: (..., D), any leading shape and strides. weight: None (no gain), (D,), or (E, D) with x of shape (E, ..., D)
    (member e's rows use weight[e]); gradients flow to x and weight.
    backend: "triton" (the fused kernels; CUDA tensors, or CPU tensors when TRITON_INTERPRET=1 was set before this
    module was imported), "torch" (`rms_norm_torch`), "auto": triton when x.is_cuda and triton imports, else torch.
    Returns a tensor of x's shape and dtype. Raises ValueError for a weight shape that does not match x.
    """
    if backend == "auto":
        backend = "triton" if (x.is_cuda and HAS_TRITON) else "torch"
    if backend == "triton":
        return rms_norm_triton(x, weight, eps)
    if backend == "torch":
        return rms_norm_torch(x, weight, eps)
    raise ValueError(f"backend must be 'auto', 'triton' or 'torch', got {backend!r}")

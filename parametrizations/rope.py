"""Rotary position embedding (RoPE), as OpenELM and nGPT apply it to q and k (rotate-half form, theta 1e4).

Head coordinate pairs (i, i + N/2), i < N/2, of the token at position s are rotated by the angle
s * theta^(-2i/N), computed in float32. The rotation keeps every vector's norm, so it changes no size the
parametrization counts; as N grows the frequencies fill (0, 1] more densely, a well-defined N -> oo profile.
"""

from __future__ import annotations

import functools

import torch

THETA = 10_000.0


@functools.lru_cache(maxsize=32)
def rope_angles(
    S: int, N: int, device: torch.device | str = "cpu", theta: float = THETA
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) of the rotation angles, each (S, N) in float32: column i and i + N/2 share s * theta^(-2i/N).
    Cached per (S, N, device, theta): q and k of every block at every step share one pair (read-only)."""
    inv_freq = theta ** (-torch.arange(0, N, 2, device=device, dtype=torch.float32) / N)  # (N/2,)
    ang = torch.arange(S, device=device, dtype=torch.float32)[:, None] * inv_freq[None, :]  # (S, N/2)
    ang = torch.cat([ang, ang], dim=-1)  # (S, N)
    return ang.cos(), ang.sin()


def rope(x: torch.Tensor, theta: float = THETA) -> torch.Tensor:
    """x rotated by its position: x (..., S, N) with N even -> (..., S, N), same dtype. Position s is the index
    along dim -2 (the token index)."""
    S, N = x.shape[-2], x.shape[-1]
    if N % 2:
        raise ValueError(f"RoPE needs an even head dimension, got N={N}")
    cos, sin = rope_angles(S, N, torch.device(x.device), theta)
    xf = x.float()
    x1, x2 = xf[..., : N // 2], xf[..., N // 2 :]
    rotated = torch.cat([-x2, x1], dim=-1)  # rotate-half: (x1, x2) -> (-x2, x1)
    return (xf * cos + rotated * sin).to(x.dtype)

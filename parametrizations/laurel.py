"""LAUREL learned residuals (Menghani, Kumar & Kumar, ICML 2025), under the parametrization (docs/variants.md).

At a residual add with input x_i and branch output f(x_i) (already times the branch multiplier beta0 l^-alpha_L):
    baseline  x_{i+1} = f + x_i
    RW        x_{i+1} = a f + b x_i                                    a, b learned scalars, both 1 at init
    LR        x_{i+1} = f + x_i + beta0 l^-alpha_L B A x_i            A: d -> r, B: r -> d, B = 0 at init
    PA        x_{i+1} = f + x_i + sum_{j<k} gamma_j x_{i-j}           gamma learned scalars, 0 at init
and the combinations by composition, e.g. RW+LR+PA: a f + b (x_i + beta0 l^-alpha_L B A x_i + sum_j gamma_j x_{i-j}).
x_{i-j} are the stream states at this and the previous residual adds (two adds per block). The LR map carries
the branch multiplier: it is one more residual branch, and without it L such maps move the stream L times as far.
Unlike the paper we leave a and b unbounded (no sigmoid/softmax): their multipliers keep b within O(1/L) of 1 per
layer, which is the bound that matters for the depth limit. PA uses h = identity (the k-parameter form).
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ScaledLinear, ScaledVector
from .spec import Parametrization, abc, vector_mult


class Laurel(nn.Module):
    """One LAUREL residual add. parts: a subset of {"rw", "lr", "pa"}; rank: r of LR; k: states PA weighs;
    branch: beta0 (L/L0)^-alpha_L."""

    def __init__(
        self,
        parts: frozenset,
        d: int,
        rank: int,
        k: int,
        p: Parametrization,
        N: int,
        L: int,
        optimizer: str,
        branch: float,
        ensemble: int | None = None,
    ):
        super().__init__()
        self.parts, self.branch, self.k = parts, float(branch), k

        def vec(n: int, role: str, init: float) -> ScaledVector:
            return ScaledVector(n, role, init, vector_mult(p, role, d=d, N=N, L=L, optimizer=optimizer), ensemble)

        if "rw" in parts:
            self.a, self.b = vec(1, "laurel_a", 1.0), vec(1, "laurel_res", 1.0)
        if "lr" in parts:
            self.A = ScaledLinear(
                d, rank, "laurel_A", *abc(p, "laurel_A", d, d=d, N=N, L=L, optimizer=optimizer), ensemble
            )
            self.B = ScaledLinear(
                rank, d, "laurel_B", *abc(p, "laurel_B", rank, d=d, N=N, L=L, optimizer=optimizer), ensemble
            )
        if "pa" in parts:
            self.gamma = vec(k, "laurel_res", 0.0)

    def forward(self, x: torch.Tensor, fx: torch.Tensor, history: list[torch.Tensor] | None) -> torch.Tensor:
        """x_{i+1} from x = x_i (..., S, d), fx = the scaled branch output (..., S, d) and history = the stream
        states at the previous adds, most recent last (history[-1] is x itself; PA only)."""
        res = x
        if "lr" in self.parts:
            res = res + self.branch * self.B(self.A(x))
        if "pa" in self.parts:
            assert history is not None, "LAUREL-PA needs the stream history"
            gam = self.gamma.value_for(x, (self.k,))  # (k,) or (E, 1, .., k)
            for j, state in enumerate(reversed(history[-self.k :])):
                res = res + gam[..., j : j + 1] * state
        if "rw" in self.parts:
            return self.a.value_for(x, (1,)) * fx + self.b.value_for(x, (1,)) * res
        return fx + res

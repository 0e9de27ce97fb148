"""The parameter modules of the model, in abc form: each stores w and applies a plain-float forward multiplier.

ScaledWeight / ScaledLinear / ScaledTable: matrices drawn N(0, init_std^2); ScaledVector: vectors and scalars with a
constant initial value (gains, eigen learning rates, LAUREL weights); TiedReadout: a readout that reuses the token
table with its own multiplier. With ensemble=E every parameter carries a leading member dimension E, member e
initialised exactly as a separate model with seed e would be, and activations carry a leading E dimension.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def member_linear(x: torch.Tensor, w: torch.Tensor, ensemble: int | None) -> torch.Tensor:
    """x W^T: w (fan_out, fan_in) and x (..., fan_in), or in an ensemble w (E, fan_out, fan_in) and x (E, ...,
    fan_in) with member e's rows times member e's weight (one batched matmul). Returns (..., fan_out)."""
    if ensemble is None:
        return F.linear(x, w)
    E, fan_in = w.shape[0], x.shape[-1]
    y = torch.bmm(x.reshape(E, -1, fan_in), w.transpose(1, 2))   # (E, M, fan_out)
    return y.view(*x.shape[:-1], w.shape[1])


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
        return member_linear(x, self.weight * self.mult, self.ensemble)


class ScaledTable(ScaledWeight):
    """A table of vectors (token embedding or learned positions), y = mult * W[i], W (rows, dim); in an ensemble
    W is (E, rows, dim) and y (E, *idx.shape, dim)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.mult                               # mult W[i], the multiplier on the (small) table
        if self.ensemble is None:
            return F.embedding(idx, w)
        return w[:, idx]                                          # (E, *idx.shape, dim)


class ScaledVector(ScaledWeight):
    """A vector (or scalar, n = 1) parameter: value = mult * w, w constant at init so that the value starts at
    `init_value` (w = init_value / mult). With ensemble=E, w is (E, n). `value_for(x, tail)` broadcasts the value
    against x, whose last dims are `tail`-shaped."""

    def __init__(self, n: int, role: str, init_value: float, mult: float, ensemble: int | None = None):
        nn.Module.__init__(self)
        self.weight = nn.Parameter(torch.empty((n,) if ensemble is None else (ensemble, n)))
        self.role, self.init_std, self.mult, self.ensemble = role, 0.0, float(mult), ensemble
        self.init_value = float(init_value)

    def reset_parameters(self, generator: torch.Generator, member: int | None = None) -> None:
        """Set w (or member `member`'s slice) to init_value / mult (no randomness: the generator is unused)."""
        with torch.no_grad():
            w = self.weight if member is None else self.weight[member]
            w.fill_(self.init_value / self.mult)

    def value(self) -> torch.Tensor:
        """mult * w, (n,) or (E, n)."""
        return self.weight * self.mult

    def value_for(self, x: torch.Tensor, tail: tuple[int, ...]) -> torch.Tensor:
        """The value shaped to broadcast against x (..., *tail): (*tail) alone, or (E, 1, ..., 1, *tail) in an
        ensemble (x then has the leading member dim)."""
        v = self.value()
        if self.ensemble is None:
            return v.view(*tail)
        return v.view(self.ensemble, *([1] * (x.dim() - 1 - len(tail))), *tail)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, role={self.role}, init={self.init_value:.4g}, mult={self.mult:.4g}"


class TiedReadout(nn.Module):
    """A readout that reuses the token table (V, d) of `table` (tied embeddings): y = mult * W u, with its own
    multiplier (the readout's abc multiplier; the init std is the table's, which the abc rules make equal)."""

    def __init__(self, table: ScaledTable, mult: float):
        super().__init__()
        self._table = [table]                      # a list: the table's parameter stays registered once
        self.role, self.mult, self.ensemble = "readout", float(mult), table.ensemble

    @property
    def weight(self) -> torch.Tensor:
        return self._table[0].weight

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return member_linear(u, self.weight * self.mult, self.ensemble)

    def extra_repr(self) -> str:
        return f"tied to the token table, mult={self.mult:.4g}"

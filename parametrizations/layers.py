"""The parameter modules of the model, in abc form: each stores w and applies a plain-float forward multiplier.

ScaledWeight / ScaledLinear / ScaledTable: matrices drawn N(0, init_std^2); ScaledVector: vectors and scalars with a
constant initial value (gains, eigen learning rates, LAUREL weights); TiedReadout: a readout that reuses the token
table with its own multiplier. With ensemble=E every parameter carries a leading member dimension E, member e
initialised exactly as a separate model with seed e would be, and activations carry a leading E dimension.

Keyed initialisation (docs/design.md, "The model"): each weight is drawn from its own generator,
`keyed_generator(*key)`, seeded from numpy's SeedSequence of the key, e.g. ("io", seed, "readout") or ("block",
seed, l, "q") (`parametrizations.transformer.init_key`). A weight's draw therefore does not depend on which other
weights the model has or in which order they are drawn: the readout of a depth-2 and a depth-8 model of one seed
come from the same standard normals. A weight is drawn as standard normals times init_std, so two draws that differ
only in init_std are equal up to that scale.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def member_linear(x: torch.Tensor, w: torch.Tensor, ensemble: int | None) -> torch.Tensor:
    """x W^T: w (fan_out, fan_in) and x (..., fan_in), or in an ensemble w (E, fan_out, fan_in) and x (E, ...,
    fan_in) with member e's rows times member e's weight (one batched matmul). Returns (..., fan_out)."""
    if ensemble is None:
        return F.linear(x, w)
    E, fan_in = w.shape[0], x.shape[-1]
    y = torch.bmm(x.reshape(E, -1, fan_in), w.transpose(1, 2))  # (E, M, fan_out)
    return y.view(*x.shape[:-1], w.shape[1])


def _key_word(part: int | str) -> int:
    """One entry of a SeedSequence key: a non-negative integer as it is, a string as its CRC-32."""
    if isinstance(part, str):
        return zlib.crc32(part.encode("utf-8"))
    if isinstance(part, bool) or int(part) != part or part < 0:
        raise ValueError(f"an initialisation key holds non-negative integers and strings, got {part!r}")
    return int(part)


def keyed_generator(*key: int | str) -> torch.Generator:
    """A CPU generator seeded from numpy.random.SeedSequence(key) (strings by their CRC-32): the same key gives the
    same stream on every machine, different keys independent streams. Returns the generator."""
    state = np.random.SeedSequence([_key_word(k) for k in key]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device="cpu").manual_seed(int(state[0]) | (int(state[1]) & 0x7FFFFFFF) << 32)


def standard_normal(shape: tuple[int, ...], generator: torch.Generator, nest_dim: int | None = None) -> torch.Tensor:
    """Standard normals of `shape` from `generator`: in one draw in storage order (nest_dim None), or one slice
    along `nest_dim` at a time, index 0 first, so that the first k slices are the same whatever the length of that
    dim (a narrower model's weight is the leading part of a wider one's along nest_dim). Returns a float32 tensor."""
    if nest_dim is None:
        return torch.empty(shape).normal_(generator=generator)
    moved = (shape[nest_dim], *(n for i, n in enumerate(shape) if i != nest_dim % len(shape)))
    z = torch.empty(moved)
    for row in z:  # one draw per slice: a prefix of slices is stable
        row.normal_(generator=generator)
    return z.movedim(0, nest_dim)


class ScaledWeight(nn.Module):
    """A weight W (rows, cols) ~ N(0, init_std^2) used with a forward multiplier (abc form); role names its rule.
    With ensemble=E the weight is (E, rows, cols), one independent draw per member. nest_dim: the dim of W along
    the residual width d, drawn one slice at a time (`standard_normal`), for the weights whose other dim does not
    grow with the model (embedding, positions, readout); None: drawn in one piece."""

    def __init__(
        self,
        rows: int,
        cols: int,
        role: str,
        init_std: float,
        mult: float,
        ensemble: int | None = None,
        nest_dim: int | None = None,
    ):
        super().__init__()
        shape = (rows, cols) if ensemble is None else (ensemble, rows, cols)
        self.weight = nn.Parameter(torch.empty(shape))
        self.role, self.init_std, self.mult = role, float(init_std), float(mult)
        self.ensemble, self.nest_dim = ensemble, nest_dim

    def reset_parameters(self, generator: torch.Generator, member: int | None = None) -> None:
        """Draw the weight (or member `member`'s slice of it) as init_std times standard normals from `generator`."""
        with torch.no_grad():
            w = self.weight if member is None else self.weight[member]
            w.copy_(standard_normal(tuple(w.shape), generator, self.nest_dim).mul_(self.init_std))

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, role={self.role}, std={self.init_std:.4g}, mult={self.mult:.4g}"


class ScaledLinear(ScaledWeight):
    """y = mult * W x, W (fan_out, fan_in). No bias (as the official code). In an ensemble x is (E, ..., fan_in)."""

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        role: str,
        init_std: float,
        mult: float,
        ensemble: int | None = None,
        nest_dim: int | None = None,
    ):
        super().__init__(fan_out, fan_in, role, init_std, mult, ensemble, nest_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # mult * (W x) computed as (mult W) x: the multiplier scales the weight, not the (larger) activations
        return member_linear(x, self.weight * self.mult, self.ensemble)


class ScaledTable(ScaledWeight):
    """A table of vectors (token embedding or learned positions), y = mult * W[i], W (rows, dim); in an ensemble
    W is (E, rows, dim) and y (E, *idx.shape, dim)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.mult  # mult W[i], the multiplier on the (small) table
        if self.ensemble is None:
            return F.embedding(idx, w)
        return w[:, idx]  # (E, *idx.shape, dim)


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
        self._table = [table]  # a list: the table's parameter stays registered once
        self.role, self.mult, self.ensemble = "readout", float(mult), table.ensemble

    @property
    def weight(self) -> torch.Tensor:
        return self._table[0].weight

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return member_linear(u, self.weight * self.mult, self.ensemble)

    def extra_repr(self) -> str:
        return f"tied to the token table, mult={self.mult:.4g}"

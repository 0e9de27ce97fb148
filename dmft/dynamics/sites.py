"""Single-site processes: the exact linear sites and the Monte Carlo site (docs/dmft-dynamics.md, "Algorithm").

A site holds its fields as tensors whose FIRST dimension runs over "rows":
- `ExactSite` (the residual stream, and the hidden layer of the linear attention branch): the site is linear and
  homogeneous in its Gaussian sources, so a field is stored as its coefficients on every source coordinate (rows =
  source coordinates). Expectations are then exact: E[X Y] = X^T Sigma Y with Sigma the sources' covariance
  (block diagonal over source families), and a response E[dX/d source] is a coefficient, read off.
- `MonteCarloSite` (the hidden layer of a GELU MLP branch): rows are n samples of the sources, drawn causally
  (`CausalGaussian`); expectations are sample means, responses are least-squares regressions on the sources
  (population least squares = Stein's lemma, E[X r^T] = E[dX/dr] Cov(r)).
The dynamics code is the same for both: a source block is added (`source`), fields are linear combinations along
their last dimension, and `mean_outer`, `mean_pairs`, `response` turn rows into order parameters.

Source families are laid out time-major: family coordinate t*m + j is sample j at time t.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import torch

_K, _C = math.sqrt(2.0 / math.pi), 0.044715


def gelu(z: torch.Tensor) -> torch.Tensor:
    """The model's GELU, tanh form: 0.5 z (1 + tanh(sqrt(2/pi) (z + 0.044715 z^3)))."""
    return 0.5 * z * (1.0 + torch.tanh(_K * (z + _C * z**3)))


def gelu_prime(z: torch.Tensor) -> torch.Tensor:
    """d gelu / dz of the tanh form."""
    th = torch.tanh(_K * (z + _C * z**3))
    return 0.5 * (1.0 + th) + 0.5 * z * (1.0 - th**2) * _K * (1.0 + 3.0 * _C * z**2)


@dataclass(frozen=True)
class Family:
    """A source family: n_times blocks of m coordinates; `offset` is its first row in an ExactSite."""

    name: str
    n_times: int
    m: int
    offset: int = 0

    @property
    def size(self) -> int:
        return self.n_times * self.m


def _layout(families: list[tuple[str, int, int]]) -> dict[str, Family]:
    out, off = {}, 0
    for name, n_times, m in families:
        out[name] = Family(name, n_times, m, off)
        off += n_times * m
    return out


class ExactSite:
    """A linear single site, its fields stored as coefficients on the raw source coordinates (rows).

    families: (name, n_times, m) per source family; cov(name) returns that family's covariance matrix
    (size x size, time-major), read when an expectation is taken (only its entries at times <= the fields' times
    matter: later coefficients are zero by causality)."""

    def __init__(
        self,
        families: list[tuple[str, int, int]],
        cov: Callable[[str], torch.Tensor],
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.fam = _layout(families)
        self.rows = sum(f.size for f in self.fam.values())
        self.cov, self.dtype, self.device = cov, dtype, device

    def zeros(self, *shape: int) -> torch.Tensor:
        """A field of the given trailing shape, zero on every row."""
        return torch.zeros(self.rows, *shape, dtype=self.dtype, device=self.device)

    def source(self, name: str, t: int, cov_row: torch.Tensor | None = None) -> torch.Tensor:
        """The source block of family `name` at time t as a field (rows, m): one-hot coefficients."""
        f = self.fam[name]
        out = self.zeros(f.m)
        lo = f.offset + t * f.m
        out[lo : lo + f.m] = torch.eye(f.m, dtype=self.dtype, device=self.device)
        return out

    @staticmethod
    def _extent(blk: torch.Tensor) -> int:
        """1 + the last row of a family block with a non-zero coefficient (0 when none): by causality no field
        has coefficients on sources later than its own time, so the covariance is read up to there only."""
        if blk.numel() == 0:
            return 0
        nz = torch.nonzero(blk.reshape(blk.shape[0], -1).abs().amax(1)).flatten()
        return int(nz.max()) + 1 if nz.numel() else 0

    def _pairs(self, X: torch.Tensor, Y: torch.Tensor):
        """Per family: (X block, Sigma Y block) restricted to the rows either field uses."""
        for f in self.fam.values():
            bx, by = X[f.offset : f.offset + f.size], Y[f.offset : f.offset + f.size]
            hi = max(self._extent(bx), self._extent(by))
            if hi:
                yield bx[:hi], self.cov(f.name)[:hi, :hi] @ by[:hi]

    def mean_outer(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """E[X_a Y_b] for fields X (rows, p), Y (rows, q): (p, q)."""
        out = torch.zeros(X.shape[1], Y.shape[1], dtype=self.dtype, device=self.device)
        for bx, sy in self._pairs(X, Y):
            out += bx.T @ sy
        return out

    def mean_pairs(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """E[X_a Y_a] for fields X, Y (rows, p): (p,)."""
        out = torch.zeros(X.shape[1], dtype=self.dtype, device=self.device)
        for bx, sy in self._pairs(X, Y):
            out += (bx * sy).sum(0)
        return out

    def response(self, X: torch.Tensor, name: str, t_end: int, m: int, cv: torch.Tensor | None = None) -> torch.Tensor:
        """E[dX_a / d source_name(s, j)] for s < t_end, j < m: (p, t_end*m), column s*m + j (exact: coefficients)."""
        f = self.fam[name]
        rows = X[f.offset : f.offset + t_end * f.m].reshape(t_end, f.m, X.shape[1])[:, :m]  # (t_end, m, p)
        return rows.reshape(t_end * m, X.shape[1]).T

    def coefficients(self, X: torch.Tensor, name: str) -> torch.Tensor:
        """The coefficients of X (rows, p) on family `name`: (size, p)."""
        f = self.fam[name]
        return X[f.offset : f.offset + f.size]


class CausalGaussian:
    """n samples of a zero-mean Gaussian family of n_times blocks of m coordinates, drawn block by block in time:
    the block at time t is drawn from the covariance row C[t, <=t] alone (a block Cholesky factorisation with
    rank-revealing diagonal blocks), so a sweep can draw time t before it knows later covariances. The standard
    normal draws come from `generator` (a fixed draw per block: the same seed gives the same samples for the same
    covariance). Eigenvalues of a conditional covariance below rtol x the block's largest variance are dropped."""

    def __init__(
        self,
        n: int,
        m: int,
        n_times: int,
        generator: torch.Generator,
        rtol: float,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.n, self.m, self.n_times, self.rtol = n, m, n_times, rtol
        self.dtype, self.device = dtype, device
        self.noise = [torch.randn(n, m, generator=generator, dtype=dtype).to(device) for _ in range(n_times)]
        self.L: list[list[torch.Tensor]] = []  # L[t][s]: (m, r_s), the root's block (t, s)
        self.Vinv: list[torch.Tensor] = []  # (L[s][s]^T)^+ = V_s Lambda_s^-1/2, (m, r_s)
        self.samples = torch.zeros(n, n_times, m, dtype=dtype, device=device)

    def draw(self, t: int, row: torch.Tensor) -> torch.Tensor:
        """The samples (n, m) of block t, given the covariance row C[t-block, blocks <= t] (m, (t+1) m)."""
        if t != len(self.L):
            raise RuntimeError(f"blocks must be drawn in time order: expected {len(self.L)}, got {t}")
        m = self.m
        Lt: list[torch.Tensor] = []
        for s in range(t):
            rhs = row[:, s * m : (s + 1) * m] - sum(
                (Lt[q] @ self.L[s][q].T for q in range(s)), torch.zeros(m, m, dtype=self.dtype, device=self.device)
            )
            Lt.append(rhs @ self.Vinv[s])  # (m, r_s)
        cond = row[:, t * m : (t + 1) * m] - sum(
            (B @ B.T for B in Lt), torch.zeros(m, m, dtype=self.dtype, device=self.device)
        )
        if not torch.isfinite(cond).all():
            raise FloatingPointError(f"non-finite covariance at step {t}")
        lam, V = torch.linalg.eigh((cond + cond.T) / 2)
        scale = float(torch.diagonal(row[:, t * m : (t + 1) * m]).abs().max()) if m else 0.0
        keep = lam > self.rtol * max(scale, 1e-300)
        lam, V = lam[keep].flip(0), V[:, keep].flip(1)  # largest first: fixed noise columns in order
        Lt.append(V * lam.sqrt())
        self.Vinv.append(V / lam.sqrt())
        self.L.append(Lt)
        x = cast(torch.Tensor, sum(self.noise[s][:, : B.shape[1]] @ B.T for s, B in enumerate(Lt)))  # Lt: >= 1 block
        self.samples[:, t] = x
        return x


class MonteCarloSite:
    """A nonlinear single site sampled with n rows. families: (name, n_times, m); each family is drawn causally by
    its own `CausalGaussian` with a generator seeded from (seed, the family's index)."""

    def __init__(
        self,
        n: int,
        families: list[tuple[str, int, int]],
        seed: int,
        rtol: float,
        ridge: float,
        dtype: torch.dtype,
        device: torch.device,
    ):
        self.fam = _layout(families)
        self.rows, self.dtype, self.device, self.ridge = n, dtype, device, ridge
        self.gauss = {}
        for i, (name, n_times, m) in enumerate(families):
            g = torch.Generator().manual_seed(int(seed) * 1000003 + 7919 * i + 1)
            self.gauss[name] = CausalGaussian(n, m, n_times, g, rtol, dtype, device)

    def zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(self.rows, *shape, dtype=self.dtype, device=self.device)

    def source(self, name: str, t: int, cov_row: torch.Tensor | None = None) -> torch.Tensor:
        """The samples (n, m) of family `name` at time t, drawn from its covariance row C[t, <=t]."""
        assert cov_row is not None, "a Monte Carlo site draws from the covariance row"
        return self.gauss[name].draw(t, cov_row)

    def mean_outer(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        return X.T @ Y / self.rows

    def mean_pairs(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        return (X * Y).mean(0)

    def response(self, X: torch.Tensor, name: str, t_end: int, m: int, cv: torch.Tensor | None = None) -> torch.Tensor:
        """E[dX_a / d source_name(s, j)] for s < t_end, j < m, (p, t_end*m): the least-squares coefficients of
        X - cv on those source samples (cv: a control variate independent of them, or None). Directions of the
        sources' sample covariance below `ridge` x its largest eigenvalue are left out (pseudo-inverse)."""
        if t_end == 0:
            return torch.zeros(X.shape[1], 0, dtype=self.dtype, device=self.device)
        Z = self.gauss[name].samples[:, :t_end, :m].reshape(self.rows, -1)  # (n, t_end*m)
        Y = X if cv is None else X - cv
        S = Z.T @ Z / self.rows
        lam, V = torch.linalg.eigh(S)
        keep = lam > self.ridge * float(lam.max().clamp_min(1e-300))
        W = V[:, keep] / lam[keep]  # S^+ = W V_keep^T
        return ((Y.T @ Z / self.rows) @ W) @ V[:, keep].T

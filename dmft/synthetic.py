"""Synthetic sweeps with a known truth, for the tests of the verdict rule and for `dmft.power` (pure numpy).

A sweep here is an array Q[..., size, seed, entry] (leading dims: independent repetitions) of one quantity per
size n, seed s and entry j (kernel entries, probe outputs, ...), drawn as

    Q[n, s, j] = mu_j + bias * u_j * n^-bias_order + sqrt(v(n)) * Z[n, s, j],   v(n) = sigma^2 (n^rate + plateau)

- `rate`: the exponent of the seed variance (-1: a mean-field rate; 0: no convergence); `plateau`: a floor
  v_inf = sigma^2 plateau under it (the seed variance levels off: "no convergence" of the network itself);
- `bias`: a finite-size bias c n^-bias_order of the seed mean (u: a fixed pattern over the entries with mean
  square 1), so the squared bias has exponent -2 bias_order;
- Z is standard normal at each point, correlated across entries (`rho_entries`, one seed's entries move
  together, as a kernel's do) and across sizes for the same seed (`rho_sizes`: seed s shares draws across
  sizes, as the N = 4 embedding is the first rows of N = 8's).

`positive` draws a per-seed positive quantity instead (e.g. Var_h A(0) of one seed): C n^rate times a log-normal
factor of coefficient of variation `cv`, correlated across sizes. `to_dataset` wraps a sweep as an xarray
dataset that `dmft.convergence` reads. Every draw comes from the numpy Generator passed in: the same seed gives
the same sweep on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["Truth", "positive", "sweep", "to_dataset", "variance", "bias_squared"]


@dataclass(frozen=True)
class Truth:
    """The law of a synthetic sweep (module docstring). Sizes and entries are given to `sweep` separately."""

    rate: float = -1.0
    sigma: float = 1.0
    plateau: float = 0.0
    bias: float = 0.0
    bias_order: float = 1.0
    rho_entries: float = 0.0
    rho_sizes: float = 0.0

    def __post_init__(self) -> None:
        for name in ("rho_entries", "rho_sizes"):
            r = getattr(self, name)
            if not 0.0 <= r < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {r!r}")
        if not self.sigma > 0 or self.plateau < 0:
            raise ValueError(f"sigma must be > 0 and plateau >= 0, got {self.sigma!r}, {self.plateau!r}")


def variance(truth: Truth, sizes) -> np.ndarray:
    """The true seed variance v(n) of each entry at `sizes` (units of Q squared)."""
    n = np.asarray(sizes, dtype=float)
    return truth.sigma**2 * (n**truth.rate + truth.plateau)


def bias_squared(truth: Truth, sizes) -> np.ndarray:
    """The true squared bias of the seed mean at `sizes`, mean over entries: bias^2 n^(-2 bias_order)."""
    n = np.asarray(sizes, dtype=float)
    return truth.bias**2 * n ** (-2.0 * truth.bias_order)


def _correlated(
    rng: np.random.Generator, lead: tuple, n: int, S: int, E: int, rho_e: float, rho_n: float
) -> np.ndarray:
    """Standard normal Z[..., n, S, E]: correlation rho_e between the entries of one (size, seed), rho_n between
    the sizes of one (seed, entry), rho_e * rho_n across both."""

    def entries(shape):  # (..., E) blocks with equicorrelated entries
        common = rng.standard_normal(shape + (1,))
        return np.sqrt(rho_e) * common + np.sqrt(1 - rho_e) * rng.standard_normal(shape + (E,))

    shared = entries(lead + (1, S))  # the seed's draw, shared by every size
    own = entries(lead + (n, S))
    return np.sqrt(rho_n) * shared + np.sqrt(1 - rho_n) * own


def sweep(
    truth: Truth,
    sizes,
    seeds: int,
    entries: int,
    rng: np.random.Generator,
    reps: int | None = None,
    mean: np.ndarray | None = None,
) -> np.ndarray:
    """Q[(reps,) size, seed, entry] drawn from `truth` (module docstring). mean: mu_j (entries,), default a fixed
    N(0, 1) pattern; the bias pattern u is fixed too (drawn once from `rng`, then scaled to mean square 1)."""
    n = np.asarray(sizes, dtype=float)
    if seeds < 1 or entries < 1 or n.ndim != 1 or np.any(n <= 0):
        raise ValueError("sweep needs positive sizes, seeds >= 1 and entries >= 1")
    u = rng.standard_normal(entries)
    u /= np.sqrt(np.mean(u**2))
    mu = rng.standard_normal(entries) if mean is None else np.asarray(mean, dtype=float)
    lead = () if reps is None else (int(reps),)
    z = _correlated(rng, lead, len(n), seeds, entries, truth.rho_entries, truth.rho_sizes)
    centre = mu + truth.bias * u * n[:, None] ** -truth.bias_order  # (n, E)
    return centre[:, None, :] + np.sqrt(variance(truth, n))[:, None, None] * z


def positive(
    rate: float,
    cv: float,
    sizes,
    seeds: int,
    rng: np.random.Generator,
    reps: int | None = None,
    rho_sizes: float = 0.0,
    constant: float = 1.0,
    curvature: float = 0.0,
) -> np.ndarray:
    """A per-seed positive quantity y[(reps,) size, seed] with mean constant * n^rate * (1 + curvature / n)
    exactly: a log-normal factor of coefficient of variation `cv`, correlated `rho_sizes` across the sizes of
    one seed. curvature: a next-order term (the local slopes then drift towards `rate` as n grows)."""
    n = np.asarray(sizes, dtype=float)
    s2 = np.log1p(cv**2)
    lead = () if reps is None else (int(reps),)
    z = _correlated(rng, lead, len(n), seeds, 1, 0.0, rho_sizes)[..., 0]
    return constant * (n**rate * (1 + curvature / n))[:, None] * np.exp(np.sqrt(s2) * z - s2 / 2)


def to_dataset(q: np.ndarray, sizes, axis: str = "N", steps=(10,), variable: str = "probe_outputs") -> xr.Dataset:
    """A sweep dataset (axis, seed, step, sample, output) holding Q[size, seed, entry] at every step in `steps`
    (the same values), as `dmft.convergence` reads it; heldout_loss is the mean over entries (a scalar per point).
    The entries become (sample, output) = (entries, 1)."""
    q = np.asarray(q, dtype=float)
    if q.ndim != 3:
        raise ValueError(f"to_dataset takes one sweep (size, seed, entry), got shape {q.shape}")
    n, S, E = q.shape
    vals = np.broadcast_to(q[:, :, None, :, None], (n, S, len(steps), E, 1))
    coords = {axis: np.asarray(sizes), "seed": np.arange(S), "step": np.asarray(steps)}
    return xr.Dataset(
        {
            variable: ((axis, "seed", "step", "sample", "output"), vals.copy(), {"units": "1"}),
            "heldout_loss": ((axis, "seed", "step"), vals.mean(axis=(3, 4)), {"units": "nats"}),
        },
        coords=coords,
        attrs={"sweep_axis": axis, "task": "vision"},
    )

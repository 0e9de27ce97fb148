"""Learning-rate transfer (the paper's Fig. 2a, P7): the best eta0 per size, with a bootstrap over seeds.

Input: final held-out losses as a DataArray with dims (eta0, <size axis>, seed). A diverged run is NaN or inf and
counts as infinitely bad. The best eta0 of a size is the argmin over eta0 of the seed-mean loss; the bootstrap
resamples seeds with replacement (independently per size) and records each resample's argmin, so a size whose
optimum is not resolved by its seeds shows it as a spread over several grid points.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class Transfer:
    """best: best eta0 per size (seed mean); freq: (size, eta0) fraction of bootstrap resamples whose argmin is
    that eta0; steps: largest distance between two sizes' best eta0, in grid steps; stays: steps <= 1."""

    axis: str
    sizes: np.ndarray
    etas: np.ndarray
    best: np.ndarray
    freq: np.ndarray
    steps: int

    @property
    def stays(self) -> bool:
        return self.steps <= 1

    def line(self) -> str:
        """One sentence: best eta0 per size, its bootstrap support, and the verdict."""
        per = ", ".join(f"{self.axis}={int(s)}: {b:g} ({100 * f.max():.0f}%)"
                        for s, b, f in zip(self.sizes, self.best, self.freq))
        verdict = "stays within one grid step" if self.stays else f"moves by {self.steps} grid steps"
        return (f"best eta0 across {self.axis} (seed-bootstrap support of the argmin in brackets): {per}; "
                f"the optimum {verdict}")


def best_eta0(losses: xr.DataArray, axis: str, n_boot: int = 1000, seed: int = 0) -> Transfer:
    """The best eta0 per size of `losses` (dims eta0, axis, seed; lower is better) and its seed bootstrap."""
    for d in ("eta0", axis, "seed"):
        if d not in losses.dims:
            raise ValueError(f"best_eta0 needs dims (eta0, {axis}, seed), got {losses.dims}")
    da = losses.transpose(axis, "eta0", "seed")
    vals = np.where(np.isfinite(da.values), da.values, np.inf)          # (size, eta, seed); diverged = inf
    etas = da.eta0.values.astype(float)
    order = np.argsort(etas)
    etas, vals = etas[order], vals[:, order]
    best_idx = vals.mean(axis=2).argmin(axis=1)
    rng = np.random.default_rng(seed)
    n_seed = vals.shape[2]
    freq = np.zeros(vals.shape[:2])
    for i in range(vals.shape[0]):
        picks = rng.integers(0, n_seed, (n_boot, n_seed))
        arg = vals[i][:, picks].mean(axis=2).argmin(axis=0)             # (n_boot,)
        freq[i] = np.bincount(arg, minlength=len(etas)) / n_boot
    return Transfer(axis, da[axis].values, etas, etas[best_idx], freq, int(best_idx.max() - best_idx.min()))

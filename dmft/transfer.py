"""Learning-rate transfer (the paper's Fig. 2a, P7): the best eta0 per size, with a bootstrap over seeds.

Input: final held-out losses as a DataArray with dims (eta0, <size axis>, seed). A diverged run is NaN or inf.
A (size, eta0) point where any seed diverged counts as diverged, in the seed mean and in every bootstrap
resample alike, so a diverged eta0 never wins. The best eta0 of a size is the argmin over the eta0s that did
not diverge of the seed-mean loss (NaN when every eta0 of the size diverged); the bootstrap resamples seeds with
replacement (independently per size) and records each resample's argmin, so a size whose optimum is not
resolved by its seeds shows it as a spread over several grid points. The largest stable eta0 of a size is the
largest eta0 below the smallest one that diverged (a result of its own: where training stops being stable).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr


@dataclass(frozen=True)
class Transfer:
    """best: best eta0 per size (seed mean; NaN where every eta0 diverged); freq: (size, eta0) fraction of
    bootstrap resamples whose argmin is that eta0; steps: largest distance between two sizes' best eta0, in grid
    steps; stays: steps <= 1. diverged: (size, eta0) bool, some seed diverged there. stable: per size the
    largest eta0 below the smallest diverged one (NaN when the smallest eta0 of the grid already diverged);
    stable_edge: True where a larger eta0 diverged, so `stable` is the edge of stability, False where nothing
    diverged (the edge lies above the grid and `stable` is only a lower bound)."""

    axis: str
    sizes: np.ndarray
    etas: np.ndarray
    best: np.ndarray
    freq: np.ndarray
    steps: int
    diverged: np.ndarray | None = None
    stable: np.ndarray | None = None
    stable_edge: np.ndarray | None = None

    @property
    def stays(self) -> bool:
        return self.steps <= 1

    def _stable_text(self, i: int) -> str:
        if self.stable is None:
            return ""
        s = self.stable[i]
        if not np.isfinite(s):
            return f"none (the smallest, {self.etas[0]:g}, diverged)"
        if not self.stable_edge[i]:
            return f">= {s:g} (none diverged)"
        above = self.etas[np.flatnonzero(self.diverged[i])[0]]
        return f"{s:g} ({above:g} diverged)"

    def line(self) -> str:
        """One sentence: best eta0 per size, its bootstrap support, the verdict, and the largest stable eta0."""
        per = ", ".join(f"{self.axis}={int(s)}: " + (f"{b:g} ({100 * f.max():.0f}%)" if np.isfinite(b)
                                                    else "none (every eta0 diverged)")
                        for s, b, f in zip(self.sizes, self.best, self.freq))
        verdict = "stays within one grid step" if self.stays else f"moves by {self.steps} grid steps"
        text = (f"best eta0 across {self.axis} (seed-bootstrap support of the argmin in brackets): {per}; "
                f"the optimum {verdict}")
        if self.stable is not None:
            text += "; largest stable eta0: " + ", ".join(f"{self.axis}={int(s)}: {self._stable_text(i)}"
                                                          for i, s in enumerate(self.sizes))
        return text


def best_eta0(losses: xr.DataArray, axis: str, n_boot: int = 1000, seed: int = 0) -> Transfer:
    """The best eta0 per size of `losses` (dims eta0, axis, seed; lower is better), its seed bootstrap and the
    largest stable eta0 per size (NaN/inf losses are diverged runs)."""
    for d in ("eta0", axis, "seed"):
        if d not in losses.dims:
            raise ValueError(f"best_eta0 needs dims (eta0, {axis}, seed), got {losses.dims}")
    da = losses.transpose(axis, "eta0", "seed")
    etas = da.eta0.values.astype(float)
    order = np.argsort(etas)
    etas = etas[order]
    raw = da.values.astype(float)[:, order]                              # (size, eta, seed)
    diverged = ~np.isfinite(raw).all(axis=2)                             # (size, eta): any seed diverged
    vals = np.where(diverged[..., None], np.inf, raw)                    # a diverged point is diverged in every resample
    n_size, n_eta, n_seed = vals.shape
    means = vals.mean(axis=2)
    has_best = np.isfinite(means).any(axis=1)
    best_idx = means.argmin(axis=1)
    best = np.where(has_best, etas[best_idx], np.nan)
    rng = np.random.default_rng(seed)
    freq = np.zeros((n_size, n_eta))
    for i in range(n_size):
        picks = rng.integers(0, n_seed, (n_boot, n_seed))
        if not has_best[i]:
            continue                                                     # keep the generator's sequence per size
        arg = vals[i][:, picks].mean(axis=2).argmin(axis=0)             # (n_boot,)
        freq[i] = np.bincount(arg, minlength=n_eta) / n_boot
    ok = best_idx[has_best]
    steps = int(ok.max() - ok.min()) if len(ok) else 0
    first_bad = np.where(diverged.any(axis=1), diverged.argmax(axis=1), n_eta)     # index of the smallest diverged eta0
    stable = np.where(first_bad > 0, etas[np.maximum(first_bad - 1, 0)], np.nan)
    return Transfer(axis, da[axis].values, etas, best, freq, steps, diverged, stable, first_bad < n_eta)

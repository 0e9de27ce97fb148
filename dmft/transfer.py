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
    diverged (the edge lies above the grid and `stable` is only a lower bound). boot_argmin: (size, n_boot) int,
    each bootstrap resample's argmin (index into etas; -1 for a size where every eta0 diverged); resample r of
    every size together is one joint resample (the sizes are resampled independently)."""

    axis: str
    sizes: np.ndarray
    etas: np.ndarray
    best: np.ndarray
    freq: np.ndarray
    steps: int
    diverged: np.ndarray | None = None
    stable: np.ndarray | None = None
    stable_edge: np.ndarray | None = None
    boot_argmin: np.ndarray | None = None

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
    boot = np.full((n_size, n_boot), -1, dtype=np.int64)
    for i in range(n_size):
        picks = rng.integers(0, n_seed, (n_boot, n_seed))
        if not has_best[i]:
            continue                                                     # keep the generator's sequence per size
        arg = vals[i][:, picks].mean(axis=2).argmin(axis=0)             # (n_boot,)
        boot[i] = arg
        freq[i] = np.bincount(arg, minlength=n_eta) / n_boot
    ok = best_idx[has_best]
    steps = int(ok.max() - ok.min()) if len(ok) else 0
    first_bad = np.where(diverged.any(axis=1), diverged.argmax(axis=1), n_eta)     # index of the smallest diverged eta0
    stable = np.where(first_bad > 0, etas[np.maximum(first_bad - 1, 0)], np.nan)
    return Transfer(axis, da[axis].values, etas, best, freq, steps, diverged, stable, first_bad < n_eta, boot)


def losses_of(ds: xr.Dataset) -> xr.DataArray:
    """The (eta0, axis, seed) final held-out losses of an lr grid dataset (`probes.lr_grid.run_lr_grid`), NaN
    where the run diverged: the input of `best_eta0(losses_of(ds), ds.attrs["sweep_axis"])`."""
    axis = ds.attrs.get("sweep_axis")
    if ds.attrs.get("kind") != "lr_grid" or "final_loss" not in ds.data_vars or axis not in ("N", "H", "L"):
        raise ValueError("losses_of needs an lr grid dataset (attrs kind 'lr_grid' and sweep_axis, variable "
                         f"final_loss), got kind {ds.attrs.get('kind', 'unset')!r}")
    da = ds["final_loss"]
    if "status" in ds.data_vars:
        da = da.where(ds["status"] == 0)                                 # a diverged run is NaN, whatever it logged
    return da.transpose("eta0", axis, "seed").rename("final_loss")


VERDICTS = ("transfers", "shifts", "unresolved")


@dataclass(frozen=True)
class TransferVerdict:
    """P7's verdict on a Transfer. verdict: "transfers" (every size's best eta0 within one grid step), "shifts"
    (further apart), "unresolved" (some size's optimum at the smallest or largest eta0 of the grid, or every eta0
    of some size diverged). steps: grid steps between the extreme best eta0s (over the sizes that have one). ok:
    consistent with the prediction (muP family: "transfers"; SP, the negative control: "shifts"). text: one
    sentence. support: share of seed-bootstrap resamples in which the argmins of all sizes lie within one grid
    step (NaN when the Transfer carries no per-resample argmins)."""

    verdict: str
    steps: int
    ok: bool
    text: str
    support: float = float("nan")


def joint_support(t: Transfer) -> float:
    """Share of bootstrap resamples whose argmins, over the sizes that have a best eta0, lie within one grid
    step of each other (resample r of every size taken together); NaN without per-resample argmins."""
    if t.boot_argmin is None:
        return float("nan")
    arg = np.asarray(t.boot_argmin)[np.isfinite(t.best)]
    if arg.size == 0:
        return float("nan")
    return float(((arg.max(axis=0) - arg.min(axis=0)) <= 1).mean())


def transfer_verdict(t: Transfer, standard: bool) -> TransferVerdict:
    """P7's verdict (docs/predictions.md): does the best eta0 stay within one grid step across sizes? standard:
    True for SP (the negative control: its optimum must shift), False for the muP family (it must transfer)."""
    etas = np.asarray(t.etas, dtype=float)
    best = np.asarray(t.best, dtype=float)

    def name(i: int) -> str:
        return f"{t.axis}={int(t.sizes[i])}"

    dead = [name(i) for i in range(len(best)) if not np.isfinite(best[i])]
    low = [name(i) for i in range(len(best)) if np.isfinite(best[i]) and best[i] == etas[0]]
    high = [name(i) for i in range(len(best)) if np.isfinite(best[i]) and best[i] == etas[-1]]
    if dead or low or high:
        verdict = "unresolved"
    else:
        verdict = "transfers" if t.stays else "shifts"
    want = "shifts" if standard else "transfers"
    ok = verdict == want
    support = joint_support(t)
    per = ", ".join(f"{name(i)}: {b:g}" if np.isfinite(b) else f"{name(i)}: none"
                    for i, b in enumerate(best))
    who = "SP, the negative control, predicted to shift" if standard else "muP family, predicted to transfer"
    span = f"{t.steps} grid step{'s' if t.steps != 1 else ''}"
    boot = (f"the argmins of all sizes lie within one grid step in {100 * support:.0f}% of seed-bootstrap resamples"
            if np.isfinite(support) else "no bootstrap")
    if verdict == "unresolved":
        why = []
        if low:
            why.append(f"the optimum of {', '.join(low)} is the smallest eta0 of the grid ({etas[0]:g})")
        if high:
            why.append(f"the optimum of {', '.join(high)} is the largest eta0 of the grid ({etas[-1]:g})")
        if dead:
            why.append(f"every eta0 diverged for {', '.join(dead)}")
        tail = (f"unresolved, since {' and '.join(why)}, so the true optimum may lie outside the grid "
                "(widen it); no test of the prediction")
    else:
        tail = f"{verdict} ({'consistent with' if ok else 'against'} the prediction)"
    text = (f"P7 across {t.axis} ({who}): best eta0 {per} spans {span}, {boot}: {tail}.")
    return TransferVerdict(verdict, int(t.steps), bool(ok), text, support)

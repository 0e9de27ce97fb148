"""Finite full-batch networks and their computed limit on the same data, side by side (docs/dmft-dynamics.md,
"Finite networks against the limit"): what tests/test_dynamics_convergence.py and notebook 08 compare.

The finite side trains the real model with `probes.run` (full-batch SGD on the first `P` training digits chosen by
data seed 0, one token per image); the limit side is `dmft.dynamics.solve` on the same samples. This module is the
only part of `dmft.dynamics` that imports the finite network's code; the solver itself never does (the package's
`__init__` does not import this module).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from parametrizations.optim import OptimConfig
from parametrizations.spec import get_preset
from parametrizations.transformer import ModelConfig
from probes.data import digits
from probes.recorder import ProbeConfig
from probes.run import RunConfig, train_ensemble

from .setup import Problem, mean_field_rates
from .solver import SolverConfig, solve

PATCH = 8              # the whole 8x8 digit as one token: stage 1


@dataclass(frozen=True)
class Setting:
    """One full-batch problem: P training digits, n_test held-out digits, `steps` SGD steps at eta0, L blocks, the
    preset at gamma0, the loss ("ce" or "mse")."""

    gamma0: float
    P: int = 8
    n_test: int = 8
    steps: int = 8
    eta0: float = 0.5
    L: int = 1
    preset: str = "mup"
    loss: str = "ce"

    def parametrization(self):
        return get_preset(self.preset, gamma0=self.gamma0), OptimConfig(name="sgd", eta0=self.eta0)


def finite_runs(s: Setting, widths, seeds) -> dict[str, xr.DataArray]:
    """The finite networks at d = N (H = 1) for each width and seed: {"outputs" (N, seed, step, sample, output):
    centred outputs on the training then the held-out digits; "kernels" (N, seed, step, depth, sample, sample_):
    the residual-stream kernels on the training digits; "train_loss" (N, seed, step): the training loss at steps
    0..T-1, in the loss's units}. RuntimeError when a run does not finish."""
    p, opt = s.parametrization()
    outs, kers, losses = [], [], []
    for d in widths:
        cfg = RunConfig(model=ModelConfig(N=int(d), H=1, L=s.L, task="digits"), param=p, optim=opt, steps=s.steps,
                        patch=PATCH, train_size=s.P, batch="full", heldout_batch=s.n_test, loss=s.loss,
                        probes=ProbeConfig(every=1))
        res = train_ensemble(cfg, list(seeds))
        bad = [r.status for r in res if r.status != "ok"]
        if bad:
            raise RuntimeError(f"N = {d}: {len(bad)} runs did not finish ({bad[0]})")
        arrays = [r.extra["recorder"].arrays() for r in res]
        outs.append(np.stack([np.concatenate([a["probe_outputs"], r.extra["full_batch"]["test_outputs"]], 1)
                              for a, r in zip(arrays, res)]))          # (seed, step, P + n_test, C)
        kers.append(np.stack([a["kernel_pooled"] for a in arrays]))    # (seed, step, depth, P, P)
        losses.append(np.stack([np.asarray(r.train_loss, dtype=float) for r in res]))
    c = {"N": list(widths), "seed": list(seeds), "step": np.arange(s.steps + 1)}
    return {"outputs": xr.DataArray(np.stack(outs), dims=("N", "seed", "step", "sample", "output"), coords=c),
            "kernels": xr.DataArray(np.stack(kers), dims=("N", "seed", "step", "depth", "sample", "sample_"),
                                    coords=c),
            "train_loss": xr.DataArray(np.stack(losses), dims=("N", "seed", "train_step"),
                                       coords={"N": list(widths), "seed": list(seeds)})}


def limit(s: Setting, n_samples: int = 10_000, **variant) -> dict[str, xr.DataArray]:
    """The solver's {"outputs" (step, sample, output), "kernels" (step, depth, sample, sample_), "train_loss"
    (step,): the loss at steps 0..T} on the same digits as `finite_runs`; variant: SolverConfig fields (e.g.
    responses=False, a deliberately broken solver)."""
    task = digits(patch=PATCH)
    xtr, ytr = task.train.fixed(s.P, seed=0)                 # what probes.run trains on (data_seed 0)
    xte, yte = task.heldout.fixed(s.n_test, seed=0)          # its held-out batch
    p, opt = s.parametrization()
    prob = Problem(xtr[:, 0].numpy(), ytr.numpy(), xte[:, 0].numpy(), yte.numpy(), 10, s.L, s.steps, s.loss,
                   mean_field_rates(p, opt, L=s.L, d_in=xtr.shape[-1]))
    sol = solve(prob, SolverConfig(n_samples=n_samples, max_iter=0, **variant))
    step = {"step": np.arange(s.steps + 1)}
    return {"outputs": xr.DataArray(sol.params["f"].numpy(), dims=("step", "sample", "output"), coords=step),
            "kernels": xr.DataArray(sol.params["kernel_pooled"].permute(1, 0, 2, 3).numpy(),
                                    dims=("step", "depth", "sample", "sample_"), coords=step),
            "train_loss": xr.DataArray(sol.losses()[0].numpy(), dims="step", coords=step)}

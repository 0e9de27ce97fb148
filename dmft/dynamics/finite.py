"""Finite full-batch networks and their computed limit on the same data, side by side (docs/dmft-dynamics.md,
"Finite networks against the limit"): what tests/test_dynamics_convergence.py and notebook 08 compare.

The finite side trains the real model with `probes.experiment.run` (full-batch SGD on the first `P` training digits chosen by
data seed 0; one token per image with the default patch 8, S = (8 / patch)^2 tokens otherwise); the limit side is
`dmft.dynamics.solve` on the same samples. The width axis is N at fixed H heads (d = N H). This module is the
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
from probes.experiment.data import digits
from probes.experiment.run import RunConfig, train_ensemble
from probes.hooks.recorder import ProbeConfig, probe_points

from .setup import Problem, mean_field_rates
from .solver import SolverConfig, solve

POINTS = 16  # the (sample, s, s') points at which the finite runs record A per head


@dataclass(frozen=True)
class Setting:
    """One full-batch problem: P training digits, n_test held-out digits, `steps` SGD steps at eta0, L blocks, the
    preset at gamma0, the loss ("ce" or "mse"), the patch side (8: the whole digit, one token, stage 1; 4: S = 4
    tokens, stage 2) and the heads H of the finite networks (the limit does not depend on H)."""

    gamma0: float
    P: int = 8
    n_test: int = 8
    steps: int = 8
    eta0: float = 0.5
    L: int = 1
    preset: str = "mup"
    loss: str = "ce"
    patch: int = 8
    H: int = 1

    def parametrization(self):
        return get_preset(self.preset, gamma0=self.gamma0), OptimConfig(name="sgd", eta0=self.eta0)


def finite_runs(s: Setting, widths, seeds) -> dict[str, xr.DataArray]:
    """The finite networks at N = each width (d = N H) and each seed: {"outputs" (N, seed, step, sample, output):
    centred outputs on the training then the held-out digits; "kernels" (N, seed, step, depth, sample, sample_):
    the residual-stream kernels on the training digits; "grad_kernels" (N, seed, step, depth, sample, sample_): the
    gradient kernels of the updates at steps 0..T-1; "attention" (N, seed, step, layer, point), with S > 1 tokens:
    the head mean of A = N^-alpha_A q.k at the `POINTS` fixed (sample, s, s') points (`attention_points`);
    "train_loss" (N, seed, step): the training loss at steps 0..T-1, in the loss's units}. RuntimeError when a run
    does not finish."""
    p, opt = s.parametrization()
    outs, kers, grads, attn, losses = [], [], [], [], []
    for d in widths:
        cfg = RunConfig(
            model=ModelConfig(N=int(d), H=s.H, L=s.L, task="digits"),
            param=p,
            optim=opt,
            steps=s.steps,
            patch=s.patch,
            train_size=s.P,
            batch="full",
            heldout_batch=s.n_test,
            loss=s.loss,
            probes=ProbeConfig(every=1, n_points=POINTS),
        )
        res = train_ensemble(cfg, list(seeds))
        bad = [r.status for r in res if r.status != "ok"]
        if bad:
            raise RuntimeError(f"N = {d}: {len(bad)} runs did not finish ({bad[0]})")
        arrays = [r.extra["recorder"].arrays() for r in res]
        outs.append(
            np.stack(
                [
                    np.concatenate([a["probe_outputs"], r.extra["full_batch"]["test_outputs"]], 1)
                    for a, r in zip(arrays, res)
                ]
            )
        )  # (seed, step, P + n_test, C)
        kers.append(np.stack([a["kernel_pooled"] for a in arrays]))  # (seed, step, depth, P, P)
        grads.append(np.stack([r.extra["full_batch"]["kernel_grad"] for r in res]))  # (seed, step < T, depth, P, P)
        attn.append(np.stack([np.nanmean(a["attn_raw"], -1) for a in arrays]))  # (seed, step, layer, point)
        losses.append(np.stack([np.asarray(r.train_loss, dtype=float) for r in res]))
    c = {"N": list(widths), "seed": list(seeds), "step": np.arange(s.steps + 1)}
    out = {
        "outputs": xr.DataArray(np.stack(outs), dims=("N", "seed", "step", "sample", "output"), coords=c),
        "kernels": xr.DataArray(np.stack(kers), dims=("N", "seed", "step", "depth", "sample", "sample_"), coords=c),
        "grad_kernels": xr.DataArray(
            np.stack(grads),
            dims=("N", "seed", "step", "depth", "sample", "sample_"),
            coords={**c, "step": np.arange(s.steps)},
        ),
        "train_loss": xr.DataArray(
            np.stack(losses), dims=("N", "seed", "train_step"), coords={"N": list(widths), "seed": list(seeds)}
        ),
    }
    if s.patch < 8:
        out["attention"] = xr.DataArray(np.stack(attn), dims=("N", "seed", "step", "layer", "point"), coords=c)
    return out


def attention_points(s: Setting) -> np.ndarray:
    """The fixed (sample, s, s') points (POINTS, 3) at which the probes record A per head (`probes.hooks.recorder`)."""
    S = (8 // s.patch) ** 2
    return probe_points(s.P, S, POINTS, causal=False)


def limit(s: Setting, n_samples: int = 10_000, **variant) -> dict[str, xr.DataArray]:
    """The solver's {"outputs" (step, sample, output), "kernels" (step, depth, sample, sample_), "grad_kernels"
    (step < T, depth, sample, sample_), "attention" (step, layer, point) with S > 1 tokens, "train_loss" (step,): the
    loss at steps 0..T} on the same digits as `finite_runs`; variant: SolverConfig fields (e.g. responses=False, a
    deliberately broken solver)."""
    task = digits(patch=s.patch)
    xtr, ytr = task.train.fixed(s.P, seed=0)  # what probes.experiment.run trains on (data_seed 0), (P, S, D_in)
    xte, yte = task.heldout.fixed(s.n_test, seed=0)  # its held-out batch
    p, opt = s.parametrization()
    prob = Problem(
        xtr.numpy(),
        ytr.numpy(),
        xte.numpy(),
        yte.numpy(),
        10,
        s.L,
        s.steps,
        s.loss,
        mean_field_rates(p, opt, L=s.L, d_in=xtr.shape[-1], tokens=xtr.shape[1], H=s.H),
    )
    sol = solve(prob, SolverConfig(n_samples=n_samples, max_iter=0, **variant))
    step = {"step": np.arange(s.steps + 1)}
    out = {
        "outputs": xr.DataArray(sol.params["f"].numpy(), dims=("step", "sample", "output"), coords=step),
        "kernels": xr.DataArray(
            sol.params["kernel_pooled"].permute(1, 0, 2, 3).numpy(),
            dims=("step", "depth", "sample", "sample_"),
            coords=step,
        ),
        "grad_kernels": xr.DataArray(
            sol.params["kernel_grad"].permute(1, 0, 2, 3).numpy(),
            dims=("step", "depth", "sample", "sample_"),
            coords={"step": np.arange(s.steps)},
        ),
        "train_loss": xr.DataArray(sol.losses()[0].numpy(), dims="step", coords=step),
    }
    if prob.S > 1:
        pts = attention_points(s)
        A = sol.params["attn"][:, :, pts[:, 0], pts[:, 1], pts[:, 2]].permute(1, 0, 2)  # (step, layer, point)
        out["attention"] = xr.DataArray(A.numpy(), dims=("step", "layer", "point"), coords=step)
    return out

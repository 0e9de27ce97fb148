"""`dmft-probe solve`: the solver run on a run configuration (the glue between probes' data and the solver; the
solver itself, `dmft.dynamics.solver`, never sees probes or a model)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import xarray as xr

from probes.experiment.config import _gib
from probes.experiment.dataset import run_attrs
from probes.experiment.memory import free_bytes
from probes.experiment.run import RunConfig, full_batch_arrays

from .output import solution_dataset
from .setup import Problem, check_solvable, mean_field_rates
from .solver import Solution, SolverConfig, solve


def problem_for(cfg: RunConfig) -> tuple[RunConfig, Problem]:
    """(cfg with the task's sizes, the Problem of cfg): its training subset and held-out batch and its
    parametrization's coefficients. ValueError naming the option when the solver does not cover cfg."""
    arrays = full_batch_arrays(cfg)
    check_solvable(cfg.to_dict(), arrays["seq_len"])
    rates = mean_field_rates(
        cfg.param, cfg.optim, cfg.model.L, arrays["x_train"].shape[-1], tokens=arrays["seq_len"], H=cfg.model.H
    )
    prob = Problem(
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        arrays["n_classes"],
        cfg.model.L,
        cfg.steps,
        cfg.loss,
        rates,
    )
    return replace(cfg, model=arrays["model"]), prob


def memory_bytes(prob: Problem, scfg: SolverConfig) -> int:
    """A generous estimate of the solver's peak memory (bytes): the order parameters (up to three copies during an
    iteration), the exact sites' coefficients, the Monte Carlo sites' samples and a fixed overhead."""
    T, M, P, C, K, S, L = prob.steps, prob.M, prob.P, prob.n_classes, 2 * prob.L, prob.S, prob.L
    F, B, Ftr = (T + 1) * M * S, T * P * S, (T + 1) * P * S
    roles = 3 if S > 1 else 1  # input roles of an attention branch: W_V (and W_Q, W_K)
    item = 8 if scfg.dtype == "float64" else 4
    params = (
        K * (2 * F * F + 2 * B * B + 2 * F * B + 2 * B * Ftr)
        + ((T + 1) * M) ** 2
        + (roles - 1) * L * (B * B + F * B + B * Ftr)
    )
    rows = M * S + C + K * (F + B) + (roles - 1) * L * B
    stream = rows * ((K + 1) * (F + B) + 4 * max(F, B))
    # each exact attention site: rows = its source families (roles forward, one backward); columns = its fields
    # z, psi (and q, k) over F and a backward field per role over B, and as many again for transient copies
    attn = (roles * F + B) * 2 * ((2 * roles if S > 1 else 2) * F + roles * B) * L
    # per MLP site: its Gaussian sources and their noise (2F + 2B), z, psi and gz (2F + B), and the transient
    # copies of sliced fields in the products and regressions (2F + B)
    mc = scfg.n_samples * (6 * F + 4 * B) * prob.L
    # plus a fixed 64 MiB for torch's first use of its kernels and LAPACK workspaces (measured: about 20 MiB
    # above the interpreter's for the smallest problems)
    return item * (3 * params + stream + attn + mc) + 64 * 2**20


def check_memory(prob: Problem, scfg: SolverConfig) -> None:
    """ValueError naming the sizes when the solve would not fit in the memory available now."""
    import torch

    need, have = memory_bytes(prob, scfg), free_bytes(torch.device(scfg.device))
    if need > have:
        raise ValueError(
            f"--train-size {prob.P}, --heldout-batch {prob.M - prob.P}, --patch ({prob.S} tokens), --steps "
            f"{prob.steps}, --samples {scfg.n_samples}: the solver needs about {_gib(need)}, more than "
            f"the {_gib(have)} available (it grows as the square of samples x tokens x steps)"
        )


def solution_for(cfg: RunConfig, prob: Problem, scfg: SolverConfig, progress=None) -> tuple[Solution, xr.Dataset]:
    """Solve `prob` and return (the Solution, its Dataset with the run attrs of cfg)."""
    sol = solve(prob, scfg, progress)
    attrs = run_attrs(cfg.to_dict(), scfg.device, "ok", {"wall_s": sol.wall_s})
    return sol, solution_dataset(sol, attrs)


def summary_lines(ds: xr.Dataset) -> list[str]:
    """What `solve` prints: the losses and the self-consistency of the solution."""
    units = ds.train_loss.attrs.get("units", "")
    tl = np.asarray(ds.train_loss.values)
    last = f"{tl[-1]:.4f}" if tl.size else "n/a"
    return [
        f"limit: final train loss {last}, held-out loss {float(ds.heldout_loss.values[-1]):.4f} {units} "
        f"(step {int(ds.step.values[-1])})",
        f"self-consistency residual {ds.attrs['residual']:.3g} after {ds.attrs['iterations']} iteration(s) "
        f"({'converged' if ds.attrs['converged'] else 'not converged'}), {ds.attrs['solver_wall_s']:.1f} s",
    ]


def default_config(overrides: dict) -> dict:
    """The solve command's overrides with its own defaults where not given: full batch and plain SGD (the only
    optimizer it covers; others are refused by name)."""
    run = dict(overrides.get("run", {}))
    optim = dict(overrides.get("optim", {}))
    if run.get("batch") is None:
        run["batch"] = "full"
    if optim.get("name") is None:
        optim["name"] = "sgd"
    return {**overrides, "run": run, "optim": optim}

"""Seed ensembles: how many seeds of one configuration train together as one batched model.

`train_seeds(cfg, seeds, mode)` trains the seeds of one sweep point: mode "off" runs them one after another
(`probes.run.train`), mode "auto" trains them as ensembles (`probes.run.train_ensemble`), as many members at
once as fit a memory budget (`members_that_fit`). Either way the results are the same per seed (to float
tolerance): the same initialisation, data order, losses and probes.
"""
from __future__ import annotations

import os
from dataclasses import replace

import torch

from .run import RunConfig, RunResult, resolve_device, train, train_ensemble

__all__ = ["ENSEMBLE_MODES", "member_bytes", "members_that_fit", "train_ensemble", "train_seeds"]

ENSEMBLE_MODES = ("auto", "off")
FLOAT = 4                      # bytes per float32


def member_bytes(cfg: RunConfig) -> int:
    """A generous estimate of one member's memory (bytes): weights with their gradient, Adam moments and the
    frozen initial copy; the training activations kept for the backward pass; and the probe pass, whose
    CPU fallback builds per layer A, softmax(A) and their step-0 copies over (samples, H, S, S)."""
    m = cfg.model
    shapes = m.shapes()
    d, S, B = m.d_model, m.seq_len, cfg.batch_size
    n_out = m.vocab_size if m.task == "lm" else m.n_classes
    n_in = m.vocab_size if m.task == "lm" else m.d_in
    weights = (n_in + S + n_out) * d + sum(4 * d * H_l * m.N + 2 * d * f for H_l, f in zip(shapes.heads, shapes.d_ff))
    state = 5 * weights                                                     # W, grad, m, v, W(0)
    per_layer = [12 * d + 3 * f + 2 * H_l * S for H_l, f in zip(shapes.heads, shapes.d_ff)]
    activations = B * S * (sum(per_layer) + 2 * (n_out if m.task == "lm" else 0))
    P = cfg.probes.n_samples if cfg.probes.enabled else 0
    probe = P * S * (6 * max(shapes.heads) * S + 10 * d * (m.L + 1))
    return FLOAT * (state + activations + probe)


def free_bytes(device: torch.device) -> int:
    """Memory available to this process now (bytes): free CUDA memory, or available host RAM."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):   # not a POSIX system: assume 4 GiB
        return 4 << 30


def members_that_fit(cfg: RunConfig, n_seeds: int, budget_fraction: float = 0.25) -> int:
    """How many of n_seeds members to train at once: all of them, unless `budget_fraction` of the free memory
    holds fewer (then at least 1)."""
    budget = budget_fraction * free_bytes(resolve_device(cfg.device))
    return max(1, min(n_seeds, int(budget // max(member_bytes(cfg), 1))))


def train_seeds(cfg: RunConfig, seeds: list[int], mode: str = "auto") -> list[RunResult]:
    """One RunResult per seed of `cfg`, in the order of `seeds`: sequential runs (mode "off") or seed ensembles
    as large as the memory budget allows (mode "auto")."""
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"--ensemble must be one of {', '.join(ENSEMBLE_MODES)}, got {mode!r}")
    if mode == "off" or len(seeds) == 1:
        return [train(replace(cfg, seed=s)) for s in seeds]
    size = members_that_fit(cfg, len(seeds))
    out: list[RunResult] = []
    for i in range(0, len(seeds), size):
        group = seeds[i:i + size]
        out += train_ensemble(cfg, group) if len(group) > 1 else [train(replace(cfg, seed=group[0]))]
    return out

"""The one memory model of a run and the one reading of the memory free now.

`member_bytes(cfg)`: the bytes one seed of a run needs (`probes.experiment.ensemble` sizes its groups with it,
`probes.experiment.config.memory_parts` adds the probes, logs and batches around it); its weights are
`parametrizations.counts.parameter_count`, the model's exact parameter count. `free_bytes(device)`: what this
process can use now on a device; every memory check reads it (`probes.experiment.config.check_fits`, the ensemble
groups, `dmft-probe solve`).
"""

from __future__ import annotations

import os

import torch

from parametrizations.counts import parameter_count
from probes.experiment.run import RunConfig

__all__ = ["FLOAT", "centre_cache_bytes", "free_bytes", "member_bytes"]

FLOAT = 4  # bytes per float32


def centre_cache_bytes(cfg: RunConfig) -> int:
    """The most one member's cached f(theta_0) under centre "copy" can take (bytes; 0 for the other centrings,
    `probes.experiment.run.InitialOutputs`): the held-out batch's outputs (heldout_batch x n_out, the LM x seq_len)
    and, on an image task, the training outputs: the full batch or a training split of at most steps x batch_size
    samples (`caches_training_split` caches no larger one), so at most min(steps x batch_size, train_size) x n_out."""
    if cfg.param.centre != "copy":
        return 0
    m = cfg.model
    if m.task == "lm":
        return FLOAT * cfg.heldout_batch * m.seq_len * m.vocab_size
    rows = cfg.steps * cfg.batch_size if cfg.train_size is None else min(cfg.steps * cfg.batch_size, cfg.train_size)
    return FLOAT * (cfg.heldout_batch + rows) * m.n_classes


def member_bytes(cfg: RunConfig) -> int:
    """A generous estimate of one member's memory (bytes): weights with their gradient, Adam moments and the
    frozen initial copy (5 x `parameter_count`); the training activations kept for the backward pass; the probe
    pass, whose CPU fallback builds per layer A, softmax(A) and their step-0 copies over (samples, H, S, S); and the
    cached f(theta_0) (`centre_cache_bytes`)."""
    m = cfg.model
    shapes = m.shapes()
    d, S, B = m.d_model, m.seq_len, cfg.batch_size
    n_out = m.vocab_size if m.task == "lm" else m.n_classes
    state = 5 * parameter_count(m)  # W, grad, m, v, W(0)
    gated = m.block_options().mlp == "swiglu"
    per_layer = [12 * d + (2 * f if gated else f) + 2 * f + 2 * H_l * S for H_l, f in zip(shapes.heads, shapes.d_ff)]
    activations = B * S * (sum(per_layer) + 2 * (n_out if m.task == "lm" else 0))
    P = cfg.probes.n_samples if cfg.probes.enabled else 0
    probe = P * S * (6 * max(shapes.heads) * S + 10 * d * (m.L + 1))
    return FLOAT * (state + activations + probe) + centre_cache_bytes(cfg)


def free_bytes(device: torch.device | str) -> int:
    """Memory available to this process now (bytes): free CUDA memory, or the host's MemAvailable (free plus
    reclaimable cache), or the free pages where /proc/meminfo is missing (4 GiB where neither can be read)."""
    if getattr(device, "type", device) == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume 4 GiB
        return 4 << 30

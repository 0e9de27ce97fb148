"""Coordinate sizes (muP-style coord check) on a fixed probe batch, and their fitted slopes across sizes.

For each block: RMS of the residual stream h after the block, of the unscaled branch outputs (MHSA, MLP), of
their change since step 0, and of A(t) - A(0) over the unmasked (s, s') pairs. One forward pass with taps; the
numbers leave the device once, as one tensor.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from parametrizations.transformer import LWSTransformer

from .run import RunConfig, setup, train

SITES = ("h", "attn_out", "mlp_out")


@torch.no_grad()
def taps_of(model: LWSTransformer, x: torch.Tensor) -> list[dict]:
    """One probe forward pass; returns the per-block taps (see LWSTransformer.forward)."""
    taps: list[dict] = []
    model(x, taps)
    return taps


def _rms(t: torch.Tensor) -> torch.Tensor:
    return t.float().pow(2).mean().sqrt()


def _finite_rms(t: torch.Tensor) -> torch.Tensor:
    """RMS over finite entries (A carries -inf above the causal diagonal)."""
    keep = torch.isfinite(t)
    return t.where(keep, torch.zeros((), dtype=t.dtype, device=t.device)).float().pow(2).sum().div(keep.sum()).sqrt()


def coord_sizes(taps: list[dict], taps0: list[dict] | None = None) -> dict[str, np.ndarray]:
    """Per-layer RMS of each site, and (given step-0 taps) of its change and of A(t) - A(0).

    Returns {"h": (L,), "attn_out": (L,), "mlp_out": (L,), "A": (L,)} and, with taps0, the same keys prefixed
    "d_" for the changes; units: coordinate RMS (dimensionless).
    """
    rows, names = [], []
    for site in SITES:
        rows.append(torch.stack([_rms(t[site]) for t in taps])); names.append(site)
    rows.append(torch.stack([_finite_rms(t["A"]) for t in taps])); names.append("A")
    if taps0 is not None:
        for site in SITES:
            rows.append(torch.stack([_rms(t[site] - t0[site]) for t, t0 in zip(taps, taps0)])); names.append("d_" + site)
        rows.append(torch.stack([_finite_rms(t["A"] - t0["A"]) for t, t0 in zip(taps, taps0)])); names.append("d_A")
    values = torch.stack(rows).cpu().numpy()                 # (sites, L): one transfer
    return dict(zip(names, values))


def loglog_slope(xs, ys) -> float:
    """Least-squares slope of log(ys) against log(xs)."""
    return float(np.polyfit(np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float)), 1)[0])


def coord_check(cfg: RunConfig, axis: str, values: list[int], steps: int, seeds: int = 1,
                probe_n: int = 16) -> dict[str, np.ndarray]:
    """Train `steps` steps at each size on `axis`, then measure coordinate sizes on a fixed probe batch.

    Returns {site: array (len(values),)} of the layer-mean RMS, averaged over seeds, for the sites of
    `coord_sizes` (with "d_" changes when steps > 0).
    """
    out: dict[str, list] = {}
    for v in values:
        acc: dict[str, list] = {}
        for s in range(seeds):
            c = replace(cfg, seed=cfg.seed + s, steps=max(steps, 1), model=replace(cfg.model, **{axis: v}, axis=axis))
            c, task, model0, _, device = setup(c)
            x, _ = task.heldout.fixed(probe_n, seed=c.data_seed)
            x = x.to(device)
            taps0 = taps_of(model0, x)
            if steps > 0:
                model = train(c).model
                sizes = coord_sizes(taps_of(model, x), taps0)
            else:
                sizes = coord_sizes(taps0)
            for k, arr in sizes.items():
                acc.setdefault(k, []).append(float(np.mean(arr)))
        for k, vals in acc.items():
            out.setdefault(k, []).append(float(np.mean(vals)))
    return {k: np.asarray(v) for k, v in out.items()}

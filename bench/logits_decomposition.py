"""Where the logits' change comes from: f(theta_t) - f(theta_0) split into the readout's own update,
m (W_t - W_0) u_t, and the initial readout applied to the feature change, m W_0 (u_t - u_0), with the slope of
each part's RMS over N (a measurement, not a test).

    python bench/logits_decomposition.py [--task lm] [--optimizer sgd] [--eta0 0.5] [--steps 1] [--seeds 2]

Defaults: N = 8..64, H = 4, L = 2, seq_len 32, batch 32; u is the final LN output (mean over tokens for vision),
evaluated on 8 fixed held-out samples. On the 256-token LM at these widths the feature part carries the decay
that `dmft-probe coord` flags on the logits (docs/results.md, "Known deviations from expectations").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmft.fit import slope_fit
from parametrizations.transformer import layer_norm
from probes.experiment.config import make_run_config
from probes.experiment.run import setup, train


@torch.no_grad()
def readout_input(model, x: torch.Tensor, task: str) -> torch.Tensor:
    """The readout's input LN(h^L) (mean over tokens for vision), as in LWSTransformer.forward."""
    h = model.embed_tokens(x)
    for block in model.blocks:
        h = block(h)
    u = layer_norm(h)
    return u.mean(dim=1) if task == "vision" else u


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="lm")
    ap.add_argument("--optimizer", default="sgd")
    ap.add_argument("--eta0", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--seeds", type=int, default=2)
    a = ap.parse_args()
    Ns = [8, 16, 32, 64]
    parts: dict[str, list] = {"readout's own update": [], "W_0 x feature change": [], "total": []}
    for N in Ns:
        row: dict[str, list] = {k: [] for k in parts}
        for seed in range(a.seeds):
            cfg = make_run_config(
                model={"N": N, "H": 4, "L": 2, "seq_len": 32, "task": a.task},
                optim={"name": a.optimizer, "eta0": a.eta0},
                run={"steps": a.steps, "seed": seed},
                probes={"enabled": False, "every": a.steps},
            )
            _, task, model0, _, _ = setup(cfg)  # the initial model, as train() builds it
            x = task.heldout.fixed(8, seed=0)[0]
            model = train(cfg).model
            u0, u1 = readout_input(model0, x, a.task), readout_input(model, x, a.task)
            with torch.no_grad():
                m = model.readout.mult
                own = m * F.linear(u1, model.readout.weight - model0.readout.weight)
                feat = m * F.linear(u1 - u0, model0.readout.weight)
                total = model(x) - model0(x)
            for k, v in zip(parts, (own, feat, total)):
                row[k].append(v.pow(2).mean().sqrt().item())
        for k in parts:
            parts[k].append(row[k])
    print(f"{a.task}, {a.optimizer} eta0={a.eta0:g}, step {a.steps}, N = {Ns}, {a.seeds} seeds: RMS and slope over N")
    for k, v in parts.items():
        print(
            f"  {k:22s} slope {slope_fit(Ns, np.array(v)).slope:+.2f}   RMS "
            + ", ".join(f"{x:.4f}" for x in np.mean(v, axis=1))
        )


if __name__ == "__main__":
    main()

"""Spread of trained convergence slopes over disjoint seed sets: the measurement behind the tolerances of
tests/test_trained_convergence.py. Prints, for three disjoint sets of S seeds, the slopes (largest-size and
Richardson limits) of the distance of the pooled kernel, the outputs and the held-out loss from their limit, at
every probe step, and the seed-variance slopes at the last step.

    python bench/trained_rate_spread.py AXIS PRESET STEPS SIZES SEEDS
    python bench/trained_rate_spread.py H mup 40 4,8,16,32 16     # the H numbers in the test (N = 4, H = 2.., L = 1)
    python bench/trained_rate_spread.py N mup 40 4,8,16,32 6      # the N numbers (H = 2, L = 1)
Digits, SGD + momentum, eta0 0.5, batch 16, probes every STEPS/4 steps.
"""

import sys
import time

import numpy as np
import torch

from dmft import convergence as C
from probes.experiment.config import make_run_config
from probes.experiment.dataset import combine_runs, run_dataset
from probes.experiment.ensemble import train_seeds
from probes.grid.sweep import value_config

torch.set_num_threads(1)
axis, preset, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
sizes = [int(x) for x in sys.argv[4].split(",")]
S = int(sys.argv[5])
base = {"N": 4, "H": 2, "L": 1}
for k in range(3):
    t = time.time()
    cfg = make_run_config(
        model={**base, "task": "digits", "axis": axis},
        param={"preset": preset},
        optim={"name": "sgd-momentum", "eta0": 0.5},
        run={"steps": steps, "batch_size": 16, "seed": S * k},
        probes={"every": steps // 4, "n_samples": 16},
    )
    seeds = list(range(S * k, S * k + S))
    per = [
        combine_runs([run_dataset(r) for r in train_seeds(value_config(cfg, axis, v), seeds)], "seed") for v in sizes
    ]
    ds = combine_runs(per, axis)
    ds.attrs["sweep_axis"] = axis
    out = [f"seeds {seeds[0]}-{seeds[-1]} ({time.time() - t:.0f} s)"]
    for q in ("kernel_pooled", "probe_outputs", "heldout_loss"):
        for m in ("largest", "richardson"):
            r = C.convergence_rate(ds, q, axis, method=m)
            out.append(
                f"{q} {m}: {r.slope:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]; by step "
                f"{np.round(np.asarray(r.slope_by_step), 2).tolist()}"
            )
    for q in ("probe_outputs", "heldout_loss"):
        r = C.seed_variance_rate(ds, q, axis)
        out.append(f"seed variance {q}: {r.slope:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]")
    print("\n  ".join(out), flush=True)

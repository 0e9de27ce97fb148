"""Which (gamma0, eta0) train stably on digits with SGD + momentum: the measurement behind the CPU preset of
`dmft-probe reproduce` (probes/grid/reproduce.py). Prints, for 3 seeds, the held-out loss at step 100 and 300 and
the variance over heads of the attention logits A at step 300 (it grows without bound when eta0 is too large
for gamma0).

    python bench/gamma0_stability.py GAMMA0 ETA0S [L]
    python bench/gamma0_stability.py 0.1 0.2,1,5,25        # L = 2 (N = 8, H = 4)
    python bench/gamma0_stability.py 0.1 2,5 8
    python bench/gamma0_stability.py 1 0.5
"""

import sys

import torch

from probes.experiment.config import make_run_config
from probes.experiment.dataset import run_dataset
from probes.experiment.ensemble import train_seeds

torch.set_num_threads(2)
gamma0 = float(sys.argv[1])
L = int(sys.argv[3]) if len(sys.argv) > 3 else 2
for eta0 in [float(x) for x in sys.argv[2].split(",")]:
    cfg = make_run_config(
        model={"task": "digits", "N": 8, "H": 4, "L": L},
        param={"preset": "mup", "gamma0": gamma0},
        optim={"name": "sgd-momentum", "eta0": eta0},
        run={"steps": 300, "batch_size": 32},
        probes={"every": 100, "n_samples": 32},
    )
    ds = [run_dataset(r) for r in train_seeds(cfg, [0, 1, 2])]
    print(
        f"gamma0={gamma0} L={L} eta0={eta0}: held-out loss at 300",
        [round(float(d.heldout_loss[-1]), 3) for d in ds],
        "at 100",
        [round(float(d.heldout_loss[1]), 3) for d in ds],
        "Var_h A at 300",
        [f"{float(d.attn_var_heads.isel(step=-1).mean()):.3g}" for d in ds],
        flush=True,
    )

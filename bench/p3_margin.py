"""The margin of tests/test_theory.py's P3 test over disjoint seed sets.

    python bench/p3_margin.py 0,24,48,72          (base seeds: each set is 24 seeds from there)

For each base seed: an init-only sweep along H = 2, 4, 8 at N = 2 (L = 2, 4 probe points, the test's settings),
`dmft.check`'s P3 row on it, and on a copy whose A(0) values are Gaussian draws of the same variance. Prints the
estimates, intervals and outcomes, and how many interval half-widths the interval's near end lies from 0.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np

from dmft.check import check
from dmft.solvers import attention_law
from probes.experiment.config import make_run_config
from probes.grid.sweep import run_sweep


def main(bases: list[int], seeds: int = 24) -> None:
    for base in bases:
        cfg = make_run_config(
            model={"N": 2, "H": 4, "L": 2, "task": "vision"},
            param={"preset": "mup"},
            optim={"name": "adam", "eta0": 0.05},
            run={"steps": 200, "batch_size": 32, "seed": base},
            probes={"every": 50, "n_samples": 16},
        )
        with tempfile.TemporaryDirectory() as d:
            ds = run_sweep(cfg, "H", [2, 4, 8], seeds, Path(d) / "s.nc", init_only=True).load()
            v = next(v for v in check(ds) if v.key == "P3")
            x = ds.attn_raw.values
            g = np.random.default_rng(base).standard_normal(x.shape) * attention_law(2, 1.0).std()
            gauss = ds.assign(attn_raw=ds.attn_raw.copy(data=np.where(np.isfinite(x), g, np.nan)))
            w = next(v for v in check(gauss) if v.key == "P3")
        print(
            f"base {base}: variance-gamma {v.measured()} {v.outcome}, lower end {v.lo / ((v.hi - v.lo) / 2):.2f} "
            f"half-widths above 0; Gaussian {w.measured()} {w.outcome}, upper end "
            f"{-w.hi / ((w.hi - w.lo) / 2):.2f} half-widths below 0",
            flush=True,
        )


if __name__ == "__main__":
    main([int(b) for b in sys.argv[1].split(",")])

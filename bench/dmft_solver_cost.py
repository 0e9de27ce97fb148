"""The DMFT solver's cost (stage 1): wall time and peak memory of `dmft.dynamics.solve` against P (training
samples), T (steps), L (blocks) and the Monte Carlo samples, each point in a fresh subprocess (peak RSS is per
process), on synthetic one-token inputs (the cost does not depend on the values). Prints one table; the fitted
growth exponents of time and of the memory above the interpreter's baseline are printed under it. It also prints
`dmft.dynamics.command.memory_bytes`, the estimate `dmft-probe solve` checks against free memory.

    python bench/dmft_solver_cost.py            # the default grid (about 2 minutes on 2 cores)
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

CHILD = r"""
import json, resource, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[5]))
from dmft.dynamics import Problem, SolverConfig, mean_field_rates, solve
from dmft.dynamics.command import memory_bytes
from parametrizations.optim import OptimConfig
from parametrizations.spec import get_preset
P, T, L, n = (int(a) for a in sys.argv[1:5])
rng = np.random.default_rng(0)
x, xt = rng.standard_normal((P, 64)), rng.standard_normal((P, 64))
y, yt = rng.integers(0, 10, P), rng.integers(0, 10, P)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prob = Problem(x, y, xt, yt, 10, L, T, "ce", mean_field_rates(get_preset("mup"), OptimConfig(name="sgd", eta0=0.5), L, 64))
cfg = SolverConfig(n_samples=n, max_iter=1)
t0 = time.perf_counter(); sol = solve(prob, cfg); wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_mib": peak / 1024, "above_mib": (peak - base) / 1024,
                  "estimate_mib": memory_bytes(prob, cfg) / 2 ** 20, "residual": sol.residual}))
"""

GRID = [(P, 8, 1, 10000) for P in (4, 8, 16, 32)] + [(8, T, 1, 10000) for T in (4, 16, 32)] + \
       [(8, 8, L, 10000) for L in (2, 4)] + [(8, 8, 1, n) for n in (2500, 40000)]


def run(P: int, T: int, L: int, n: int, threads: int = 2) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(P), str(T), str(L), str(n), str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rows = {}
    print(f"{'P':>4} {'T':>4} {'L':>3} {'samples':>8} {'wall s':>8} {'peak MiB':>9} {'above MiB':>10} "
          f"{'estimate MiB':>13} {'residual':>9}")
    for key in GRID:
        r = rows[key] = run(*key)
        print(f"{key[0]:>4} {key[1]:>4} {key[2]:>3} {key[3]:>8} {r['wall_s']:>8.2f} {r['peak_mib']:>9.0f} "
              f"{r['above_mib']:>10.0f} {r['estimate_mib']:>13.0f} {r['residual']:>9.1e}", flush=True)
    for name, idx, pts in (("P", 0, (4, 8, 16, 32)), ("T", 1, (4, 8, 16, 32)), ("L", 2, (1, 2, 4)),
                           ("samples", 3, (2500, 10000, 40000))):
        keys = [tuple(v if i == idx else d for i, d in enumerate((8, 8, 1, 10000))) for v in pts]
        x = np.log(pts)
        for what in ("wall_s", "above_mib"):
            y = np.log([max(rows[k][what], 1e-9) for k in keys])
            print(f"{what} ~ {name}^{np.polyfit(x, y, 1)[0]:.2f} over {name} = {', '.join(map(str, pts))}")


if __name__ == "__main__":
    main()

"""The DMFT solver's cost: wall time and peak memory of `dmft.dynamics.solve` against P (training samples, with
as many held-out ones), S (tokens), T (steps), L (blocks) and the Monte Carlo samples, each point in a fresh
subprocess (peak RSS is per process), on synthetic inputs of 16 features per token (the cost does not depend on the
values). Prints one table; the fitted growth exponents of time and of the memory above the interpreter's baseline
are printed under it. It also prints `dmft.dynamics.command.memory_bytes`, the estimate `dmft-probe solve` checks
against free memory, and, from that estimate, the largest P x S x T that fits in 8 GiB.

    python bench/dmft_solver_cost.py            # the default grid (a few minutes on 2 cores)
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
P, T, L, n, S = (int(a) for a in sys.argv[1:5] + sys.argv[6:7])
rng = np.random.default_rng(0)
x, xt = rng.standard_normal((P, S, 16)), rng.standard_normal((P, S, 16))
y, yt = rng.integers(0, 10, P), rng.integers(0, 10, P)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
rates = mean_field_rates(get_preset("mup"), OptimConfig(name="sgd", eta0=0.5), L, 16, tokens=S)
prob = Problem(x, y, xt, yt, 10, L, T, "ce", rates)
cfg = SolverConfig(n_samples=n, max_iter=1)
t0 = time.perf_counter(); sol = solve(prob, cfg); wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_mib": peak / 1024, "above_mib": (peak - base) / 1024,
                  "estimate_mib": memory_bytes(prob, cfg) / 2 ** 20, "residual": sol.residual}))
"""

BASE = (8, 8, 1, 10000, 1)  # (P, T, L, samples, S)
AXES = {
    "P": (0, (4, 8, 16, 32)),
    "T": (1, (4, 8, 16, 32)),
    "L": (2, (1, 2, 4)),
    "samples": (3, (2500, 10000, 40000)),
    "S": (4, (1, 2, 4)),
}
GRID = list(
    dict.fromkeys(tuple(v if i == idx else b for i, b in enumerate(BASE)) for idx, pts in AXES.values() for v in pts)
)


def run(P: int, T: int, L: int, n: int, S: int, threads: int = 2) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(P), str(T), str(L), str(n), str(threads), str(S)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def largest_in(budget: int = 8 * 2**30, L: int = 1, n: int = 10000) -> list[tuple[int, int, int, float]]:
    """Per (S, T): the largest P (held-out samples = P) whose `memory_bytes` fits in `budget`, from the estimate
    alone (it bounds the measured peak: tests/test_dynamics.py), as (S, T, P, GiB)."""
    from dmft.dynamics import Problem, SolverConfig, mean_field_rates
    from dmft.dynamics.command import memory_bytes
    from parametrizations.optim import OptimConfig
    from parametrizations.spec import get_preset

    cfg, out = SolverConfig(n_samples=n), []
    for S in (1, 4, 16):
        rates = mean_field_rates(get_preset("mup"), OptimConfig(name="sgd", eta0=0.5), L, 16, tokens=S)
        for T in (8, 16, 32, 64):

            def need(P: int, S: int = S, T: int = T, rates=rates) -> int:  # bound now, not at call time
                x, y = np.zeros((P, S, 16)), np.zeros(P, dtype=int)
                return memory_bytes(Problem(x, y, x, y, 10, L, T, "ce", rates), cfg)

            P = 1
            while need(2 * P) <= budget:
                P *= 2
            lo, hi = P, 2 * P  # need(lo) <= budget < need(hi), unless lo = 1 fails
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if need(mid) <= budget else (lo, mid)
            if need(lo) <= budget:
                out.append((S, T, lo, need(lo) / 2**30))
    return out


def main() -> None:
    rows = {}
    print(
        f"{'P':>4} {'T':>4} {'L':>3} {'samples':>8} {'S':>3} {'wall s':>8} {'peak MiB':>9} {'above MiB':>10} "
        f"{'estimate MiB':>13} {'residual':>9}"
    )
    for key in GRID:
        r = rows[key] = run(*key)
        print(
            f"{key[0]:>4} {key[1]:>4} {key[2]:>3} {key[3]:>8} {key[4]:>3} {r['wall_s']:>8.2f} {r['peak_mib']:>9.0f} "
            f"{r['above_mib']:>10.0f} {r['estimate_mib']:>13.0f} {r['residual']:>9.1e}",
            flush=True,
        )
    for name, (idx, pts) in AXES.items():
        keys = [tuple(v if i == idx else b for i, b in enumerate(BASE)) for v in pts]
        x = np.log(pts)
        for what in ("wall_s", "above_mib"):
            y = np.log([max(rows[k][what], 1e-9) for k in keys])
            print(f"{what} ~ {name}^{np.polyfit(x, y, 1)[0]:.2f} over {name} = {', '.join(map(str, pts))}")
    print("largest P (held-out samples = P) within 8 GiB by memory_bytes, L = 1, 1e4 samples:")
    for S, T, P, gib in largest_in():
        print(f"  S = {S:>2}, T = {T:>2}: P = {P:>4}  (P x S x T = {P * S * T}, estimate {gib:.2f} GiB)")


if __name__ == "__main__":
    main()

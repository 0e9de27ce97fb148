"""The logits-change slope over N and over H for each optimizer, under the current rules and under the rules before
the Adam readout fix, side by side in one process (not a test; it prints a table).

Before the fix (commit 782bdcd and earlier) the Adam family used a readout of std 1 with multiplier d^-1/2/gamma0
(std x multiplier = d^-1/2 instead of 1/(gamma0 d)), an embedding without depth factors and a global lr without
gamma0; SGD's rules did not change. The old Adam rules are put back by patching `abc` for the run, so both columns
come from the same code path: `probes.grid.sweep.run_sweep` with the coordinate-check probe schedule, then
`dmft.coord.coord_verdicts`.

    python bench/coord_before_after.py [--steps 0,10,20] [--seeds 3]

Defaults: synthetic vision task, base N = 8, H = 4, L = 2, batch 32, 16 probe samples, N = 4..64, H = 2..32,
eta0 0.5 (sgd), 0.1 (sgd-momentum), 0.05 (adam, adamw). Prints the slope at the last step with its 95% joint-jackknife CI and its verdict mark.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmft.coord import coord_verdicts
from parametrizations import spec
from probes.experiment.config import make_run_config
from probes.grid.sweep import coord_config, run_sweep

ETA0 = {"sgd": 0.5, "sgd-momentum": 0.1, "adam": 0.05, "adamw": 0.05}
AXES = {"N": [4, 8, 16, 32, 64], "H": [2, 4, 8, 16, 32]}


def old_abc(p, role, fan_in, *, d, N, L, optimizer):
    """The pre-fix Adam rule for the embedding and the readout (other roles and SGD unchanged)."""
    if spec.is_adam(optimizer) and not p.standard:
        if role in ("embed", "pos"):
            return 1.0 / math.sqrt(d), math.sqrt(d) / math.sqrt(fan_in)
        if role == "readout":
            return 1.0, 1.0 / (math.sqrt(d) * p.gamma0)
    return spec.abc(p, role, fan_in, d=d, N=N, L=L, optimizer=optimizer)


@contextmanager
def rules(which: str):
    if which == "before":
        with mock.patch("parametrizations.transformer.abc", old_abc):
            yield
    else:
        yield


def logits_slope(optimizer: str, axis: str, steps: list[int], seeds: int, which: str) -> str:
    cfg = make_run_config(
        model={"N": 8, "H": 4, "L": 2, "task": "vision"},
        param={"preset": "mup"},
        optim={"name": optimizer, "eta0": ETA0[optimizer]},
        run={"batch_size": 32},
        probes={"n_samples": 16},
    )
    with rules(which), tempfile.TemporaryDirectory() as tmp:
        ds = run_sweep(coord_config(cfg, steps), axis, AXES[axis], seeds, Path(tmp) / "c.nc")
    row = next(v for v in coord_verdicts(ds) if v.row == f"logits change @{max(steps)}")
    return f"{row.estimate:+.2f} [{row.lo:+.2f}, {row.hi:+.2f}] {row.mark}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="0,10,20")
    ap.add_argument("--seeds", type=int, default=3)
    a = ap.parse_args()
    steps = [int(s) for s in a.steps.split(",")]
    print(f"RMS of f(theta_t) - f(theta_0) at step {max(steps)}: log-log slope [95% seed CI], mup, {a.seeds} seeds")
    print(f"{'optimizer':14s} {'axis':4s} {'before the fix':22s} {'after':22s}")
    for optimizer in ETA0:
        for axis in AXES:
            before = logits_slope(optimizer, axis, steps, a.seeds, "before")
            after = before if optimizer.startswith("sgd") else logits_slope(optimizer, axis, steps, a.seeds, "after")
            print(
                f"{optimizer:14s} {axis:4s} {before:22s} {after:22s}"
                + ("  (SGD rules unchanged)" if optimizer.startswith("sgd") else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()

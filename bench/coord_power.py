"""How the coordinate check's rows come out under the one verdict rule, per seed set and number of seeds (not a
test; it prints one line per row and writes them as JSON lines).

For each case (a preset, optimizer, axis, sizes and steps as in tests/test_coord_check.py and
tests/test_variant_coord.py), a coordinate-check sweep is run with `--seeds` seeds from each base seed in
`--bases` (disjoint seed sets: seeds base .. base + seeds - 1), then `dmft.coord.coord_verdicts` judges the
dataset with its first k seeds for every k in `--judge`. Cases: mup-adam-N (correct), broken-adam-readout-N (the
old Adam readout, std 1 x multiplier d^-1/2/gamma0), depth-sqrt-sgd-L, mup-sgd-L, laurel-adam-L.

    python bench/coord_power.py --case broken-adam-readout-N --seeds 8 --judge 3,8 --bases 0,100,200,300,400
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmft.coord import coord_verdicts
from parametrizations import spec
from probes.experiment.config import make_run_config
from probes.grid.sweep import coord_config, run_sweep

BASE = {"N": 8, "H": 4, "L": 2, "task": "vision"}
CASES = {  # name: (model extra, preset, optimizer, eta0, axis, values, steps)
    "mup-adam-N": ({}, "mup", "adam", 0.05, "N", [4, 8, 16, 32, 64], [0, 10, 20]),
    "broken-adam-readout-N": ({}, "mup", "adam", 0.05, "N", [4, 8, 16, 32, 64], [0, 10, 20]),
    "depth-sqrt-sgd-L": ({}, "depth-sqrt", "sgd", 0.5, "L", [2, 4, 8, 16], [0, 10]),
    "mup-sgd-L": ({}, "mup", "sgd", 0.5, "L", [2, 4, 8, 16], [0, 10]),
    "laurel-adam-L": ({"variant": "laurel"}, "mup", "adam", 0.05, "L", [1, 2, 4, 8], [0, 10]),
    "laurel-adam-L-2": ({"variant": "laurel"}, "mup", "adam", 0.05, "L", [2, 4, 8], [0, 10]),
    "broken-adam-readout-N32": ({}, "mup", "adam", 0.05, "N", [4, 8, 16, 32], [0, 10]),
    "mup-adam-N32": ({}, "mup", "adam", 0.05, "N", [4, 8, 16, 32], [0, 10]),
    "quick-paper-adam-N": ({}, "mup", "adam", 0.05, "N", [4, 8, 16], [0, 1, 10]),
}


def old_readout(p, role, fan_in, *, d, N, L, optimizer):
    """The Adam readout before its fix: std 1, multiplier d^-1/2/gamma0."""
    if role == "readout" and spec.is_adam(optimizer) and not p.standard:
        return 1.0, 1.0 / (math.sqrt(d) * p.gamma0)
    return spec.abc(p, role, fan_in, d=d, N=N, L=L, optimizer=optimizer)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", required=True, choices=list(CASES))
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--judge", default="3,8")
    ap.add_argument("--bases", default="0,100,200,300,400")
    ap.add_argument("--out", default="", help="append the rows as JSON lines to this file")
    ap.add_argument("--keep", default="", help="keep each sweep dataset in this folder")
    a = ap.parse_args()
    model, preset, opt, eta0, axis, values, steps = CASES[a.case]
    sink = open(a.out, "a") if a.out else None
    for base in [int(b) for b in a.bases.split(",")]:
        cfg = make_run_config(
            model={**BASE, **model},
            param={"preset": preset},
            optim={"name": opt, "eta0": eta0},
            run={"batch_size": 32, "seed": base},
            probes={"n_samples": 16},
        )
        patch = (
            mock.patch("parametrizations.transformer.abc", old_readout)
            if a.case.startswith("broken")
            else nullcontext()
        )
        t0 = time.perf_counter()
        with patch, tempfile.TemporaryDirectory() as tmp:
            where = Path(a.keep) / f"{a.case}-{base}-{a.seeds}.nc" if a.keep else Path(tmp) / "c.nc"
            ds = run_sweep(coord_config(cfg, steps), axis, values, a.seeds, where).load()
        took = time.perf_counter() - t0
        for k in [int(k) for k in a.judge.split(",")]:
            rows = coord_verdicts(ds.isel(seed=slice(0, k)))
            for v in rows:
                rec = {
                    "case": a.case,
                    "base": base,
                    "S": k,
                    "row": v.row,
                    "est": v.estimate,
                    "lo": v.lo,
                    "hi": v.hi,
                    "band": v.band,
                    "outcome": v.outcome,
                    "exp": v.prediction.name,
                    "sweep_s": took,
                }
                print(json.dumps(rec), file=sink or sys.stdout, flush=True)
    if sink:
        sink.close()


if __name__ == "__main__":
    main()

"""P2 at several training lengths: the slope over N of the variance over heads of A, A(t) - A(0) and softmax(A),
at every probe step, for alpha_A = 1 (mup) and 1/2 (mup-sqrt), under Adam and SGD, with the slopes of the muP
feature update and of the logits' change (a measurement, not a test).

    python bench/p2_over_time.py [--steps 300] [--every 50] [--seeds 3] [--out runs/p2]

Each (optimizer, preset) is one resumable sweep (`probes.grid.sweep.run_sweep`: vision task, H = 4, L = 2, batch 32,
N = 4..64, 16 probe samples) written to --out; the slopes are `dmft.fit.slope_fit` (log seed mean against log N),
printed as one line per quantity with a column per probe step. About 15 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmft.fit import slope_fit
from probes.experiment.config import make_run_config
from probes.grid.sweep import run_sweep

RUNS = (("adam", 0.05), ("sgd", 0.5))
QUANTITIES = ("attn_var_heads", "dA_var_heads", "attn_prob_var_heads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/p2"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    for optimizer, eta0 in RUNS:
        for preset in ("mup", "mup-sqrt"):
            cfg = make_run_config(
                model={"N": 8, "H": 4, "L": 2, "task": "vision"},
                param={"preset": preset},
                optim={"name": optimizer, "eta0": eta0},
                run={"steps": a.steps, "batch_size": 32},
                probes={"every": a.every, "n_samples": 16},
            )
            ds = run_sweep(cfg, "N", [4, 8, 16, 32, 64], a.seeds, a.out / f"{preset}-{optimizer}.nc")
            steps = [int(s) for s in ds.step.values]
            print(
                f"\n{optimizer} eta0={eta0:g}, {preset} (alpha_A = {ds.attrs['alpha_A']:g}): slope over N at step "
                + " ".join(f"{s:>6d}" for s in steps)
            )
            for q in QUANTITIES:
                cells = []
                for i, s in enumerate(steps):
                    if q == "dA_var_heads" and s == 0:
                        cells.append(f"{'-':>6s}")
                        continue
                    da = ds[q].isel(step=i).mean("layer").transpose("N", "seed")
                    cells.append(f"{slope_fit(ds.N.values, da.values).slope:+6.2f}")
                print(f"  {q:22s}" + " ".join(cells))
            # the muP feature update (block outputs' change, layer and branch mean) and the logits' change
            update = ds.coord_update_rms.sel(site=["attn_out", "mlp_out"]).mean(["layer", "site"])
            logits = ds.io_update_rms.sel(io_site="logits")
            for name, da in (("feature update", update), ("logits change", logits)):
                cells = [
                    f"{'-':>6s}"
                    if s == 0
                    else f"{slope_fit(ds.N.values, da.isel(step=i).transpose('N', 'seed').values).slope:+6.2f}"
                    for i, s in enumerate(steps)
                ]
                print(f"  {name:22s}" + " ".join(cells))
            loss = ds.heldout_loss.isel(step=-1).mean("seed").values
            print("  final held-out loss per N: " + ", ".join(f"{v:.3f}" for v in loss), flush=True)


if __name__ == "__main__":
    main()

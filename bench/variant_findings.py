"""The measurements behind the block-variant findings (docs/results.md "Block variants", docs/variants.md "Findings").
Not tests: each prints a table. Seeded, CPU, base model of `dmft-probe variants` (vision, N=8, H=4, L=2, mup).

  python bench/variant_findings.py kernel       # mean off-diagonal pooled kernel at init vs N (early-step effect)
  python bench/variant_findings.py gains        # RMS move of the RMSNorm gains after 20 SGD steps vs H (openelm)
  python bench/variant_findings.py gain-rule    # paper block + RMSNorm gains, SGD along H: gain mult 1 vs H_l^-1/2
  python bench/variant_findings.py ngpt-depth   # nGPT logits RMS at init vs L = 1..128
  python bench/variant_findings.py laurel-wide  # LAUREL rw+lr+pa, Adam, change at step 20 for N = 4..128
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import parametrizations.spec as spec
import parametrizations.transformer as tr
from dmft.coord import coord_verdicts, refuted, site_rms
from parametrizations.rmsnorm import rms_norm
from parametrizations.spec import get_preset
from parametrizations.transformer import ModelConfig, build_model, layer_norm
from probes.experiment.config import make_run_config
from probes.experiment.data import load_task
from probes.experiment.run import train
from probes.grid.sweep import coord_config, run_sweep

BASE = {"N": 8, "H": 4, "L": 2, "task": "vision"}
SEEDS = 3


def readout_input(m, h: torch.Tensor) -> torch.Tensor:
    """What the readout reads (before pooling): h (nGPT), RMSNorm with the final gain, or LN."""
    if m.opts.ngpt:
        return h
    return rms_norm(h, m.norm_out.value()) if hasattr(m, "norm_out") else layer_norm(h)


def kernel() -> None:
    task = load_task("vision", None, seq_len=16, patch=4, seed=0)
    x = task.heldout.fixed(32, seed=0)[0]
    for opts in [
        dict(variant="paper"),
        dict(variant="openelm"),
        dict(variant="openelm", rope=False),
        dict(variant="openelm", mlp="gelu"),
        dict(variant="ngpt"),
    ]:
        row = []
        for N in (4, 16, 64):
            cfg = ModelConfig(N=N, H=4, L=2, task="vision", seq_len=x.shape[1], d_in=x.shape[2], **opts)
            vals = []
            for seed in range(SEEDS):
                m = build_model(cfg, get_preset("mup"), "adam", seed)
                taps: list = []
                with torch.no_grad():
                    m(x, taps)
                    ub = readout_input(m, taps[-1]["h"]).mean(-2)  # (P, d) pooled
                    K = ub @ ub.T / ub.shape[-1]
                    vals.append(K[~torch.eye(len(K), dtype=torch.bool)].mean().item())
            row.append(f"N={N}: {np.mean(vals):+.4f}")
        print(opts, "mean off-diagonal pooled kernel at init:", ", ".join(row))


def gains() -> None:
    for H in (2, 4, 8, 16):
        moves = []
        for seed in range(2):
            cfg = make_run_config(
                model={**BASE, "variant": "openelm", "qk_norm": False, "H": H},
                optim={"name": "sgd", "eta0": 0.5},
                run={"batch_size": 32, "steps": 20, "seed": seed},
                probes={"enabled": False},
            )
            m = train(cfg).model
            moves.append(
                {
                    n: ((p.detach() * m.get_submodule(n.rsplit(".", 1)[0]).mult - 1).pow(2).mean().sqrt().item())
                    for n, p in m.named_parameters()
                    if m.param_roles[n] in ("gain", "gain_out")
                }
            )
        print(f"H={H}", {k: round(float(np.mean([mv[k] for mv in moves])), 3) for k in moves[0]})


def coord_sweep(model: dict, optim: dict, axis: str, values: list[int], steps: list[int], out: Path):
    cfg = make_run_config(
        model=model, param={"preset": "mup"}, optim=optim, run={"batch_size": 32}, probes={"n_samples": 16}
    )
    return run_sweep(coord_config(cfg, steps), axis, values, 2, out)


def gain_rule() -> None:
    orig = spec.vector_mult
    for rule in ("1", "H_l^-1/2"):

        def patched(p, role, *, d, N, L, optimizer, H_l=1, rule=rule):
            m = orig(p, role, d=d, N=N, L=L, optimizer=optimizer, H_l=H_l)
            return m / math.sqrt(H_l) if rule != "1" and role == "gain" and not spec.is_adam(optimizer) else m

        tr.vector_mult = patched
        with tempfile.TemporaryDirectory() as tmp:
            ds = coord_sweep(
                {**BASE, "norm": "rms"},
                {"name": "sgd", "eta0": 0.5},
                "H",
                [2, 4, 8, 16],
                [0, 10, 20],
                Path(tmp) / "g.nc",
            )
        rows = coord_verdicts(ds)
        print(
            f"gain SGD multiplier {rule}: change slopes at step 20",
            {v.row.split()[0]: round(v.estimate, 2) for v in rows if v.row.endswith("change @20")},
            "rows refuted:",
            [v.row for v in refuted(rows)],
        )
    tr.vector_mult = orig


def ngpt_depth() -> None:
    task = load_task("vision", None, seq_len=16, patch=4, seed=0)
    x = task.heldout.fixed(16, seed=0)[0]
    for L in (1, 2, 4, 16, 64, 128):
        cfg = ModelConfig(N=8, H=4, L=L, task="vision", seq_len=x.shape[1], d_in=x.shape[2], variant="ngpt")
        with torch.no_grad():
            rms = [build_model(cfg, get_preset("mup"), "adam", s)(x).pow(2).mean().sqrt().item() for s in range(2)]
        print(f"L={L}: logits RMS at init {np.mean(rms):.3f}")


def laurel_wide() -> None:
    vals = [4, 8, 16, 32, 64, 128]
    with tempfile.TemporaryDirectory() as tmp:
        ds = coord_sweep(
            {**BASE, "variant": "laurel"}, {"name": "adam", "eta0": 0.05}, "N", vals, [0, 20], Path(tmp) / "l.nc"
        )
    ch = site_rms(ds, True).isel(step=-1).mean("seed")
    for site in ("logits", "h", "mlp_hidden", "attn_out"):
        m = ch.sel(site=site).values
        print(
            f"{site}: change at step 20 for N={vals}: {np.round(m, 3)}; local slopes "
            f"{np.round(np.diff(np.log(m)) / np.diff(np.log(vals)), 2)}"
        )


if __name__ == "__main__":
    torch.set_num_threads(1)
    modes = {
        "kernel": kernel,
        "gains": gains,
        "gain-rule": gain_rule,
        "ngpt-depth": ngpt_depth,
        "laurel-wide": laurel_wide,
    }
    if len(sys.argv) != 2 or sys.argv[1] not in modes:
        sys.exit(f"usage: python bench/variant_findings.py {{{'|'.join(modes)}}}")
    modes[sys.argv[1]]()

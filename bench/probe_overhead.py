"""Probe overhead: wall time of the default run with probes every 10 steps on a 32-sample probe batch, against
the same run with probes off, in one process, interleaved, median of --repeats each.

    python bench/probe_overhead.py [--repeats 3] [--device cpu] [--N 16 --H 4 --L 2 --steps 200]

Prints both medians and their ratio (goal: at most 1.05). Not a test: machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from probes.config import make_run_config
from probes.run import train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--N", type=int, default=16)
    ap.add_argument("--H", type=int, default=4)
    ap.add_argument("--L", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--task", default="lm")
    a = ap.parse_args()
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(a.repeats):
        for enabled in (False, True):
            cfg = make_run_config(model={"N": a.N, "H": a.H, "L": a.L, "task": a.task},
                                  run={"steps": a.steps, "device": a.device},
                                  probes={"enabled": enabled, "every": 10, "n_samples": 32})
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            train(cfg)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            times[enabled].append(time.perf_counter() - t0)
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"device={a.device} N={a.N} H={a.H} L={a.L} steps={a.steps} task={a.task} threads={torch.get_num_threads()}")
    print(f"probes off: {off:8.3f} s   (runs: {', '.join(f'{t:.2f}' for t in times[False])})")
    print(f"probes on : {on:8.3f} s   (runs: {', '.join(f'{t:.2f}' for t in times[True])})")
    print(f"ratio on/off: {on / off:.3f}  (goal <= 1.05)")


if __name__ == "__main__":
    main()

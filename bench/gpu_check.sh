#!/usr/bin/env bash
# GPU check for a lent CUDA machine (not CI), one script within 10 minutes on one H100: the CUDA path through the
# CLI, the Triton kernels (head statistics, fused RMSNorm: the repo's only two) against their PyTorch references
# on CUDA tensors, the benchmark table on the GPU (with row 8, bf16 MFU at d_model 1024), and a slice of
# `reproduce --preset gpu` (its N-mup job at N = 16, 64, 256 with the preset's 16 seeds, 200 of its 2000 steps)
# that prints its achieved FLOP/s and the hours the whole preset would take at that rate.
# Every step has its own timeout (seconds: 60 + 90 + 60 + 240 + 120 = 570), so the script ends within 10 minutes;
# a step that fails or times out prints "<STEP> FAILED" and the next one runs. Everything goes under $OUT.
# Usage: OUT=<folder for results> bash bench/gpu_check.sh   (wheels for missing packages may sit in .whl/)
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
START=$SECONDS
step() {  # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/NAME.log and the terminal, say how it ended
  local name=$1 limit=$2; shift 2
  echo "== $name (timeout ${limit} s; at $((SECONDS - START)) s)"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "$name FAILED (timed out after $limit s)"
  elif [ "$rc" -ne 0 ]; then echo "$name FAILED (exit $rc)"; fi
}
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" \
  | tee "$OUT/device.txt"

step 1-cli-run 60 python3 cli.py run --device cuda --scale 8 --no-progress --overwrite --out "$OUT/gpu-run.nc"

step 2a-head-stats-kernel 90 python3 - <<'PY'
# the Triton head-statistics kernel against the PyTorch fallback on CUDA (relative error per output)
import torch
from probes.hooks.head_stats import head_stats
g = torch.Generator().manual_seed(0)
worst = 0.0
for B, H, S, N, causal in [(2, 3, 19, 8, True), (2, 5, 40, 20, False), (8, 128, 256, 64, True)]:
    q, k, q0, k0 = (torch.randn(B, H, S, N, generator=g).cuda() for _ in range(4))
    a = head_stats(q, k, N ** -1.0, causal, q0, k0, backend="triton")
    b = head_stats(q, k, N ** -1.0, causal, q0, k0, backend="torch")
    errs = {f"{n}[{i}]": ((a[n][i] - b[n][i]).norm() / b[n][i].norm()).item() for n in a for i in (0, 1)}
    worst = max(worst, *errs.values())
    print(B, H, S, N, causal, "max relative error", max(errs.values()), "(goal < 1e-5)")
raise SystemExit(0 if worst < 1e-5 else 1)
PY

step 2b-rmsnorm-kernel 60 python3 - <<'PY'
# the fused RMSNorm (Triton) against the PyTorch reference on CUDA, forward and backward
import torch
from parametrizations.rmsnorm import rms_norm
g = torch.Generator().manual_seed(0)
worst = 0.0
for shape, wshape in [((4, 33, 100), (100,)), ((2, 3, 17, 1280), (2, 1280)), ((8192, 1280), (1280,))]:
    x = torch.randn(*shape, generator=g).cuda().requires_grad_(True)
    w = (1 + 0.1 * torch.randn(*wshape, generator=g)).cuda().requires_grad_(True)
    gy = torch.randn(*shape, generator=g).cuda()
    outs = {}
    for backend in ("triton", "torch"):
        y = rms_norm(x, w, backend=backend)
        outs[backend] = (y, *torch.autograd.grad(y, (x, w), gy))
    errs = [((a - b).norm() / b.norm()).item() for a, b in zip(outs["triton"], outs["torch"])]
    worst = max(worst, *errs)
    print(shape, wshape, "max relative error (y, dx, dw)", max(errs), "(goal < 1e-5)")
raise SystemExit(0 if worst < 1e-5 else 1)
PY

# the benchmark table on CUDA: every row at the default sizes, 2 repeats (3 would not fit the 10 minutes)
step 3-bench 240 python3 cli.py bench --device cuda --repeats 2

step 4-reproduce-gpu-slice 120 python3 - "$OUT/reproduce-gpu-slice" <<'PY'
# a slice of `reproduce --preset gpu`: its N-mup job at 3 of its sizes, its 16 seeds, 200 of its 2000 steps, run by
# run_preset into the folder given, then the verdicts of that dataset and the time the whole preset would take
import sys
import time
from dataclasses import replace

from bench.training import preset_flops
from dmft.report import write_report
from probes.grid.reproduce import PRESETS, check_preset_device, job_config, job_seeds, run_preset

gpu = PRESETS["gpu"]
check_preset_device(gpu)
job = next(j for j in gpu.jobs if j.name == "N-mup")
job = replace(job, values=(16, 64, 256))
base = {**gpu.base, "run": {**gpu.base["run"], "steps": 200}, "probes": {**gpu.base["probes"], "every": 100}}
PRESETS["gpu-slice"] = replace(gpu, name="gpu-slice", base=base, jobs=(job,), noise={})

cfg = job_config(PRESETS["gpu-slice"], job)
print(f"slice: {job.name} at N = {list(job.values)}, {job_seeds(gpu, job)} seeds x {cfg.steps} steps, device {cfg.device}")
t0 = time.perf_counter()
run_preset("gpu-slice", sys.argv[1], progress=False)
wall = time.perf_counter() - t0
flops = preset_flops(PRESETS["gpu-slice"])[job.name]
total = sum(preset_flops(gpu).values())
rate = flops / wall
print(f"slice: {wall:.1f} s for {flops:.3g} FLOPs (step_flops_estimate; probes not counted): {rate / 1e12:.2f} TFLOP/s")
print(f"whole gpu preset: {total:.3g} FLOPs, about {total / rate / 3600:.2f} h at this rate (an upper bound if N = 512 runs at a higher rate)")
write_report(sys.argv[1], say=print, preset=PRESETS["gpu-slice"])
PY

echo "== done in $((SECONDS - START)) s; logs and datasets in $OUT"
ls -la "$OUT"

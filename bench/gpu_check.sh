#!/usr/bin/env bash
# GPU check for a lent CUDA machine (not CI): the CUDA path through the CLI, the Triton head-statistics kernel
# against the PyTorch fallback on CUDA tensors, the fused RMSNorm against its reference, the benchmark table on the GPU, and two probed, trained N-sweeps
# (alpha_A = 1 and 1/2, H = 16, 2000 Adam steps, seed ensembles) for the P2 verdicts.
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
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))"
echo "== 1. CLI run on CUDA"
python3 cli.py run --device cuda --scale 8 --no-progress --overwrite --out "$OUT/gpu-run.nc" || echo "CLI RUN FAILED"
echo "== 2a. Triton head-statistics kernel vs the fallback on CUDA (relative error per output)"
python3 - <<'PY' || echo "KERNEL CHECK FAILED"
import torch
from probes.hooks.head_stats import head_stats
g = torch.Generator().manual_seed(0)
for B, H, S, N, causal in [(2, 3, 19, 8, True), (2, 5, 40, 20, False), (8, 128, 256, 64, True)]:
    q, k, q0, k0 = (torch.randn(B, H, S, N, generator=g).cuda() for _ in range(4))
    a = head_stats(q, k, N ** -1.0, causal, q0, k0, backend="triton")
    b = head_stats(q, k, N ** -1.0, causal, q0, k0, backend="torch")
    errs = {f"{n}[{i}]": ((a[n][i] - b[n][i]).norm() / b[n][i].norm()).item() for n in a for i in (0, 1)}
    print(B, H, S, N, causal, "max relative error", max(errs.values()), "(goal < 1e-5)")
PY
echo "== 2a'. fused RMSNorm (Triton) vs the PyTorch reference on CUDA, forward and backward"
python3 - <<'PY' || echo "RMSNORM CHECK FAILED"
import torch
from parametrizations.rmsnorm import rms_norm
g = torch.Generator().manual_seed(0)
for shape, wshape in [((4, 33, 100), (100,)), ((2, 3, 17, 1280), (2, 1280)), ((8192, 1280), (1280,))]:
    x = torch.randn(*shape, generator=g).cuda().requires_grad_(True)
    w = (1 + 0.1 * torch.randn(*wshape, generator=g)).cuda().requires_grad_(True)
    gy = torch.randn(*shape, generator=g).cuda()
    outs = {}
    for backend in ("triton", "torch"):
        y = rms_norm(x, w, backend=backend)
        outs[backend] = (y, *torch.autograd.grad(y, (x, w), gy))
    errs = [((a - b).norm() / b.norm()).item() for a, b in zip(outs["triton"], outs["torch"])]
    print(shape, wshape, "max relative error (y, dx, dw)", max(errs), "(goal < 1e-5)")
PY
echo "== 2b. benchmark table on CUDA"
python3 cli.py bench --device cuda || echo "BENCH FAILED"
echo "== 3. trained N sweeps"
for p in mup mup-sqrt; do
  timeout 400 python3 cli.py sweep --axis N --values 8,16,32,64,128 --seeds 4 --H 16 --L 2 --task vision \
    --param "$p" --optimizer adam --eta0 0.05 --steps 2000 --probe-every 250 --device cuda \
    --out "/tmp/sw/N-$p.nc" > "$OUT/sweep-$p.log" 2>&1 &
done
wait
for p in mup mup-sqrt; do
  tail -3 "$OUT/sweep-$p.log"; cp "/tmp/sw/N-$p.nc" "$OUT/" 2>/dev/null || echo "sweep $p did not finish"
done

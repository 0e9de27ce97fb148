"""Tests of parametrizations.rmsnorm: the fused RMSNorm kernels (forward and backward) against the torch reference.

The Triton kernels run on CPU under the Triton interpreter. TRITON_INTERPRET=1 is read when `@triton.jit`
decorates a kernel (triton 3.9, runtime/jit.py), i.e. when parametrizations.rmsnorm is first imported, so it cannot
be switched on inside a pytest process that may already have imported the module. The kernel outputs (y, dx,
dweight) are therefore computed in one subprocess (this file run as a script, with TRITON_INTERPRET=1 in its
environment) and saved to a file; the tests here rebuild the same inputs and compare with `rms_norm_torch`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from helpers import interpreter_outputs

from parametrizations import rmsnorm
from parametrizations.rmsnorm import EPS, HAS_TRITON, rms_norm, rms_norm_torch

ROOT = Path(__file__).resolve().parents[1]

# float32 tolerance, elementwise: |got - want| <= ATOL * max|want| + RTOL * |want|. Kernel and reference compute the
# same float32 formula with sums in different orders (tree reductions over D <= 1280 terms, and over <= 200 rows
# for dweight), so they differ by a few float32 ulps (u = 6e-8) of the largest terms of each sum; measured: at most
# 0.14 of this tolerance over CASES. An error in the formula (e.g. a dropped term) is O(1) relative.
RTOL = 1e-5
ATOL = 1e-6
# half precision: both round the same float32 values once, so they differ by at most one ulp of the output dtype
# where the float32 values straddle a rounding boundary (fp16: 2^-10; bf16: 2^-7 relative, the interpreter's
# float32 -> bfloat16 cast truncating where the GPU rounds to nearest).
HALF_TOL = {torch.float16: 2.0**-10, torch.bfloat16: 2.0**-7}
# relative (norm) error against float64 for inputs with a large common offset
OFFSET_RTOL = 1e-5

# name: (shape of x, weight kind, dtype, layout, max_block_d)
#   weight kind: None (no gain), "D" (one (D,) gain), "ED" (an (E, D) ensemble gain, E = shape[0]),
#   "D-frozen" (a (D,) gain that needs no gradient: the kernel skips dweight);
#   layout: "contig", "noncontig" (x and g transposed views), "offset" (x = 1e3 + randn).
# D in {16, 48, 100, 1280} (padded to 16, 64, 128, 2048 in the kernel); max_block_d = 32 forces the loop over D
# (100 = 3 x 32 + 4); (4, 50, 100) and (3, 2, 37, 100) give several row blocks per backward program and a ragged
# last program.
CASES: dict[str, tuple[tuple[int, ...], str | None, torch.dtype, str, int]] = {
    "D16-none": ((2, 3, 16), None, torch.float32, "contig", 8192),
    "D16-D": ((2, 3, 16), "D", torch.float32, "contig", 8192),
    "D48-D": ((2, 5, 48), "D", torch.float32, "contig", 8192),
    "D48-ED": ((3, 2, 5, 48), "ED", torch.float32, "contig", 8192),
    "D100-none": ((2, 7, 100), None, torch.float32, "contig", 8192),
    "D100-D": ((4, 50, 100), "D", torch.float32, "contig", 8192),
    "D100-ED": ((3, 2, 37, 100), "ED", torch.float32, "contig", 8192),
    "D100-ED-2d": ((3, 100), "ED", torch.float32, "contig", 8192),
    "D100-D-1d": ((100,), "D", torch.float32, "contig", 8192),
    "D100-D-frozen": ((2, 7, 100), "D-frozen", torch.float32, "contig", 8192),
    "D1280-none": ((1, 2, 1280), None, torch.float32, "contig", 8192),
    "D1280-D": ((1, 3, 1280), "D", torch.float32, "contig", 8192),
    "D1280-ED": ((2, 1, 2, 1280), "ED", torch.float32, "contig", 8192),
    "D48-D-noncontig": ((2, 5, 48), "D", torch.float32, "noncontig", 8192),
    "D100-ED-noncontig": ((3, 2, 7, 100), "ED", torch.float32, "noncontig", 8192),
    "D100-D-offset": ((2, 7, 100), "D", torch.float32, "offset", 8192),
    "D1280-D-offset": ((1, 2, 1280), "D", torch.float32, "offset", 8192),
    "D100-none-loop": ((2, 7, 100), None, torch.float32, "contig", 32),
    "D100-D-loop": ((4, 50, 100), "D", torch.float32, "contig", 32),
    "D100-ED-loop": ((3, 2, 37, 100), "ED", torch.float32, "contig", 32),
    "D100-D-offset-loop": ((2, 7, 100), "D", torch.float32, "offset", 32),
    "D48-D-fp16": ((2, 5, 48), "D", torch.float16, "contig", 8192),
    "D48-ED-bf16": ((3, 2, 5, 48), "ED", torch.bfloat16, "contig", 8192),
}
DETERMINISM_CASE = "D100-ED"  # run twice in the subprocess: bitwise equal dweight (no atomics)


def make_inputs(name: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(x, weight, g) of a CASES entry: x requires grad; weight (requiring grad unless frozen) is 1 + 0.1 randn in
    x's dtype; g is the output gradient, randn, laid out like x."""
    shape, kind, dtype, layout, _ = CASES[name]
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    D = shape[-1]

    def draw() -> torch.Tensor:
        if layout == "noncontig":  # (..., D, S) transposed to (..., S, D): strides (.., 1, S)
            return torch.randn(*shape[:-2], D, shape[-2], generator=gen).transpose(-1, -2)
        return torch.randn(*shape, generator=gen)

    x = draw()
    if layout == "offset":
        x = x + 1e3
    g = draw()
    weight = None
    if kind is not None:
        w_shape = (shape[0], D) if kind == "ED" else (D,)
        weight = (1 + 0.1 * torch.randn(*w_shape, generator=gen)).to(dtype)
        weight.requires_grad_(kind != "D-frozen")
    x = x.to(dtype).requires_grad_()
    g = g.to(dtype)
    assert (layout == "noncontig") != x.is_contiguous()
    return x, weight, g


def forward_backward(fn, x: torch.Tensor, weight: torch.Tensor | None, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"y": fn(x, weight), "dx": d<y, g>/dx, "dw": d<y, g>/dweight (only when weight requires grad)}."""
    y = fn(x, weight)
    inputs = [x] + ([weight] if weight is not None and weight.requires_grad else [])
    grads = torch.autograd.grad(y, inputs, g)
    out = {"y": y.detach(), "dx": grads[0]}
    if len(grads) > 1:
        out["dw"] = grads[1]
    return out


def reference64(x: torch.Tensor, weight: torch.Tensor | None, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same quantities in float64, by autograd through the textbook formula (independent of rms_norm_torch)."""
    x64 = x.detach().double().requires_grad_()
    w64 = weight.detach().double().requires_grad_(weight.requires_grad) if weight is not None else None
    y = x64 / torch.sqrt((x64 * x64).sum(-1, keepdim=True) / x.shape[-1] + EPS)
    if w64 is not None:
        y = y * (w64 if w64.ndim == 1 else w64.view(w64.shape[0], *([1] * (x.ndim - 2)), -1))
    return forward_backward(lambda a, b: y, x64, w64, g.double())


def assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], rtol: float, atol: float) -> None:
    """Same keys, shapes and dtypes; elementwise |got - want| <= atol * max|want| + rtol * |want|."""
    assert set(got) == set(want)
    for k, b in want.items():
        a = got[k]
        assert a.shape == b.shape and a.dtype == b.dtype, (k, a.shape, b.shape, a.dtype, b.dtype)
        scale = b.double().abs().max().item()
        torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=atol * scale, msg=lambda m, k=k: f"{k}: {m}")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


# ------------------------------------------------------------------------------- subprocess (interpreter)
def _interpreted_main(path: str) -> None:
    """Run under TRITON_INTERPRET=1: save the Triton y, dx, dweight of every case (and a repeat of one)."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    results = {}
    for name, (_, _, _, _, max_block_d) in CASES.items():
        x, weight, g = make_inputs(name)

        def fused(a, b, m=max_block_d):
            return rmsnorm.rms_norm_triton(a, b, max_block_d=m)

        results[name] = forward_backward(fused, x, weight, g)
        # the kernel path was taken: the output's grad_fn is the fused autograd Function
        assert type(fused(x, weight).grad_fn).__name__ == "_RMSNormFnBackward"
    x, weight, g = make_inputs(DETERMINISM_CASE)
    results["repeat"] = forward_backward(lambda a, b: rms_norm(a, b, backend="triton"), x, weight, g)
    torch.save(results, path)


@pytest.fixture(scope="module")
def triton_out(tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    """Triton (interpreter) outputs {"y", "dx", "dw"} keyed like CASES, plus "repeat" (DETERMINISM_CASE again)."""
    if not HAS_TRITON:
        pytest.skip("triton cannot be imported: the Triton kernels cannot be run under its interpreter")
    path = tmp_path_factory.mktemp("rmsnorm") / "triton_out.pt"
    return interpreter_outputs(__file__, path)


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", list(CASES))
def test_triton_matches_torch(name, triton_out):
    """Forward y, dx and dweight of the fused kernels equal the torch reference (float32 tolerance, or one ulp of a
    half-precision output)."""
    x, weight, g = make_inputs(name)
    want = forward_backward(rms_norm_torch, x, weight, g)
    assert set(want) == ({"y", "dx"} if weight is None or not weight.requires_grad else {"y", "dx", "dw"})
    dtype = CASES[name][2]
    tol = HALF_TOL.get(dtype, 0.0)
    assert_close(triton_out[name], want, rtol=max(RTOL, tol), atol=max(ATOL, tol))


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2] == torch.float32])
def test_torch_reference_matches_float64(name):
    """rms_norm_torch (and so the kernels, by the test above) against the formula in float64; ensemble rows use
    their member's gain. Inputs with a large common offset (x = 1e3 + randn, so x_hat ~ 1 and dx ~ 1e-3) are
    held to the same relative accuracy."""
    x, weight, g = make_inputs(name)
    got = forward_backward(rms_norm_torch, x, weight, g)
    want = reference64(x, weight, g)
    for k in want:
        assert got[k].dtype == torch.float32
        assert rel_err(got[k], want[k]) < OFFSET_RTOL, k


@pytest.mark.parametrize("name", [n for n in CASES if "offset" in n])
def test_large_offset_relative_accuracy(name, triton_out):
    """x = 1e3 + randn: the fused y, dx, dweight are accurate to ~1e-5 relative (in norm) against float64. The sum
    of squares has no cancellation (non-negative terms), so a naive float32 sum is fine here; what could go wrong is
    the backward's x_hat * mean(gw x_hat) term, which nearly cancels gw's mean when x_hat ~ 1."""
    x, weight, g = make_inputs(name)
    assert x.mean() > 999 and 0.5 < x.std() < 2
    want = reference64(x, weight, g)
    got = triton_out[name]
    for k in want:
        assert rel_err(got[k], want[k]) < OFFSET_RTOL, (k, rel_err(got[k], want[k]))


def test_dweight_is_deterministic(triton_out):
    """Two backward passes give bitwise equal dweight (per-program partial sums, no atomics) and dx."""
    for k in ("y", "dx", "dw"):
        assert torch.equal(triton_out["repeat"][k], triton_out[DETERMINISM_CASE][k]), k


def test_auto_on_cpu_uses_torch(monkeypatch):
    """backend="auto" with CPU tensors is the torch reference (no interpreter needed: the fused path is never
    entered), gradients included; "torch" is the same."""

    def fail(*args, **kwargs):
        raise AssertionError("the fused path was taken for CPU tensors")

    monkeypatch.setattr(rmsnorm, "rms_norm_triton", fail)
    x, weight, g = make_inputs("D48-ED")
    want = forward_backward(rms_norm_torch, x, weight, g)
    for backend in ("auto", "torch"):
        got = forward_backward(lambda a, b, backend=backend: rms_norm(a, b, backend=backend), x, weight, g)
        for k in want:
            assert torch.equal(got[k], want[k]), (backend, k)
    assert rms_norm(x, weight).grad_fn is not None
    assert type(rms_norm(x, weight).grad_fn).__name__ != "_RMSNormFnBackward"


@pytest.mark.parametrize(
    "x_shape,w_shape",
    [
        ((2, 3, 16), (15,)),
        ((2, 3, 16), (3, 16)),
        ((2, 3, 16), (2, 3, 16)),
        ((16,), (1, 16)),
        ((2, 3, 16), (2, 8)),
        ((2, 3, 16), ()),
    ],
)
@pytest.mark.parametrize("backend", ["torch", "auto", "triton"])
def test_bad_weight_shape(x_shape, w_shape, backend):
    """A weight that is neither (D,) nor (E, D) with x (E, ..., D): one-line ValueError naming both shapes (raised
    before any kernel, so also for backend="triton" here)."""
    with pytest.raises(ValueError) as info:
        rms_norm(torch.randn(x_shape), torch.ones(w_shape), backend=backend)
    msg = str(info.value)
    assert "\n" not in msg and f"weight {tuple(w_shape)}" in msg and f"x {tuple(x_shape)}" in msg, msg


def test_other_errors(monkeypatch):
    x = torch.randn(2, 3, 16)
    with pytest.raises(ValueError, match="backend"):
        rms_norm(x, backend="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if HAS_TRITON:
        with pytest.raises(ValueError, match="TRITON_INTERPRET"):
            rms_norm(x, backend="triton")


if __name__ == "__main__":
    _interpreted_main(sys.argv[1])

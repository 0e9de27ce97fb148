"""Tests of probes.hooks.head_stats: mean and M2 over heads of attention logits / probabilities per (b, s, s').

The Triton kernels run on CPU under the Triton interpreter. TRITON_INTERPRET=1 is read when `@triton.jit`
decorates a kernel (triton 3.9, runtime/jit.py), i.e. when probes.hooks.head_stats is first imported, so it cannot be
switched on inside a pytest process that may already have imported the module. The kernel outputs are
therefore computed in one subprocess (this file run as a script, with TRITON_INTERPRET=1 in its environment)
and saved to a file; the tests here load them and compare with the fallback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from helpers import interpreter_outputs

from probes.hooks.head_stats import (
    HAS_TRITON,
    STAT_NAMES,
    head_stats,
    head_stats_torch,
    reference_logits,
    stacked,
)

ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-5  # float32 relative error, ||a - b|| / ||b||, per output
STAB_RTOL = 1e-4  # large-offset input: Welford / two-pass M2 against float64

# (B, H, S, N, causal, with reference q0/k0, dtype): ragged head counts (H = 1, 2, 3, 5, 8 as in layer-wise
# scaled models whose layers differ in H), S below / equal to / not a multiple of the 32-wide block, N padded
# to 16 or 32 inside the kernel.
CASES = {
    "H1-S5-N4": (2, 1, 5, 4, False, False, torch.float32),
    "H1-S19-causal-ref": (2, 1, 19, 8, True, True, torch.float32),
    "H3-S19-causal-ref": (2, 3, 19, 8, True, True, torch.float32),
    "H5-S16-ref": (2, 5, 16, 4, False, True, torch.float32),
    "H8-S40-causal-ref": (2, 8, 40, 8, True, True, torch.float32),
    "H8-S40-ref": (2, 8, 40, 4, False, True, torch.float32),
    "H2-S19-N20-causal-ref": (1, 2, 19, 20, True, True, torch.float32),
    "H3-S19-fp16-causal-ref": (2, 3, 19, 8, True, True, torch.float16),
}


def make_inputs(
    B: int, H: int, S: int, N: int, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, ...]:
    """q, k, q0, k0, each (B, H, S, N) non-contiguous (a (B, S, H, N) tensor transposed, as after a head split);
    q0, k0 are q, k plus an O(1) perturbation."""
    g = torch.Generator().manual_seed(seed)
    q, k, dq, dk = (torch.randn(B, S, H, N, generator=g) for _ in range(4))  # (B, S, H, N)
    out = (q, k, q + 0.5 * dq, k + 0.5 * dk)
    return tuple(t.to(dtype).transpose(1, 2) for t in out)  # (B, H, S, N)


def offset_inputs(
    B: int = 2, H: int = 8, S: int = 19, N: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """q, k, scale with A = 1001.3 (common to all heads) + a per-head part of spread ~1. All entries are
    multiples of 1/4 and scale = 1/8, so A is exact in float32: the only rounding left is the variance's own."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-12, 13, (B, H, S, N), generator=g).float() / 4
    k = torch.randint(-12, 13, (B, H, S, N), generator=g).float() / 4
    q[..., 0] = 89.5  # scale * 89.5^2 = 1001.28
    k[..., 0] = 89.5
    return q, k, 0.125


def reference(q, k, scale, causal, q0=None, k0=None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Direct float64 (mean, M2) over heads via torch.var, each (B, S, S), masked entries 0."""
    S = q.shape[2]
    masked = torch.ones(S, S, dtype=torch.bool).triu(1) if causal else torch.zeros(S, S, dtype=torch.bool)

    def logits_probs(q, k):
        A = scale * (q.double() @ k.double().transpose(-1, -2))  # (B, H, S, S)
        return A.masked_fill(masked, 0.0), torch.softmax(A.masked_fill(masked, float("-inf")), dim=-1)

    def stats(x):  # x: (B, H, S, S)
        return x.mean(dim=1), x.var(dim=1, unbiased=False) * x.shape[1]

    A, P = logits_probs(q, k)
    out = {"A": stats(A), "P": stats(P)}
    if q0 is not None:
        A0, P0 = logits_probs(q0, k0)
        out["dA"], out["dP"] = stats(A - A0), stats(P - P0)
    return out


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64; when b == 0, 0 if a == 0 exactly, else inf."""
    a, b = a.double(), b.double()
    if b.norm() == 0:
        return 0.0 if a.norm() == 0 else float("inf")
    return ((a - b).norm() / b.norm()).item()


def case_inputs(name: str):
    """(q, k, scale, causal, q0, k0) of a CASES entry."""
    B, H, S, N, causal, ref, dtype = CASES[name]
    q, k, q0, k0 = make_inputs(B, H, S, N, seed=len(name), dtype=dtype)
    return q, k, N**-0.5, causal, (q0 if ref else None), (k0 if ref else None)


def assert_close(got: dict, want: dict, rtol: float) -> None:
    assert set(got) == set(want)
    for name in want:
        for i, what in enumerate(("mean", "m2")):
            assert got[name][i].dtype == torch.float32 and got[name][i].shape == want[name][i].shape
            err = rel_err(got[name][i], want[name][i])
            assert err < rtol, f"{name} {what}: relative error {err:.3g} >= {rtol}"


def check_mask_and_rows(out: dict, causal: bool) -> None:
    """Masked entries exactly 0 in every output; the head-mean of P sums to 1 over s'."""
    S = out["A"][0].shape[-1]
    masked = torch.ones(S, S, dtype=torch.bool).triu(1)
    for name, (mean, m2) in out.items():
        if causal:
            assert (mean[:, masked] == 0).all() and (m2[:, masked] == 0).all(), name
    row_sums = out["P"][0].double().sum(dim=-1)  # (B, S)
    assert torch.allclose(row_sums, torch.ones_like(row_sums), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------- subprocess (interpreter)
def _interpreted_main(path: str) -> None:
    """Run under TRITON_INTERPRET=1: save the Triton outputs of every case and of the offset inputs."""
    assert os.environ.get("TRITON_INTERPRET") == "1"
    results = {}
    for name in CASES:
        q, k, scale, causal, q0, k0 = case_inputs(name)
        results[name] = head_stats(q, k, scale, causal, q0, k0, backend="triton")
    q, k, scale = offset_inputs()
    for causal in (False, True):
        results[f"offset-causal={causal}"] = head_stats(q, k, scale, causal, backend="triton")
    torch.save(results, path)


@pytest.fixture(scope="module")
def triton_out(tmp_path_factory) -> dict:
    """Triton (interpreter) outputs keyed like CASES, plus "offset-causal=False/True"."""
    if not HAS_TRITON:
        pytest.skip("triton cannot be imported: the Triton kernels cannot be run under its interpreter")
    path = tmp_path_factory.mktemp("head_stats") / "triton_out.pt"
    return interpreter_outputs(__file__, path)


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("H,S,N", [(1, 5, 4), (3, 16, 8), (8, 19, 4)])
def test_fallback_matches_float64(H, S, N, causal, with_ref):
    q, k, q0, k0 = make_inputs(2, H, S, N, seed=H * S + N)
    if not with_ref:
        q0 = k0 = None
    got = head_stats_torch(q, k, N**-0.5, causal, q0, k0)
    assert_close(got, reference(q, k, N**-0.5, causal, q0, k0), RTOL)
    assert set(got) == set(STAT_NAMES if with_ref else STAT_NAMES[:2])
    check_mask_and_rows(got, causal)
    assert_close(head_stats(q, k, N**-0.5, causal, q0, k0), got, 1e-12)  # "auto" on CPU = torch


@pytest.mark.parametrize("name", list(CASES))
def test_triton_matches_fallback(name, triton_out):
    q, k, scale, causal, q0, k0 = case_inputs(name)
    assert_close(triton_out[name], head_stats_torch(q, k, scale, causal, q0, k0), RTOL)


@pytest.mark.parametrize("name", list(CASES))
def test_triton_mask_and_rows(name, triton_out):
    check_mask_and_rows(triton_out[name], causal=CASES[name][4])


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_large_offset_is_stable(backend, causal, request):
    q, k, scale = offset_inputs()
    A = scale * (q.double() @ k.double().transpose(-1, -2))  # (B, H, S, S)
    assert torch.equal((scale * (q @ k.transpose(-1, -2))).double(), A)  # exact in float32
    assert A.mean() > 900 and 0.5 < A.std(dim=1).mean() < 2  # offset ~1e3, spread ~1 across heads
    want = reference(q, k, scale, causal)
    if backend == "torch":
        got = head_stats_torch(q, k, scale, causal)
    else:
        got = request.getfixturevalue("triton_out")[f"offset-causal={causal}"]
    err = rel_err(got["A"][1], want["A"][1])
    assert err < STAB_RTOL, f"M2 of A: relative error {err:.3g}"
    assert rel_err(got["A"][0], want["A"][0]) < RTOL
    # the naive float32 E[x^2] - E[x]^2 on the same (exact) A is off by far more: the test detects it
    A32 = A.float()
    naive = (A32.square().mean(dim=1) - A32.mean(dim=1).square()) * A.shape[1]  # (B, S, S)
    if causal:
        naive = naive.masked_fill(torch.ones(A.shape[-1], A.shape[-1], dtype=torch.bool).triu(1), 0.0)
    assert rel_err(naive, want["A"][1]) > 100 * STAB_RTOL


def test_errors(monkeypatch):
    q, k, q0, k0 = make_inputs(2, 3, 5, 4)
    with pytest.raises(ValueError, match="ndim"):
        head_stats(q[0], k[0], 1.0, False)
    with pytest.raises(ValueError, match="same shape"):
        head_stats(q, k[:, :2], 1.0, False)
    with pytest.raises(ValueError, match="same shape"):
        head_stats(q, k[..., :3], 1.0, False)
    with pytest.raises(ValueError, match="q0"):
        head_stats(q, k, 1.0, False, q0[:, :, :4], k0)
    with pytest.raises(ValueError, match="both"):
        head_stats(q, k, 1.0, False, q0, None)
    with pytest.raises(ValueError, match="backend"):
        head_stats(q, k, 1.0, False, backend="cuda")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="triton"):
        head_stats(q, k, 1.0, False, backend="triton")


if __name__ == "__main__":
    _interpreted_main(sys.argv[1])


def previous_fallback(q, k, scale, causal, q0, k0):
    """The torch fallback as it was before the cached reference (masked_fill, out-of-place two-pass)."""

    def logits_probs(q, k):
        A = scale * torch.matmul(q, k.transpose(-1, -2))
        if not causal:
            return A, torch.softmax(A, dim=-1)
        masked = torch.ones(A.shape[-1], A.shape[-1], dtype=torch.bool).triu(1)
        return A.masked_fill(masked, 0.0), torch.softmax(A.masked_fill(masked, float("-inf")), dim=-1)

    def two_pass(x):
        mean = x.mean(dim=1)
        return mean, (x - mean.unsqueeze(1)).square().sum(dim=1)

    (A, P), (A0, P0) = logits_probs(q, k), logits_probs(q0, k0)
    return {"A": two_pass(A), "P": two_pass(P), "dA": two_pass(A - A0), "dP": two_pass(P - P0)}


@pytest.mark.parametrize("causal", [False, True])
def test_cached_reference_equals_recomputed(causal):
    """ref = reference_logits(q0, k0) and the q0, k0 path give the previous fallback's statistics bit for bit, and
    `stacked` returns the buffer they are views of (the probe recorder keeps A(0), P(0) from step 0 and reads the stats this way)."""
    q, k, q0, k0 = make_inputs(3, 4, 12, 8, seed=7)
    scale = 8**-0.5
    want = previous_fallback(q, k, scale, causal, q0, k0)
    got = head_stats_torch(q, k, scale, causal, ref=reference_logits(q0, k0, scale, causal))
    again = head_stats_torch(q, k, scale, causal, q0, k0)
    for name in STAT_NAMES:
        for a, b, c in zip(got[name], want[name], again[name]):
            assert torch.equal(a, b) and torch.equal(c, b), name
    buf = stacked(got)
    assert buf.shape == (4, 2, 3, 12, 12) and buf.data_ptr() == got["A"][0].data_ptr()
    assert torch.equal(buf, torch.stack([torch.stack(want[n]) for n in STAT_NAMES]))
    with pytest.raises(ValueError, match="not both"):
        head_stats_torch(q, k, scale, causal, q0, k0, ref=reference_logits(q0, k0, scale, causal))

"""Tests for probes.experiment.batches.BatchStream: the same batches as per-step split.batch, held on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes.experiment.batches import BatchStream
from probes.experiment.data import ImageSplit, Split, TokenSplit, synthetic_vision

STEPS = 10
CHUNKS = (1, 3, 4, 16)  # 3 and 4 do not divide STEPS; 16 > STEPS


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def token_split(dtype: str) -> TokenSplit:
    tokens = np.random.default_rng(0).integers(0, 250 if dtype == "uint8" else 60_000, 500).astype(dtype)
    return TokenSplit(tokens, seq_len=8)


def hwc_split(with_index: bool) -> ImageSplit:
    rng = np.random.default_rng(1)
    n = 40
    images = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)
    offset = rng.uniform(100, 150, n).astype(np.float32)
    scale = rng.uniform(40, 70, n).astype(np.float32)
    index = np.sort(rng.permutation(n)[:25]) if with_index else None
    return ImageSplit(images, labels, offset, scale, patch=4, layout="hwc", index=index)


def chw_split(with_index: bool) -> ImageSplit:
    split = synthetic_vision(n_classes=3, image_size=8, channels=2, patch=4, n_train=30, n_heldout=3).train
    if with_index:
        split.index = np.arange(3, 30, 2)
    return split


SPLITS = {
    "tokens-uint8": lambda: token_split("uint8"),
    "tokens-uint16": lambda: token_split("uint16"),
    "tokens-int64": lambda: token_split("int64"),
    "chw": lambda: chw_split(False),
    "chw-index": lambda: chw_split(True),
    "hwc": lambda: hwc_split(False),
    "hwc-index": lambda: hwc_split(True),
}


def reference(split: Split, batch_size: int, seed: int, steps: int = STEPS) -> list[tuple[torch.Tensor, ...]]:
    """The per-step sequence the stream must reproduce."""
    g = gen(seed)
    return [split.batch(batch_size, g) for _ in range(steps)]


def assert_same(stream: BatchStream, ref: list[tuple[torch.Tensor, ...]], device: str = "cpu") -> None:
    for step, (rx, ry) in enumerate(ref):
        x, y = stream.next()
        assert x.device.type == device and y.device.type == device
        assert x.dtype == rx.dtype and y.dtype == ry.dtype and x.shape == rx.shape and y.shape == ry.shape
        assert x.is_contiguous() and y.is_contiguous()
        assert torch.equal(x.cpu(), rx) and torch.equal(y.cpu(), ry), f"step {step} differs"


@pytest.mark.parametrize("hi", [7, 50_000, 5_000_000_000])
@pytest.mark.parametrize("threads", [1, 2])
def test_one_randint_call_equals_per_step_calls(hi: int, threads: int) -> None:
    """BatchStream relies on this: torch's CPU generator fills integer tensors serially."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        b, k = 64, 300
        at_once = torch.randint(0, hi, (k * b,), generator=gen(5))
        g = gen(5)
        per_step = torch.cat([torch.randint(0, hi, (b,), generator=g) for _ in range(k)])
    finally:
        torch.set_num_threads(old)
    assert torch.equal(at_once, per_step)


@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("name", list(SPLITS))
def test_same_sequence_as_per_step_batches(name: str, chunk: int) -> None:
    split = SPLITS[name]()
    stream = BatchStream(split, 5, gen(11), "cpu", chunk=chunk)
    assert stream.kind == ("tokens" if name.startswith("tokens") else "images")
    assert_same(stream, reference(split, 5, seed=11))


def test_batch_size_one() -> None:
    split = hwc_split(True)
    assert_same(BatchStream(split, 1, gen(2), torch.device("cpu"), chunk=4), reference(split, 1, seed=2))


def test_image_chunk_gathers_unique_rows_only() -> None:
    split = hwc_split(True)  # 25 rows, so 16*5 draws repeat rows
    stream = BatchStream(split, 5, gen(3), "cpu", chunk=16)
    stream.next()
    images = stream._data["images"]
    assert images.dtype == torch.uint8 and len(images) <= len(split) < 16 * 5 and images.shape[1:] == (8, 8, 3)


def test_token_chunk_keeps_small_dtype() -> None:
    stream = BatchStream(token_split("uint8"), 5, gen(3), "cpu", chunk=4)
    stream.next()
    assert stream._data["windows"].dtype == torch.uint8 and stream._data["windows"].shape == (20, 9)


class Doubled(Split):
    """A split BatchStream does not know: exercises the per-step fallback."""

    def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(batch_size, 3, generator=generator)
        return x, 2 * x


def test_generic_split_falls_back_to_per_step_batches() -> None:
    stream = BatchStream(Doubled(), 4, gen(7), "cpu", chunk=8)
    assert stream.kind == "generic"
    assert_same(stream, reference(Doubled(), 4, seed=7))


def test_overridden_batch_uses_fallback() -> None:
    class Custom(TokenSplit):
        def batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            x, y = super().batch(batch_size, generator)
            return x.flip(1), y

    split = Custom(np.arange(100), seq_len=4)
    stream = BatchStream(split, 3, gen(1), "cpu")
    assert stream.kind == "generic"
    assert_same(stream, reference(split, 3, seed=1, steps=4))


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": -1}, {"chunk": 0}])
def test_bad_sizes_raise(kwargs: dict[str, int]) -> None:
    args = {"batch_size": 4, "chunk": 8} | kwargs
    with pytest.raises(ValueError, match="must be >= 1"):
        BatchStream(token_split("uint8"), generator=gen(0), device="cpu", **args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("chunk", [1, 3, 16])
@pytest.mark.parametrize("name", list(SPLITS))
def test_cuda_matches_cpu_sequence(name: str, chunk: int) -> None:
    split = SPLITS[name]()
    assert_same(BatchStream(split, 5, gen(11), "cuda", chunk=chunk), reference(split, 5, seed=11), "cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generic_fallback() -> None:
    assert_same(BatchStream(Doubled(), 4, gen(7), "cuda"), reference(Doubled(), 4, seed=7), "cuda")

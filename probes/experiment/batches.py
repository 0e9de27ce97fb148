"""Training batches drawn ahead in chunks and kept on the device (see :class:`BatchStream`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from probes.experiment.data import ImageSplit, Split, TokenSplit, patchify

__all__ = ["BatchStream"]

# numpy dtypes that torch holds natively and whose values survive `.to(torch.int64)` unchanged
_NATIVE_INT = (np.uint8, np.int8, np.int16, np.int32, np.int64)


def _compact_tokens(a: np.ndarray) -> np.ndarray:
    """Return ``a`` in the smallest torch-friendly dtype whose int64 conversion equals ``a.astype(int64)``."""
    if a.dtype in _NATIVE_INT:
        return a
    if a.dtype == np.uint16:
        return a.astype(np.int32)
    return a.astype(np.int64)  # uint32/uint64/float/bool: exactly what TokenSplit.batch does


class BatchStream:
    """Training batches for a run, drawn ahead in chunks and kept on `device`.

    Yields exactly the same (x, y) sequence as calling split.batch(batch_size, generator) once per step
    (same generator, same order), but: the random indices for `chunk` steps are drawn at once from the
    generator (in the same order as per-step draws would), the source data those steps need is gathered once
    and moved to the device in one (pinned, non-blocking on CUDA) copy per chunk, and each step's batch is an
    indexing/standardising/patchifying operation on the device. No host<->device sync per step.

    One ``randint`` call for ``chunk * batch_size`` indices gives the same numbers as ``chunk`` calls for
    ``batch_size`` each: torch's CPU generator fills integer tensors serially (checked in the tests).  The
    generator runs up to ``chunk - 1`` steps ahead of the per-step sequence, so it must not be used for
    anything else while the stream is in use.  Splits other than (non-overridden) :class:`TokenSplit` and
    :class:`ImageSplit` fall back to ``split.batch`` per step plus a non-blocking copy.
    """

    def __init__(
        self, split: Split, batch_size: int, generator: torch.Generator, device: torch.device | str, chunk: int = 256
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: must be >= 1")
        if chunk < 1:
            raise ValueError(f"chunk={chunk}: must be >= 1")
        self.split, self.batch_size, self.generator, self.chunk = split, batch_size, generator, chunk
        self.device = torch.device(device)
        self._pin = self.device.type == "cuda"
        if isinstance(split, TokenSplit) and type(split).batch is TokenSplit.batch:
            self.kind = "tokens"
        elif (
            isinstance(split, ImageSplit)
            and type(split).batch is ImageSplit.batch
            and type(split)._get is ImageSplit._get
        ):
            self.kind = "images"
        else:
            self.kind = "generic"
        self._data: dict[str, Tensor] = {}
        self.index: Tensor | None = None  # images: the positions in `split` of the last batch's rows (int64 [B])
        self._step = chunk  # steps of the current chunk already returned; == chunk means "draw a new one"

    def _to_device(self, t: Tensor) -> Tensor:
        """Return CPU tensor ``t`` on the device (pinned + non-blocking copy on CUDA)."""
        if self._pin:
            t = t.pin_memory()
        return t.to(self.device, non_blocking=self._pin)

    def _upload(self, a: np.ndarray) -> Tensor:
        """Return host array ``a`` as a tensor on the device (pinned + non-blocking copy on CUDA)."""
        return self._to_device(torch.from_numpy(np.ascontiguousarray(a)))

    def _draw(self, high: int) -> np.ndarray:
        """Return the ``chunk * batch_size`` indices in ``[0, high)`` that ``chunk`` per-step draws would give."""
        n = self.chunk * self.batch_size
        return torch.randint(0, high, (n,), generator=self.generator).numpy()

    def _refill(self) -> None:
        """Draw the next chunk's indices, gather the source data they use and move it to the device."""
        s = self.split
        if self.kind == "tokens":
            assert isinstance(s, TokenSplit)
            starts = self._draw(len(s.tokens) - s.seq_len)
            windows = np.asarray(s.tokens[starts[:, None] + np.arange(s.seq_len + 1)])
            self._data = {"windows": self._upload(_compact_tokens(windows))}
        else:
            assert isinstance(s, ImageSplit)
            idx = self._draw(len(s))
            rows = idx if s.index is None else s.index[idx]
            uniq, inv = np.unique(rows, return_inverse=True)
            self._data = {
                "images": self._upload(np.asarray(s.images[uniq])),
                "inv": self._upload(inv.reshape(-1).astype(np.int64)),
                "off": self._upload(np.asarray(s.offset[rows])),
                "scl": self._upload(np.asarray(s.scale[rows])),
                "y": self._upload(np.asarray(s.labels[rows]).astype(np.int64)),
                "pos": self._upload(idx.astype(np.int64)),
            }
        self._step = 0

    def next(self) -> tuple[Tensor, Tensor]:
        """Return the next training batch ``(x, y)`` on the device, equal to the next ``split.batch`` call.

        Tokens: ``x``, ``y`` int64 ``[B, seq_len]``; images: ``x`` ``[B, S, D_in]`` (float32 for float32
        offsets/scales), ``y`` int64 ``[B]``, and ``self.index`` (int64 ``[B]``, on the device) then holds the
        positions in the split of its rows (``split.at(self.index)`` gives the same batch); other splits: whatever
        ``split.batch`` returns, on the device."""
        if self.kind == "generic":
            x, y = self.split.batch(self.batch_size, self.generator)
            return self._to_device(x), self._to_device(y)
        if self._step == self.chunk:
            self._refill()
        lo, hi = self._step * self.batch_size, (self._step + 1) * self.batch_size
        self._step += 1
        d = self._data
        if self.kind == "tokens":
            w = d["windows"][lo:hi].to(torch.int64)
            return w[:, :-1].contiguous(), w[:, 1:].contiguous()
        s = self.split
        assert isinstance(s, ImageSplit)
        x = d["images"].index_select(0, d["inv"][lo:hi]).to(torch.float32)
        if s.layout == "hwc":
            x = x.permute(0, 3, 1, 2)
        off, scl = d["off"][lo:hi].view(-1, 1, 1, 1), d["scl"][lo:hi].view(-1, 1, 1, 1)
        self.index = d["pos"][lo:hi]
        return patchify((x - off) / scl, s.patch), d["y"][lo:hi]

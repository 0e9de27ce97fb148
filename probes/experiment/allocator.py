"""glibc's allocator during a training loop: keep freed blocks for reuse, hand them back when the run ends.

By default glibc serves a block of more than 128 KiB (a threshold it raises as large blocks are freed, up to 32 MiB)
by mmap and returns it to the system on free, and it trims the heap top above twice that threshold; a training step
that allocates and frees the same large activations every step then page-faults them in fresh every step. A seed
ensemble's activations are E times a single model's (E = 8 at the LM's default size: 16 MiB logits), so each of its
large element-wise ops paid about 2x in page faults against a member-sized op (measured: `a - b` on (8, 32, 64, 256)
float32 12.8 ms into a fresh tensor, 5.8 ms into a reused one). `reuse_freed_memory()` sets a high mmap and trim
threshold for the rest of the process (values never change; only where the memory comes from), and
`hand_back_freed_memory()` (malloc_trim) returns the free heap to the system, so that `free_bytes` (the ensemble's
group sizing, `probes.experiment.ensemble`) reads the same free memory after a run as before it. Both are no-ops
where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["MMAP_THRESHOLD_BYTES", "hand_back_freed_memory", "reuse_freed_memory"]

MMAP_THRESHOLD_BYTES = 256 << 20  # blocks up to 256 MiB come from the heap (glibc default: 128 KiB, dynamic to 32 MiB)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_FALLBACK_MMAP_THRESHOLD = 32 << 20  # the largest threshold every glibc accepts (HEAP_MAX_SIZE / 2)
_state: dict[str, object] = {}


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (has mallopt and malloc_trim), else None; looked up once."""
    if "libc" not in _state:
        libc = None
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                libc = lib
        except OSError:
            pass
        _state["libc"] = libc
    return _state["libc"]  # type: ignore[return-value]


def reuse_freed_memory() -> bool:
    """Keep freed blocks (up to MMAP_THRESHOLD_BYTES) in the heap for reuse instead of unmapping or trimming them,
    for the rest of the process (set once). Returns True when the settings are in force (glibc)."""
    if "set" in _state:
        return bool(_state["set"])
    libc = _glibc()
    ok = False
    if libc is not None:
        ok = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) or bool(
            libc.mallopt(_M_MMAP_THRESHOLD, _FALLBACK_MMAP_THRESHOLD)
        )
        ok = bool(libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD_BYTES)) and ok
    _state["set"] = ok
    return ok


def hand_back_freed_memory() -> None:
    """Return the free part of the heap to the system (malloc_trim(0)); a no-op off glibc."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)

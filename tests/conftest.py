"""Test-wide settings: the torch intra-op threads, from the environment variable `DMFT_PROBE_TEST_THREADS`
(a positive integer, default 1), for torch.set_num_threads and OMP_NUM_THREADS. One thread by default: the
models here are tiny, and on a shared 2-core machine two threads per process oversubscribe the cores and slow
small kernels by one to two orders of magnitude. `DMFT_PROBE_TEST_THREADS=2` runs the suite with two threads
(no test may depend on the thread count: none sits on a floating-point edge). An OMP_NUM_THREADS already set
is kept unless DMFT_PROBE_TEST_THREADS is given. Subprocesses (CLI tests) and notebook kernels inherit
OMP_NUM_THREADS."""

import os

THREADS_ENV = "DMFT_PROBE_TEST_THREADS"


def threads_from_env(environ=os.environ) -> int:
    """The thread count the suite runs with: DMFT_PROBE_TEST_THREADS as a positive integer, 1 when it is unset
    or empty; a ValueError naming the variable otherwise."""
    text = environ.get(THREADS_ENV, "").strip()
    if not text:
        return 1
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {text!r}")
    return int(text)


THREADS = threads_from_env()
if os.environ.get(THREADS_ENV, "").strip():
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
else:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))

import torch  # noqa: E402

torch.set_num_threads(THREADS)

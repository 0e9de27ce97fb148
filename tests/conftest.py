"""Test-wide settings: one intra-op thread. The models here are tiny; on a shared 2-core machine two threads
per process oversubscribe the cores and slow small kernels by one to two orders of magnitude. Subprocesses
(CLI tests) and notebook kernels inherit OMP_NUM_THREADS."""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

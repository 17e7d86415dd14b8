"""Shared test settings.

One intra-op thread by default: the suite's models are tiny, and on a 2-core machine that
also runs DataLoader workers or DDP processes, more threads oversubscribe the cores and slow
everything down many-fold. MAMMOSEG_TEST_THREADS overrides it.
"""

import os

_threads = os.environ.get("MAMMOSEG_TEST_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", _threads)

import torch  # noqa: E402

torch.set_num_threads(int(_threads))

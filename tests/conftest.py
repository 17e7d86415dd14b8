"""Shared test settings: small thread counts so the suite behaves on 2-core machines."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

torch.set_num_threads(2)

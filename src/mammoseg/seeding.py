"""Every seed and random-generator state of mammoseg, in one module.

Everything random derives from one run seed through `derive_seed(seed, tag, ...)`: the
folds, each fold's model initialisation, the data order, each sample's augmentation and the
dropout of each epoch. The tags below keep those uses apart. `rng_state` / `set_rng_state`
capture and restore the global generators (torch CPU and CUDA, numpy, Python) in a form a
`weights_only` checkpoint can hold, so a resumed fold continues exactly.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

#: Tags that keep the seeds of different uses of the one run seed apart.
INIT, ORDER, AUGMENT, EPOCH, NORM = 1, 2, 3, 4, 5


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (seed, fold, epoch, index, ...), well mixed by SeedSequence."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2, dtype=np.uint32)
    return int(state.view(np.uint64)[0]) >> 1


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy's and Python's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Global generator states, in a form `torch.load(weights_only=True)` accepts."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError):  # a different number of GPUs on resume
            torch.cuda.set_rng_state_all(state["cuda"])


def seed_transform(transform: Any, seed: int) -> None:
    """Reset an albumentations transform (and every child) to ONE numpy and ONE Python generator.

    Sharing one generator keeps the Table 1 rows independent of each other. albumentations'
    own ``Compose.set_random_seed`` must not be used per sample: in 2.0.8 it gives every child
    its own generator seeded with the *same* number, so all the p = 0.5 decisions of a freshly
    seeded pipeline come out equal (all rows applied, or none). A plain callable can only draw
    from the global generators, which are seeded instead.
    """
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    else:
        seed_everything(seed)

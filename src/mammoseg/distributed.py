"""Multi-process (DDP) plumbing for `mammoseg train` under `torchrun`.

`torchrun --nproc_per_node=N -m mammoseg train ...` sets RANK, WORLD_SIZE and LOCAL_RANK;
`init_distributed` turns them into a process group (NCCL on CUDA, gloo on CPU). Without
them everything runs in one process and the helpers here are no-ops.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: `rank` of `world_size`, `local_rank` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_dist_info() -> DistInfo:
    """Read torchrun's environment variables (absent → a single process)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise ValueError(f"bad RANK/WORLD_SIZE/LOCAL_RANK in the environment: {exc}") from exc
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent RANK={rank} WORLD_SIZE={world}")
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def resolve_device(requested: str | None, info: DistInfo = DistInfo()) -> torch.device:
    """`auto`/None (CUDA if available, else CPU), `cpu`, `cuda` (this process's local GPU under DDP),
    `cuda:N` or `mps`; a device this machine does not have is an error saying what it has."""
    if requested in (None, "auto"):
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested} was asked for, but CUDA is not available (use --device cpu)")
        if requested == "cuda":
            index = info.local_rank if info.enabled else torch.cuda.current_device()
            return torch.device("cuda", index)
        count = torch.cuda.device_count()
        index = requested.partition(":")[2]
        if not index.isdigit() or int(index) >= count:
            raise ValueError(f"--device {requested}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
        return torch.device(requested)
    if requested == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError("--device mps was asked for, but MPS is not available (use --device cpu)")
        return torch.device("mps")
    if requested != "cpu":
        raise ValueError(f"unknown device {requested!r}; expected auto, cpu, cuda, cuda:N or mps")
    return torch.device("cpu")


def init_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group (once); NCCL on CUDA, gloo on CPU."""
    if not info.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend=backend,
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(minutes=30),
    )
    log.info("rank %d/%d joined the %s process group", info.rank, info.world_size, backend)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Sum a list of numbers over all processes (float64; identity in a single process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank `src`'s Python object on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()

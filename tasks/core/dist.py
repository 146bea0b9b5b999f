"""Process-group helpers: the same code runs alone or under `torchrun` / `accelerate launch`."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def dist_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a distributed launch."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on the process that writes files (rank 0, or the only process)."""
    return dist_info()[0] == 0


def init_distributed() -> None:
    """Join the process group when launched by torchrun / accelerate (WORLD_SIZE > 1).

    NCCL on GPUs, gloo on CPUs (how the tests run two processes on one machine).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    """Wait for every rank (a no-op alone)."""
    if dist_info()[1] > 1:
        dist.barrier()


def reduce_mean(value: torch.Tensor) -> float:
    """The mean of a scalar over ranks, as a float."""
    if dist_info()[1] > 1:
        value = value.detach().clone().float()
        dist.all_reduce(value)
        value /= dist_info()[1]
    return float(value)

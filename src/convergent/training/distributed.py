"""Distributed data parallel on PyTorch's own engine: process group, device and data shards.

``torchrun --nproc_per_node=K -m convergent train ...`` starts K processes with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set; each joins one process group (``gloo`` on CPU,
``nccl`` on CUDA). Every rank generates the same pools and draws the same global batch
(same seeds), then trains on its :class:`~torch.utils.data.DistributedSampler` share;
DDP averages the gradients. Nothing inside the model or the solver communicates, so ranks
may run different numbers of fixed-point iterations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Context:
    """Where this process trains: its ``rank`` among ``world`` processes, and its ``device``."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0 logs, validates and writes the run's files."""
        return self.rank == 0


def pick_device(name: str) -> torch.device:
    """``"cuda"`` (this process's ``LOCAL_RANK`` GPU), ``"cpu"``, or ``"auto"``: CUDA where present."""
    if name not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)} (got {name!r})")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda asked for, but PyTorch sees no CUDA device (use --device cpu)")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def start(device_name: str = "auto") -> Context:
    """Join the process group when launched by ``torchrun`` with more than one process."""
    device = pick_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world == 1:
        return Context(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device)


def stop() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def shard(indices: list[int], context: Context) -> list[int]:
    """This rank's share of a global batch ``indices`` (every rank the same number of them)."""
    if context.world == 1:
        return indices
    if len(indices) % context.world:
        raise ValueError(f"config `batch_size` ({len(indices)}) must be a multiple of the number of processes "
                         f"({context.world}) so that every rank trains on a share of the same global batch")
    sampler = DistributedSampler(indices, num_replicas=context.world, rank=context.rank, shuffle=False)
    return [indices[i] for i in sampler]


def global_sum(value: torch.Tensor, context: Context) -> torch.Tensor:
    """``value`` summed over ranks (outside the model and the solver)."""
    if context.world > 1:
        value = value.clone()
        dist.all_reduce(value)
    return value

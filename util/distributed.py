"""Process-group setup for single-process and `torchrun` runs (gloo on CPU, nccl on GPU)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(backend: str = "auto") -> DistEnv:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group if world > 1.

    Each process uses GPU LOCAL_RANK when CUDA is available, else the CPU. On CUDA, cuDNN picks the fastest
    convolution algorithm for each input size it sees (cudnn.benchmark): the crops of training and evaluation
    have few distinct sizes.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        torch.backends.cudnn.benchmark = True
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if backend == "auto":
            backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistEnv(rank, world, local_rank, device)


def use_sync_bn(setting: str, env: DistEnv) -> bool:
    """DIST.sync_bn: "auto" syncs BatchNorm across several GPU processes (SyncBatchNorm needs CUDA)."""
    if setting == "auto":
        return env.distributed and env.device.type == "cuda"
    return setting == "true"


def wrap_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    """DistributedDataParallel around `model` when world > 1; the model itself otherwise."""
    if not env.distributed:
        return model
    ids = [env.local_rank] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def share_buffers(net: nn.Module) -> None:
    """Under DistributedDataParallel, give every process rank 0's buffers (BatchNorm statistics), one broadcast per
    dtype; nothing otherwise."""
    if not isinstance(net, nn.parallel.DistributedDataParallel):
        return
    groups: dict[torch.dtype, list[torch.Tensor]] = {}
    for b in net.module.buffers():
        groups.setdefault(b.dtype, []).append(b)
    for buffers in groups.values():
        flat = torch.cat([b.detach().reshape(-1) for b in buffers])
        dist.broadcast(flat, src=0)
        offset = 0
        for b in buffers:
            b.data.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum a tensor over processes (in place) and return it."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    """Every process's `obj`, in rank order."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world
    dist.all_gather_object(out, obj)
    return out


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def single_process(device: torch.device | None = None) -> DistEnv:
    """A world of one on `device` (default: the first GPU when there is one, else the CPU), without a process group
    (studies and benchmarks that run in one process)."""
    if device is None:
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    return DistEnv(rank=0, world=1, local_rank=0, device=device)

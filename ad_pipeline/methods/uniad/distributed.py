"""UniAD's process layout: one process, or one rank of a torchrun launch (DDP: NCCL on CUDA, gloo on CPU).

``setup_distributed`` joins the env:// process group when ``WORLD_SIZE`` > 1; ``global_mean``
reduces a ``[sum, count]`` pair over all ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.config import Config


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # this module initialised the process group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(cfg: Config, ctx: RunContext) -> torch.device:
    """``cfg.device`` if set, else the run context's; under torchrun CUDA maps to ``cuda:LOCAL_RANK``."""
    device = torch.device(cfg.device or ctx.device)
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def setup_distributed(cfg: Config, ctx: RunContext) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (env:// rendezvous); else single process."""
    device = resolve_device(cfg, ctx)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(0, 1, device, owns_group=False)
    backend = cfg.distributed.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, init_method="env://")
    return DistInfo(dist.get_rank(), dist.get_world_size(), device, owns_group=True)


def teardown_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it."""
    if info.owns_group:
        dist.destroy_process_group()


def global_mean(total: Tensor, info: DistInfo) -> float:
    """``total = [sum, count]`` summed over every rank → sum / count."""
    if info.world_size > 1:
        dist.all_reduce(total)
    return float(total[0] / total[1])

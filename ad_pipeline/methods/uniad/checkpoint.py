"""UniAD's resumable training state: ``checkpoint.pth`` holds model, optimiser, scheduler, every
rank's RNG state and the histories, tagged with a fingerprint of what the run trains on; a
killed run resumes from its last saved epoch as if it had never stopped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ad_pipeline.errors import UserError
from ad_pipeline.io import atomic_path, params_hash
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.distributed import DistInfo

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pth"
# Config fields that may change between an interrupted run and its resumption.
RESUMABLE_CHANGES = {"epochs", "checkpoint_every", "device", "num_workers", "distributed", "image_score", "map_size"}


@dataclass
class TrainingState:
    epoch: int = 0  # completed epochs
    loss_history: list[float] = field(default_factory=list)
    val_history: list[list[float]] = field(default_factory=list)  # [epoch, validation loss]
    best: dict[str, Any] | None = None  # {"epoch", "val_loss", "model"}

    def record_validation(self, model: nn.Module, val_loss: float) -> None:
        self.val_history.append([self.epoch, val_loss])
        if self.best is None or val_loss < self.best["val_loss"]:
            self.best = {"epoch": self.epoch, "val_loss": val_loss, "model": cpu_state(model)}


def cpu_state(model: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of ``model``'s state dict."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def fingerprint(cfg: Config, ctx: RunContext, paths: list[Path], val_paths: list[Path], weights: str) -> str:
    """What a checkpoint must share with the current run to be resumed."""
    return params_hash({
        "config": cfg.model_dump(exclude=RESUMABLE_CHANGES), "seed": ctx.seed, "weights": weights,
        "train": [str(p) for p in paths], "validation": [str(p) for p in val_paths],
    })


def _rng_state(device: torch.device) -> dict[str, Tensor | None]:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def save_checkpoint(path: Path, fingerprint: str, model: nn.Module, optimizer, scheduler,
                    state: TrainingState, info: DistInfo) -> None:
    """Rank 0 writes the full training state atomically; all ranks meet at a barrier afterwards."""
    rng = [_rng_state(info.device)]
    if info.world_size > 1:
        rng = [None] * info.world_size
        dist.all_gather_object(rng, _rng_state(info.device))
    if info.is_main:
        payload = {
            "fingerprint": fingerprint, "epoch": state.epoch, "world_size": info.world_size,
            "model": cpu_state(model), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": rng, "loss_history": state.loss_history, "val_history": state.val_history, "best": state.best,
        }
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    if info.world_size > 1:
        dist.barrier()


def resume(path: Path, fingerprint: str, model: nn.Module, optimizer, scheduler, state: TrainingState,
           info: DistInfo) -> int | None:
    """Load ``path`` into the training objects if it belongs to this run; return its epoch (None: fresh)."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint gets the same advice
        raise UserError(f"unreadable UniAD checkpoint ({e})", path=path,
                        fix="delete it to train from scratch") from None
    if ckpt.get("fingerprint") != fingerprint:
        if info.is_main:
            log.warning("%s belongs to another configuration or image list: training from scratch", path)
        return None
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["world_size"] == info.world_size:
        rng = ckpt["rng"][info.rank]
        torch.set_rng_state(rng["cpu"])
        if rng["cuda"] is not None and info.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], info.device)
    elif info.is_main:
        log.warning("%s was written by %d processes, resuming with %d: dropout streams restart",
                    path, ckpt["world_size"], info.world_size)
    state.epoch = ckpt["epoch"]
    state.loss_history = list(ckpt["loss_history"])
    state.val_history = [list(v) for v in ckpt["val_history"]]
    state.best = ckpt["best"]
    if info.is_main:
        log.info("resuming UniAD training from %s at epoch %d", path, state.epoch)
    return state.epoch

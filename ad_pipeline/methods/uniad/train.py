"""Unified training loop: ONE reconstruction model over the normal images of all categories.

Works single-process or under ``torchrun --nproc_per_node K`` (process layout: ``distributed``).
Randomness that decides results is tied to the data, not to the process layout: the sample order
is a ``DistributedSampler`` permutation seeded by (seed, epoch), and each sample's jitter noise is
drawn from a generator seeded by (seed, epoch, sample index). So K processes with per-process
batch b follow the same trajectory as one process with batch K·b (up to float summation order;
dropout masks are per process). Every ``checkpoint_every`` epochs the full state is saved
(``checkpoint``), so a killed run resumes from its last saved epoch as if it had never stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.checkpoint import (
    CHECKPOINT_NAME, TrainingState, cpu_state, fingerprint, resume, save_checkpoint,
)
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.distributed import DistInfo, global_mean, setup_distributed, teardown_distributed
from ad_pipeline.methods.uniad.features import build_feature_extractor, extract_aligned_features, extract_options
from ad_pipeline.methods.uniad.model import build_model, draw_jitter_noise


@dataclass
class TrainResult:
    """``model_state``: CPU state dict of the selected model. ``meta``: how it was chosen and trained
    (``select``, ``selected_epoch``, ``epochs``, ``resumed_from_epoch``, ``loss_history``,
    ``val_loss_history``, ``categories``, ``n_train``, ``world_size``, ``global_batch``, ``weights``…)."""

    model_state: dict[str, Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


def train_unified(
    train_sets: Mapping[str, Sequence[Path]],
    cfg: Config,
    ctx: RunContext,
    checkpoint_dir: Path,
    *,
    validation_sets: Mapping[str, Sequence[Path]] | None = None,
) -> TrainResult:
    """Train one model on the union of ``train_sets`` (category → normal images; labels unused).

    Every process of a torchrun launch calls this with the same arguments; it returns the same
    result on every rank (only rank 0 writes ``checkpoint_dir/checkpoint.pth``). ``cfg.select``:
    ``"last"`` keeps the final epoch, ``"validation"`` the checkpoint epoch with the lowest
    validation reconstruction loss on ``validation_sets`` (never test data; ignored with ``"last"``),
    evaluated at every checkpoint epoch. Memory: the aligned
    features of all training (and validation) images, ``N·C·h·w·4`` bytes (213 kB per 224² image).
    """
    paths = _union(train_sets, "train_sets")
    val_paths = _union(validation_sets, "validation_sets") if cfg.select == "validation" else []
    info = setup_distributed(cfg, ctx)
    try:
        return _train(train_sets, paths, val_paths, cfg, ctx, Path(checkpoint_dir), info)
    finally:
        teardown_distributed(info)


def _union(sets: Mapping[str, Sequence[Path]] | None, what: str) -> list[Path]:
    if not sets:
        fix = ("pass validation images or set select: last" if what == "validation_sets"
               else "check that prepare@<dataset> found train/good images")
        raise UserError(f"uniad: {what} is empty", fix=fix)
    empty = [name for name, ps in sets.items() if len(ps) == 0]
    if empty:
        raise UserError(f"uniad: categories without images in {what}: {', '.join(empty)}",
                        fix="check the dataset layout (train/good) and re-run prepare@<dataset>")
    return [Path(p) for ps in sets.values() for p in ps]


def _train(train_sets: Mapping[str, Sequence[Path]], paths: list[Path], val_paths: list[Path], cfg: Config,
           ctx: RunContext, checkpoint_dir: Path, info: DistInfo) -> TrainResult:
    extractor = build_feature_extractor(cfg, ctx)
    extract = extract_options(cfg, ctx, info.device, ctx.progress and info.is_main)
    features = extract_aligned_features(extractor, paths, **extract)
    val_features = extract_aligned_features(extractor, val_paths, **extract) if val_paths else None
    weights = extractor.backbone.weights
    del extractor

    torch.manual_seed(ctx.seed)  # identical initial weights on every rank
    model = build_model(cfg, tuple(features.shape[1:])).to(info.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    torch.manual_seed(ctx.seed + info.rank)  # dropout stream of this rank

    fp = fingerprint(cfg, ctx, paths, val_paths, weights)
    state = TrainingState()
    ckpt_path = checkpoint_dir / CHECKPOINT_NAME
    resumed_from = resume(ckpt_path, fp, model, optimizer, scheduler, state, info)

    ddp = (DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
           if info.world_size > 1 else model)
    sampler = DistributedSampler(range(len(features)), num_replicas=info.world_size, rank=info.rank,
                                 shuffle=True, seed=ctx.seed)
    epochs = tqdm(range(state.epoch, cfg.epochs), desc="uniad train", unit="epoch",
                  disable=not (ctx.progress and info.is_main), initial=state.epoch, total=cfg.epochs)
    for epoch in epochs:
        sampler.set_epoch(epoch)
        loss = train_epoch(ddp, features, list(sampler), epoch, cfg, ctx.seed, optimizer, info)
        scheduler.step()
        state.loss_history.append(loss)
        state.epoch = epoch + 1
        epochs.set_postfix(loss=f"{loss:.4g}")
        if state.epoch % cfg.checkpoint_every == 0 or state.epoch == cfg.epochs:
            if val_features is not None:
                state.record_validation(model, _validation_loss(model, val_features, cfg, info))
            save_checkpoint(ckpt_path, fp, model, optimizer, scheduler, state, info)

    if cfg.select == "validation":
        if state.best is None:
            raise UserError("uniad: select: validation but no validation pass ran", path=ckpt_path,
                            fix="delete the checkpoint directory and train again")
        selected_epoch, model_state = state.best["epoch"], state.best["model"]
    else:
        selected_epoch, model_state = state.epoch, cpu_state(model)
    meta = {
        "select": cfg.select, "selected_epoch": selected_epoch, "epochs": state.epoch,
        "resumed_from_epoch": resumed_from, "loss_history": state.loss_history,
        "val_loss_history": state.val_history, "categories": list(train_sets),
        "n_train": len(paths), "n_validation": len(val_paths), "world_size": info.world_size,
        "global_batch": cfg.batch_size * info.world_size, "feature_shape": list(features.shape[1:]),
        "backbone": cfg.backbone, "weights": weights,
    }
    return TrainResult(model_state, meta)


def train_epoch(model: nn.Module, features: Tensor, order: list[int], epoch: int, cfg: Config, seed: int,
                 optimizer: torch.optim.Optimizer, info: DistInfo) -> float:
    """One pass over this rank's share ``order`` of the samples; returns the mean loss over all ranks."""
    model.train()
    total = torch.zeros(2, dtype=torch.float64, device=info.device)  # [loss sum, sample count]
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        clean = features[idx].to(info.device)
        noise = (_jitter_noise(idx, epoch, seed, tuple(features.shape[1:]), cfg.jitter_prob).to(info.device)
                 if cfg.jitter_scale > 0 else None)
        rec = model(clean, noise=noise)
        loss = F.mse_loss(rec, clean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        total += torch.stack([loss.detach().double() * len(idx), torch.tensor(float(len(idx)), device=info.device)])
    return global_mean(total, info)


def _jitter_noise(idx: Sequence[int], epoch: int, seed: int, shape: tuple[int, ...], prob: float) -> Tensor:
    """ε for the samples ``idx`` ``[B, *shape]``, each from its own generator seeded by (seed, epoch, index)."""
    out = []
    for i in idx:
        key = np.random.SeedSequence([seed, epoch, int(i)]).generate_state(1, np.uint64)[0]
        gen = torch.Generator().manual_seed(int(key))
        out.append(draw_jitter_noise((1, *shape), prob, gen))
    return torch.cat(out)


@torch.no_grad()
def _validation_loss(model: nn.Module, features: Tensor, cfg: Config, info: DistInfo) -> float:
    """Mean reconstruction MSE (eval mode, no jitter) over all validation samples, sharded over ranks."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=info.device)
    mine = features[info.rank::info.world_size]
    for start in range(0, len(mine), cfg.batch_size):
        clean = mine[start:start + cfg.batch_size].to(info.device)
        per_sample = (model(clean) - clean).pow(2).flatten(1).mean(dim=1)
        total += torch.stack([per_sample.double().sum(), torch.tensor(float(len(clean)), device=info.device)])
    return global_mean(total, info)

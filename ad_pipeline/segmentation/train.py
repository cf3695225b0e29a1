"""One training loop for both segmentors: supervised terms from the start, unsupervised terms
(histogram matching + entropy) switched on from epoch ``sup_only_epochs``.

Defaults are CSAD's (configs/segmentor: CE-on-probs 0.5, focal 10, class-balanced dice 1,
histogram 10, entropy 1 + 1; Adam lr 0.01, 120 epochs, 50 supervised-only);
``PSAD_FEWSHOT`` overrides them with PSAD's few-shot recipe, ``PSAD_RETRAIN`` with its second stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from tqdm import tqdm

from ad_pipeline.segmentation.losses import (
    cross_entropy,
    dice_loss,
    entropy_loss,
    focal_loss,
    histogram_loss,
    one_hot,
)

# augment(x [B,3,H,W], y int64 [B,H,W], rows int64 [B] (dataset rows of the batch), gen) -> (x, y)
Augment = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


class SegTrainConfig(BaseModel):
    """Training schedule and loss weights (a weight of 0 disables a term)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = 120
    sup_only_epochs: int = 50
    batch_size: int = 4
    epoch_length: Literal["supervised", "unsupervised"] = "supervised"  # which set one epoch passes over
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 0.01
    weight_decay: float = 1e-5
    ce: float = 0.5
    ce_on_probs: bool = True  # CSAD repo quirk (softmax twice); False = standard CE on logits
    focal: float = 10.0
    dice: float = 1.0
    dice_class_balanced: bool = True
    dice_eps_num: float = 1e-5
    dice_eps_den: float = 2e-5
    hist: float = 10.0
    hist_batch_reduction: Literal["mean", "sum"] = "mean"
    hist_classes: list[int] | None = None  # None = every class but background
    entropy_unsup: float = 1.0
    entropy_sup: float = 1.0


PSAD_FEWSHOT = dict(epochs=100, sup_only_epochs=50, batch_size=5, epoch_length="unsupervised", optimizer="adamw",
                    lr=1e-3, weight_decay=0.01, ce=10.0, ce_on_probs=False, focal=0.0, dice=1.0,
                    dice_class_balanced=False, dice_eps_num=0.0, dice_eps_den=1e-4, hist=1.0,
                    hist_batch_reduction="sum", entropy_unsup=10.0, entropy_sup=0.0)

# PSAD's second stage (train_normal_unet.py / run_unet_v2.sh): every image is supervised by its
# pseudo-label; 10·CE + (1 − Dice), AdamW lr 1e-3 (default weight decay 0.01), batch 8, 300 epochs
# (the histogram / entropy terms are only logged there, so they are off here).
PSAD_RETRAIN = PSAD_FEWSHOT | dict(epochs=300, sup_only_epochs=300, batch_size=8, epoch_length="supervised",
                                   hist=0.0, entropy_unsup=0.0)


def _index_stream(n: int, batch: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless batches of indices from successive shuffles of range(n) (drop-last per pass,
    unless n < batch, then batches repeat indices)."""
    while True:
        perm = torch.randperm(n, generator=gen)
        if n < batch:
            yield perm[torch.randint(n, (batch,), generator=gen)]
            continue
        for i in range(0, n - batch + 1, batch):
            yield perm[i:i + batch]


def segmentation_loss(model: nn.Module, cfg: SegTrainConfig, sup_x: torch.Tensor, sup_y: torch.Tensor,
                      unsup_x: torch.Tensor | None, ref_y: torch.Tensor | None, num_classes: int,
                      with_unsup: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted loss of one step. sup_x [B,3,H,W], sup_y int64 [B,H,W]; unsup_x [B',3,H,W] and
    ref_y (labels of random supervised images paired with unsup_x) or None."""
    logits = model(sup_x)
    probs = logits.softmax(1)
    y = one_hot(sup_y, num_classes)
    terms: dict[str, torch.Tensor] = {}
    if cfg.ce:
        terms["ce"] = cfg.ce * cross_entropy(logits, sup_y, on_probs=cfg.ce_on_probs)
    if cfg.focal:
        terms["focal"] = cfg.focal * focal_loss(probs, y)
    if cfg.dice:
        terms["dice"] = cfg.dice * dice_loss(probs, y, class_balanced=cfg.dice_class_balanced,
                                             eps_num=cfg.dice_eps_num, eps_den=cfg.dice_eps_den)
    if with_unsup:
        if cfg.entropy_sup:
            terms["entropy_sup"] = cfg.entropy_sup * entropy_loss(probs)
        if unsup_x is not None and (cfg.hist or cfg.entropy_unsup):
            p_u = model(unsup_x).softmax(1)
            if cfg.hist:
                terms["hist"] = cfg.hist * histogram_loss(p_u, one_hot(ref_y, num_classes), classes=cfg.hist_classes,
                                                          batch_reduction=cfg.hist_batch_reduction)
            if cfg.entropy_unsup:
                terms["entropy_unsup"] = cfg.entropy_unsup * entropy_loss(p_u)
    total = sum(terms.values())
    return total, {k: float(v.detach()) for k, v in terms.items()}


def train_segmentation(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, supervised: np.ndarray,
                       cfg: SegTrainConfig, *, num_classes: int, seed: int = 42, augment: Augment | None = None,
                       device: str = "cpu", progress: bool = True) -> list[dict[str, float]]:
    """Train ``model`` (logits [B,C,H,W] from images [B,3,H,W]) in place; returns per-epoch mean losses.

    ``images`` [N,3,H,W] normalised, ``labels`` int64 [N,H,W] (only rows in ``supervised`` are
    used as targets); the other rows form the unsupervised set. ``augment(x, y, rows, gen)``
    (``rows`` = the batch's row indices, for per-image side data) is applied to supervised batches. Model selection: the last epoch (no test data involved).
    Memory: the whole set is held as tensors (N·3·H·W floats); one batch of each kind on ``device``.
    """
    gen = torch.Generator().manual_seed(seed)
    supervised = np.asarray(supervised, dtype=np.int64)
    unsupervised = np.setdiff1d(np.arange(len(images)), supervised)
    if len(supervised) == 0:
        raise ValueError("no supervised images to train the segmentor on")
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    opt = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_epoch_set = len(unsupervised) if cfg.epoch_length == "unsupervised" and len(unsupervised) else len(supervised)
    steps = max(1, n_epoch_set // cfg.batch_size)
    sup_stream = _index_stream(len(supervised), cfg.batch_size, gen)
    unsup_stream = _index_stream(len(unsupervised), cfg.batch_size, gen) if len(unsupervised) else None
    model.to(device).train()
    history = []
    for epoch in tqdm(range(cfg.epochs), desc="segmentor", disable=not progress):
        with_unsup = epoch >= cfg.sup_only_epochs
        sums: dict[str, float] = {}
        for _ in range(steps):
            rows = torch.from_numpy(supervised)[next(sup_stream)]
            x, y = images[rows], labels[rows]
            if augment is not None:
                x, y = augment(x, y, rows, gen)
            ux = ry = None
            if unsup_stream is not None and with_unsup:
                ux = images[torch.from_numpy(unsupervised)[next(unsup_stream)]].to(device)
                ry = labels[torch.from_numpy(supervised)[torch.randint(len(supervised), (len(ux),), generator=gen)]]
                ry = ry.to(device)
            loss, parts = segmentation_loss(model, cfg, x.to(device), y.to(device), ux, ry, num_classes, with_unsup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v / steps
        history.append({"epoch": epoch, **sums})
    model.eval()
    return history


@torch.inference_mode()
def predict_labels(model: nn.Module, images: torch.Tensor, *, batch_size: int = 8, device: str = "cpu") -> torch.Tensor:
    """Argmax class maps uint8 [N,H,W] for normalised images [N,3,H,W], ``batch_size`` at a time."""
    model.to(device).eval()
    out = [model(images[i:i + batch_size].to(device)).argmax(1).to(torch.uint8).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)

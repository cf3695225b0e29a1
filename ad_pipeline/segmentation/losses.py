"""Segmentation losses shared by CSAD's segmentor and PSAD's few-shot segmenter.

Shapes: ``logits``/``probs`` [B,C,H,W] (probs = softmax over C), ``labels`` int64 [B,H,W],
``onehot`` float [B,C,H,W]. Each loss returns a scalar tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F


def one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [B,H,W] → float [B,C,H,W]."""
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, *, on_probs: bool = False) -> torch.Tensor:
    """Pixel-mean cross-entropy. ``on_probs`` reproduces the CSAD repo quirk: CE applied to
    softmax probabilities (softmax taken twice), which bounds the loss and its gradients."""
    return F.cross_entropy(logits.softmax(1) if on_probs else logits, labels)


def focal_loss(probs: torch.Tensor, onehot: torch.Tensor, *, gamma: float = 2.0, eps: float = 1e-5) -> torch.Tensor:
    """mean over pixels of −(1−p_t)^γ·log p_t with α = 1, the one-hot clamped to
    [eps/(C−1), 1−eps] (label smoothing) and p_t = Σ_c y·p + eps."""
    c = onehot.shape[1]
    y = onehot.clamp(eps / (c - 1), 1.0 - eps)
    p_t = (y * probs).sum(1) + eps
    return (-(1.0 - p_t).pow(gamma) * p_t.log()).mean()


def dice_loss(probs: torch.Tensor, onehot: torch.Tensor, *, class_balanced: bool, eps_num: float = 0.0,
              eps_den: float = 1e-4) -> torch.Tensor:
    """mean over (image, class) of w_c·(1 − dice_bc), dice_bc = (2Σpy + eps_num)/(Σp + Σy + eps_den).

    ``class_balanced`` (CSAD, eps_num 1e-5, eps_den 2e-5): w_c ∝ 1/(Σ_batch y_c + 1e-5),
    normalised to sum 1. Otherwise (PSAD, eps_num 0, eps_den 1e-4) w_c = 1, i.e. 1 − mean dice.
    """
    inter = (probs * onehot).sum((2, 3))
    dice = (2 * inter + eps_num) / (probs.sum((2, 3)) + onehot.sum((2, 3)) + eps_den)  # [B,C]
    if class_balanced:
        w = 1.0 / (onehot.sum((0, 2, 3)) + 1e-5)
        return (w / w.sum() * (1.0 - dice)).mean()
    return (1.0 - dice).mean()


def histogram_loss(probs: torch.Tensor, reference_onehot: torch.Tensor, *, classes: Sequence[int] | None = None,
                   batch_reduction: Literal["mean", "sum"] = "mean") -> torch.Tensor:
    """Histogram matching: Σ_classes |mean_HW y_ref − mean_HW p| per sample, background (class 0)
    excluded (or only ``classes``), then averaged (CSAD) or summed (PSAD) over the batch.

    ``reference_onehot`` [B,C,H',W'] is the label of a paired supervised image (its own size).
    """
    diff = (reference_onehot.mean((2, 3)) - probs.mean((2, 3))).abs()  # [B,C]
    idx = list(classes) if classes is not None else list(range(1, probs.shape[1]))
    per_sample = diff[:, idx].sum(1)
    return per_sample.sum() if batch_reduction == "sum" else per_sample.mean()


def entropy_loss(probs: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """mean over all (B,C,H,W) elements of −p·log(p + eps)."""
    return -(probs * (probs + eps).log()).mean()

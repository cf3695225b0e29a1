"""EfficientAD's teacher distillation: a PDN trained to regress a PatchCore-style WRN-101-2
descriptor of generic images. (PUAD's simpler target — channel pooling of concatenated
layer2/layer3 maps without 3×3 aggregation — is not implemented; we follow PatchCore/nelson.)
The teacher files (load, save, weights_dir or distil) are in ``teacher_files``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ad_pipeline.components.patches import PatchAggregator
from ad_pipeline.components.student_teacher.data import grayscale_where, load_unit, normalize, shuffled_batches
from ad_pipeline.components.student_teacher.pdn import TEACHER_CHANNELS, PDN, ModelSize
from ad_pipeline.components.student_teacher.train import channel_mean_std
from ad_pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD
from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.efficientad.config import TeacherConfig
from ad_pipeline.seed import seeded

FeatureFn = Callable[[torch.Tensor, Sequence[str]], Mapping[str, torch.Tensor]]


@dataclass
class TeacherState:
    """A teacher PDN (weights only; load into padding=False for detection) and how it was made."""

    pdn: PDN
    size: ModelSize
    meta: dict[str, Any] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)  # per distillation step (not saved)


class PatchDescriptorTarget(nn.Module):
    """Backbone feature maps → PatchCore-style descriptor [B,out_dim,h,w] (h,w: first layer's grid).

    ``PatchAggregator`` with 3×3 neighbourhoods, per-layer pooling to ``layer_dim`` and ``out_dim``
    outputs. Memory: one image at a time, ≈ 4·h·w·C·9 bytes for the widest layer (≈150 MB for
    WRN-101 layer3 at 512×512 input).
    """

    def __init__(self, features: FeatureFn, layers: Sequence[str], layer_dim: int = 1024,
                 out_dim: int = TEACHER_CHANNELS):
        super().__init__()
        self.features = features
        self.layers = tuple(layers)
        self.aggregate = PatchAggregator(3, layer_dim, out_dim)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._one(x[i:i + 1]) for i in range(x.shape[0])])

    def _one(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.features(x, self.layers)
        return self.aggregate([feats[name] for name in self.layers]).permute(0, 3, 1, 2)


class TargetCache:
    """Normalised distillation targets memoised per (image index, grayscale flag).

    The target backbone is frozen and sees no random crop, so its output for an image depends
    only on whether RandomGrayscale fired: on a small pretraining set (the synthetic demo, a
    user's own images) each target is computed at most twice instead of once per step. Targets
    beyond ``budget_bytes`` (ImageNet-sized sets) are computed on the fly as before.
    ``compute(indices, gray [B] bool) -> [B,C,h,w]``.
    """

    def __init__(self, compute: Callable[[list[int], torch.Tensor], torch.Tensor], budget_bytes: int):
        self.compute = compute
        self.budget = budget_bytes
        self.used = 0
        self.store: dict[tuple[int, bool], torch.Tensor] = {}

    def __call__(self, idx: list[int], gray: torch.Tensor) -> torch.Tensor:
        keys = [(i, bool(g)) for i, g in zip(idx, gray.tolist())]
        todo = [k for k in dict.fromkeys(keys) if k not in self.store]
        fresh = {}
        if todo:
            out = self.compute([i for i, _ in todo], torch.tensor([g for _, g in todo]))
            fresh = dict(zip(todo, out))
            for k, t in fresh.items():
                if self.used + t.nbytes <= self.budget:
                    self.store[k] = t
                    self.used += t.nbytes
        return torch.stack([self.store[k] if k in self.store else fresh[k] for k in keys])


def build_target(cfg: TeacherConfig, ctx: RunContext) -> tuple[PatchDescriptorTarget, Sequence[float], Sequence[float], str]:
    """(target, backbone mean, backbone std, weights mode) from the backbone registry."""
    from ad_pipeline.backbones import build_backbone

    bb = build_backbone(cfg.target_backbone, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir, seed=ctx.seed)
    bb.eval().to(ctx.device)
    target = PatchDescriptorTarget(bb, cfg.target_layers, cfg.target_layer_dim, cfg.channels)
    return target, bb.spec.mean, bb.spec.std, bb.weights


def _target_statistics(images: Sequence[Path], target_of: Callable[[torch.Tensor], torch.Tensor], cfg: TeacherConfig,
                       gen: torch.Generator, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel (μ, σ) [1,C,1,1] of the target over a seeded subset of ≤ norm_images images (σ ≥ 1e-12)."""
    idx = torch.randperm(len(images), generator=gen)[: cfg.norm_images].tolist()
    batches = (target_of(load_unit([images[i] for i in idx[j:j + cfg.batch_size]], cfg.target_image_size))
               for j in range(0, len(idx), cfg.batch_size))
    mu, sigma = channel_mean_std(tqdm(batches, desc="teacher target stats", disable=not progress,
                                      total=-(-len(idx) // cfg.batch_size)))
    return mu, sigma.clamp_min(1e-12)


def distill_teacher(images: Sequence[Path], cfg: TeacherConfig, ctx: RunContext, *,
                    target: PatchDescriptorTarget | None = None,
                    target_norm: tuple[Sequence[float], Sequence[float]] | None = None) -> TeacherState:
    """Distil a PDN (padding=True, ``cfg.channels`` = 384 channels) from the normalised target descriptor.

    ``images``: the generic (pretraining) images. ``target``/``target_norm`` default to the
    registry backbone ``cfg.target_backbone`` and its input normalisation (injectable for tests).
    Loss: MSE between PDN(image at image_size) and (target(image at target_image_size) − μ)/σ;
    RandomGrayscale shared by both views; Adam; seeded from ``ctx.seed`` without touching
    the caller's global RNG state.
    """
    if not images:
        raise UserError("no images to distil the EfficientAD teacher from", fix="set pretrain_images to a folder of images")
    weights = "injected"
    if target is None:
        target, mean, std, weights = build_target(cfg, ctx)
    else:
        mean, std = target_norm or (IMAGENET_MEAN, IMAGENET_STD)
    gen = torch.Generator().manual_seed(ctx.seed)
    images = list(images)
    progress = ctx.progress

    def target_of(x: torch.Tensor) -> torch.Tensor:
        return target(normalize(x, mean, std).to(ctx.device))

    mu, sigma = _target_statistics(images, target_of, cfg, gen, progress)

    with seeded(ctx.seed):
        pdn = PDN(cfg.model_size, cfg.channels, padding=True, width_divisor=cfg.width_divisor).to(ctx.device)
    opt = torch.optim.Adam(pdn.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    batches = shuffled_batches(len(images), cfg.batch_size, gen)
    targets = TargetCache(lambda idx, gray: (target_of(grayscale_where(
        load_unit([images[i] for i in idx], cfg.target_image_size), gray)) - mu.to(ctx.device)) / sigma.to(ctx.device),
        budget_bytes=cfg.target_cache_mb * 2**20)
    pdn.train()
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc=f"distil teacher ({cfg.model_size})", disable=not progress)
    for _ in bar:
        idx = next(batches).tolist()
        gray = torch.rand(len(idx), generator=gen) < cfg.grayscale_p
        small = grayscale_where(load_unit([images[i] for i in idx], cfg.image_size), gray)
        want = targets(idx, gray)
        got = pdn(normalize(small).to(ctx.device))
        if got.shape != want.shape:
            raise UserError(f"teacher PDN output {tuple(got.shape[-2:])} does not match the target grid "
                            f"{tuple(want.shape[-2:])}",
                            fix="use target_image_size = 2 × image_size (512 for 256) with ResNet layer2 first")
        loss = F.mse_loss(got, want)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
    pdn = pdn.cpu().eval()
    meta = {"source": "distilled", "channels": cfg.channels, "width_divisor": cfg.width_divisor, "steps": cfg.steps,
            "target_backbone": cfg.target_backbone,
            "target_weights": weights, "n_images": len(images), "first_loss": losses[0], "final_loss": losses[-1]}
    return TeacherState(pdn, cfg.model_size, meta, losses)

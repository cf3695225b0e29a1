"""Locally aware patch features (PatchCore, spec/patchcore.md §3): the aggregation of backbone
maps, and images -> patch features through a backbone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ad_pipeline.backbones import Backbone, extract_features
from ad_pipeline.backbones.base import Layer


def pool_to(vectors: torch.Tensor, dim: int) -> torch.Tensor:
    """[P, L] -> [P, dim] by 1-D adaptive average pooling: bin i averages [floor(i·L/dim), ceil((i+1)·L/dim))."""
    return F.adaptive_avg_pool1d(vectors[:, None, :], dim)[:, 0, :]


class PatchAggregator(nn.Module):
    """Feature maps of several layers -> one embedding per position of the first (finest) layer.

    Per layer [B, C, h, w]: gather each position's p×p neighbourhood (zero padding, channel-major
    C·p·p vector, as ``F.unfold``), resize coarser grids bilinearly to the first layer's grid,
    adaptive-average-pool every vector to ``pretrain_embed_dim``; then concatenate the layers and
    pool to ``target_embed_dim``. Output [B, h0, w0, target_embed_dim]. Memory: one unfolded layer
    [B, C·p², h0·w0] at a time.
    """

    def __init__(self, patch_size: int = 3, pretrain_embed_dim: int = 1024, target_embed_dim: int = 1024):
        super().__init__()
        if patch_size < 1 or patch_size % 2 == 0:
            raise ValueError(f"patch_size must be odd and >= 1, got {patch_size}")
        self.patch_size = patch_size
        self.pretrain_embed_dim = pretrain_embed_dim
        self.target_embed_dim = target_embed_dim

    def forward(self, maps: Sequence[torch.Tensor],
                pool: Callable[[torch.Tensor, int], torch.Tensor] = pool_to) -> torch.Tensor:
        """``pool``: the [P, L] -> [P, dim] pooling (the export graph passes a matrix form of ``pool_to``)."""
        b, _, h0, w0 = maps[0].shape
        per_layer = []
        for fmap in maps:
            p = self.patch_size
            neighbourhoods = F.unfold(fmap, kernel_size=p, padding=p // 2)  # [B, C·p², h·w]
            grid = neighbourhoods.unflatten(2, fmap.shape[-2:])  # [B, C·p², h, w]
            if grid.shape[-2:] != (h0, w0):
                grid = F.interpolate(grid, size=(h0, w0), mode="bilinear", align_corners=False)
            vectors = grid.flatten(2).transpose(1, 2).reshape(b * h0 * w0, -1)
            per_layer.append(pool(vectors, self.pretrain_embed_dim))
        stacked = torch.stack(per_layer, dim=1).reshape(b * h0 * w0, -1)  # [P, layers·pretrain_dim]
        return pool(stacked, self.target_embed_dim).reshape(b, h0, w0, self.target_embed_dim)


class PatchFeatures:
    """Image files -> patch features [N, h, w, D]: ``backbone`` maps of ``layers`` (images resized
    to ``resize``, center-cropped to ``image_size``) through ``aggregator``, ``batch_size`` images at
    a time. h = w = image_size / 8 for stride-8 CNN layers, the token grid image_size / patch_size
    for ViTs (tokens [n, h·w, C] are put on their grid [n, C, h, w] first)."""

    def __init__(self, backbone: Backbone, layers: Sequence[Layer], aggregator: PatchAggregator, *, resize: int,
                 image_size: int, batch_size: int, cache_dir: Path | None = None, progress: bool = False):
        self.backbone = backbone
        self.layers = list(layers)
        self.aggregator = aggregator
        self.resize = resize
        self.image_size = image_size
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.progress = progress

    def __call__(self, paths: Sequence[Path]) -> torch.Tensor:
        maps = self.backbone_maps(paths)
        return torch.cat([self.aggregate(maps, slice(i, i + self.batch_size))
                          for i in range(0, len(paths), self.batch_size)])

    def backbone_maps(self, paths: Sequence[Path]) -> dict[Layer, torch.Tensor]:
        """Raw backbone outputs of ``paths``: CNN {layer: [N, C, h, w]}, ViT {block: [N, h*w, C]}."""
        return extract_features(self.backbone, paths, size=self.resize, crop=self.image_size, layers=self.layers,
                                batch_size=self.batch_size, cache_dir=self.cache_dir, progress=self.progress)

    def aggregate(self, maps: dict[Layer, torch.Tensor], rows: slice) -> torch.Tensor:
        """Patch features [n, h, w, D] of the images ``rows`` of ``maps``."""
        grids = [maps[layer][rows] for layer in self.layers]
        if self.backbone.spec.is_vit:
            h, w = self.backbone.grid_size(self.image_size)
            grids = [tokens.transpose(1, 2).unflatten(2, (h, w)) for tokens in grids]
        return self.aggregator(grids)

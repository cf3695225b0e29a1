"""What every backbone is: a frozen (or trainable) feature extractor with a fixed contract.

``Backbone.__call__(x, layers)`` returns intermediate features by layer; CNNs are keyed by module
name (``"layer2"``), ViTs by 0-based block index (``5``) and accept the pseudo-layer ``EMBEDDING``
(the global image embedding [B, D] from the same forward pass). See ``ad_pipeline.backbones``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ad_pipeline.errors import UserError

FAMILIES = ("cnn", "clip", "dino", "dinov2")
Layer = str | int
EMBEDDING = "embedding"  # ViT pseudo-layer: the global image embedding [B, D] of the same pass


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about one registered backbone.

    ``source``: timm model name with pretrained tag (``"wide_resnet50_2.tv_in1k"``) or open_clip
    model name (``"ViT-B-16"``). ``pretrained_tag``: open_clip tag (CLIP only). ``mean``/``std``:
    input normalisation the weights expect. ``default_layers``: CNNs the stride-8/stride-16 pair
    PatchCore uses, ViTs the four blocks MuSc uses. ``patch_size``: ViT token size (None for CNNs).
    ``image_size``: native input size of the weights. ``weights_file``: the file name looked for in
    ``weights_dir`` (the official download name is accepted there too, see ``weights.py``).
    """

    name: str
    family: str
    source: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    default_layers: tuple[Layer, ...]
    image_size: int
    weights_file: str
    patch_size: int | None = None
    pretrained_tag: str | None = None

    @property
    def is_vit(self) -> bool:
        return self.family != "cnn"


class Backbone(nn.Module):
    """A feature extractor around ``model`` (a timm or open_clip module).

    ``weights`` is ``"pretrained"`` or ``"random-init"``. A frozen backbone (``trainable=False``)
    has no gradients and stays in eval mode even if a parent module calls ``.train()``.
    """

    def __init__(self, spec: BackboneSpec, model: nn.Module, weights: str, *, trainable: bool = False):
        super().__init__()
        self.spec = spec
        self.model = model
        self.weights = weights
        self.trainable = trainable
        if not trainable:
            model.requires_grad_(False)
        self.train(False)

    @property
    def activation(self) -> str | None:
        """The MLP activation where the weights leave it open (CLIP: "quick_gelu" | "gelu"), else None."""
        return None

    def train(self, mode: bool = True) -> Backbone:
        return super().train(mode and self.trainable)

    def forward(self, x: torch.Tensor, layers: Sequence[Layer]) -> dict:
        raise NotImplementedError

    def grid_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        """Token grid (h, w) of a ViT for a square ``image_size`` or an (H, W) pair."""
        raise UserError(f"backbone {self.spec.name!r} is a CNN and has no token grid",
                        fix="use a ViT backbone (CLIP / DINO / DINOv2) or the feature map shapes")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global image embedding [B, D] (ViTs only)."""
        raise UserError(f"backbone {self.spec.name!r} is a CNN and has no global image embedding",
                        fix="use a ViT backbone (CLIP / DINO / DINOv2)")

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{self.spec.name}: expected images [B,3,H,W], got shape {tuple(x.shape)}")

    def extra_repr(self) -> str:
        return f"name={self.spec.name}, weights={self.weights}, trainable={self.trainable}"

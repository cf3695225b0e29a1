"""A tiny stand-in for a registry CNN backbone (``enc(x, layers) -> {layer: map}``), shared by the
segmentation / CSAD / PSAD tests so training loops stay fast on a loaded CPU. No tests here."""

from __future__ import annotations

import torch
from torch import nn


class TinyEncoder(nn.Module):
    """layer1 = stride 4 (8 ch), layer2 = stride 8 (12 ch), layer3 = stride 16 (16 ch)."""

    def __init__(self, seed: int = 0, trainable: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.stages = nn.ModuleDict({
            "layer1": nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU()),
            "layer2": nn.Sequential(nn.Conv2d(8, 12, 2, stride=2), nn.ReLU()),
            "layer3": nn.Sequential(nn.Conv2d(12, 16, 2, stride=2), nn.ReLU()),
        })
        self.requires_grad_(trainable)

    def forward(self, x: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        out = {}
        for name, stage in self.stages.items():
            x = stage(x)
            out[name] = x
        return {name: out[name] for name in layers}

"""EfficientAD's autoencoder: image [B,3,H,W] → 1×1×64 bottleneck → [B,384,h,w].

Decoder resize targets follow the general formula for a square input of side H:
H/64−1, H/32, H/16−1, H/8, H/4−1, H/2−1, then H/4−8 (PDN without padding) or H/4 (with
padding); each k4/p2 conv grows the map by one pixel. For H=256: 3, 8, 15, 32, 63, 127 → 56. For H ≥ 256 this is the paper's network (the encoder's last conv has kernel 8).
Smaller inputs (H a multiple of 32, ≥ 64; smoke tests only) shrink that kernel to H/32 so the
bottleneck stays 1×1 (the reference network crashes there) and clamp the first target to ≥ 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ad_pipeline.components.student_teacher.pdn import TEACHER_CHANNELS, pdn_output_size
from ad_pipeline.errors import UserError

BOTTLENECK = 64


def check_image_size(image_size: int) -> None:
    if image_size < 64 or image_size % 32:
        raise UserError(f"EfficientAD image_size must be a multiple of 32 and at least 64, got {image_size}",
                        fix="set image_size to 256 (the paper's value)")


def _encoder(image_size: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = [3, 32, 32, 64, 64, 64]
    for cin, cout in zip(channels[:-1], channels[1:]):
        layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.ReLU()]
    layers.append(nn.Conv2d(BOTTLENECK, BOTTLENECK, min(8, image_size // 32)))  # 8×8 → 1×1 for H=256
    return nn.Sequential(*layers)


class _UpBlock(nn.Module):
    """Bilinear resize to ``size`` → conv k4 p2 (size+1) → ReLU → Dropout(0.2)."""

    def __init__(self, size: int, dropout: float):
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(BOTTLENECK, BOTTLENECK, 4, stride=1, padding=2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.drop(F.relu(self.conv(x)))


class Autoencoder(nn.Module):
    """[B,3,H,W] normalised image → [B,out_channels,H/4−8,H/4−8] (H/4 with ``padding``)."""

    def __init__(self, image_size: int = 256, out_channels: int = TEACHER_CHANNELS, padding: bool = False,
                 dropout: float = 0.2):
        super().__init__()
        check_image_size(image_size)
        h = image_size
        self.encoder = _encoder(image_size)
        self.up = nn.ModuleList(_UpBlock(s, dropout) for s in (max(1, h // 64 - 1), h // 32, h // 16 - 1, h // 8,
                                                                h // 4 - 1, h // 2 - 1))
        self.out_size = pdn_output_size(image_size, padding)
        self.head = nn.Sequential(nn.Conv2d(BOTTLENECK, BOTTLENECK, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(BOTTLENECK, out_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        for block in self.up:
            z = block(z)
        z = F.interpolate(z, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return self.head(z)

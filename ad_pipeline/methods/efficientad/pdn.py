"""Patch Description Networks (PDN small / medium) of EfficientAD.

A PDN maps a normalised image [B,3,H,W] to a dense descriptor map [B,C,h,w] whose pixels
each see a 33×33 input patch. ``padding=True`` (teacher distillation) keeps more border:
256×256 → 64×64; ``padding=False`` (anomaly detection) gives 256×256 → 56×56. Padding does
not change parameter shapes, so one state dict loads into both modes.

The module is an ``nn.Sequential`` of conv/ReLU/avg-pool layers in the order of the paper,
so state dicts use plain integer keys ("0.weight", "3.weight", …), the layout of the public
reference teacher checkpoints.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

ModelSize = Literal["small", "medium"]
TEACHER_CHANNELS = 384
STUDENT_CHANNELS = 2 * TEACHER_CHANNELS  # local (teacher-imitating) half + global (AE-imitating) half


class PDN(nn.Sequential):
    """PDN-Small or PDN-Medium: [B,3,H,W] → [B,out_channels,H/4-8,W/4-8] (H/4 with padding)."""

    def __init__(self, size: ModelSize, out_channels: int = TEACHER_CHANNELS, padding: bool = False):
        p = 1 if padding else 0
        if size == "small":
            layers = [
                nn.Conv2d(3, 128, 4, padding=3 * p), nn.ReLU(), nn.AvgPool2d(2, 2, padding=p),
                nn.Conv2d(128, 256, 4, padding=3 * p), nn.ReLU(), nn.AvgPool2d(2, 2, padding=p),
                nn.Conv2d(256, 256, 3, padding=p), nn.ReLU(),
                nn.Conv2d(256, out_channels, 4),
            ]
        elif size == "medium":
            layers = [
                nn.Conv2d(3, 256, 4, padding=3 * p), nn.ReLU(), nn.AvgPool2d(2, 2, padding=p),
                nn.Conv2d(256, 512, 4, padding=3 * p), nn.ReLU(), nn.AvgPool2d(2, 2, padding=p),
                nn.Conv2d(512, 512, 1), nn.ReLU(),
                nn.Conv2d(512, 512, 3, padding=p), nn.ReLU(),
                nn.Conv2d(512, out_channels, 4), nn.ReLU(),
                nn.Conv2d(out_channels, out_channels, 1),
            ]
        else:
            raise ValueError(f"PDN size must be 'small' or 'medium', got {size!r}")
        super().__init__(*layers)
        self.size = size
        self.out_channels = out_channels
        self.padding = padding


def pdn_output_size(image_size: int, padding: bool) -> int:
    """Side of the PDN output map for a square input (both sizes share the geometry)."""
    return image_size // 4 if padding else image_size // 4 - 8

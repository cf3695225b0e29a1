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

from torch import nn

from ad_pipeline.components.student_teacher.sizes import TEACHER_CHANNELS, ModelSize


class PDN(nn.Sequential):
    """PDN-Small or PDN-Medium: [B,3,H,W] → [B,out_channels,H/4-8,W/4-8] (H/4 with padding).

    ``width_divisor`` > 1 divides the hidden widths (128/256/512) — not the paper's network,
    only for tiny smoke-test models.
    """

    def __init__(self, size: ModelSize, out_channels: int = TEACHER_CHANNELS, padding: bool = False,
                 width_divisor: int = 1):
        p = 1 if padding else 0
        w1, w2 = (128 // width_divisor, 256 // width_divisor) if size == "small" else (256 // width_divisor,
                                                                                     512 // width_divisor)
        if size == "small":
            layers = [
                nn.Conv2d(3, w1, 4, padding=3 * p), nn.ReLU(), nn.AvgPool2d(2, 2, padding=p),
                nn.Conv2d(w1, w2, 4, padding=3 * p), nn.ReLU(), nn.AvgPool2d(2, 2, padding=p),
                nn.Conv2d(w2, w2, 3, padding=p), nn.ReLU(),
                nn.Conv2d(w2, out_channels, 4),
            ]
        elif size == "medium":
            layers = [
                nn.Conv2d(3, w1, 4, padding=3 * p), nn.ReLU(), nn.AvgPool2d(2, 2, padding=p),
                nn.Conv2d(w1, w2, 4, padding=3 * p), nn.ReLU(), nn.AvgPool2d(2, 2, padding=p),
                nn.Conv2d(w2, w2, 1), nn.ReLU(),
                nn.Conv2d(w2, w2, 3, padding=p), nn.ReLU(),
                nn.Conv2d(w2, out_channels, 4), nn.ReLU(),
                nn.Conv2d(out_channels, out_channels, 1),
            ]
        else:
            raise ValueError(f"PDN size must be 'small' or 'medium', got {size!r}")
        super().__init__(*layers)
        self.size = size
        self.out_channels = out_channels
        self.padding = padding
        self.width_divisor = width_divisor


def pdn_output_size(image_size: int, padding: bool) -> int:
    """Side of the PDN output map for a square input (both sizes share the geometry)."""
    return image_size // 4 if padding else image_size // 4 - 8

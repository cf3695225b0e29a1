"""LGST, CSAD's local–global student–teacher branch (csad.md §4).

Teacher: frozen CNN layer2 + layer3 → bilinear to 64×64 → concat → 3×3 avg-pool (stride 1,
pad 1) → a seeded, frozen, never-trained 1×1 conv to ``channels`` (saved in the state dict).
Student: EfficientAD's PDN-M with padding, its last 1×1 conv replaced by two 1×1 heads
(``st`` imitates the teacher, ``ae`` the autoencoder); the heads are concatenated
[st | ae] so the model is a ``StudentTeacher`` and trains with the shared loop and map helpers.
Autoencoder: EfficientAD's, with ``channels`` outputs and padding (64×64 for 256 input).
Map: M̃_ST + M̃_AE (plain sum, quantile-normalised on validation). Score: the max of that map
bilinearly resized to the input size (``upsample_score``, the official ``CSAD.py`` whose saved
scores the paper's benchmark fuses), or of the h×w map itself (the official ONNX export graph).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ad_pipeline.components.student_teacher.autoencoder import Autoencoder
from ad_pipeline.components.student_teacher.data import normalize
from ad_pipeline.components.student_teacher.maps import MapQuantiles, fit_quantiles, normalise_map
from ad_pipeline.components.student_teacher.model import StudentTeacher
from ad_pipeline.components.student_teacher.pdn import PDN, pdn_output_size
from ad_pipeline.seed import seeded


class LGSTTeacher(nn.Module):
    """Normalised image [B,3,H,W] → [B,channels,H/4,W/4] (frozen)."""

    def __init__(self, encoder: nn.Module, in_channels: int, *, channels: int = 512, out_size: int = 64,
                 layers: Sequence[str] = ("layer2", "layer3"), seed: int = 0):
        super().__init__()
        self.encoder = encoder
        self.layers = tuple(layers)
        self.out_size = out_size
        with seeded(seed):
            self.proj = nn.Conv2d(in_channels, channels, 1)  # PyTorch default init, seeded
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x, list(self.layers))
        size = (self.out_size, self.out_size)
        f = torch.cat([F.interpolate(feats[n], size=size, mode="bilinear", align_corners=False) for n in self.layers], 1)
        return self.proj(F.avg_pool2d(f, 3, stride=1, padding=1))


class LocalGlobalStudent(nn.Module):
    """PDN-M trunk (padding) + two 1×1 heads: [B,3,H,W] → [B,2·channels,h,w] = [st | ae]."""

    def __init__(self, channels: int = 512, out_size: int = 64, width_divisor: int = 1):
        super().__init__()
        pdn = PDN("medium", channels, padding=True, width_divisor=width_divisor)
        self.trunk = nn.Sequential(*list(pdn)[:-1])  # drop PDN-M's final 1×1 conv
        self.st = nn.Conv2d(channels, channels, 1)
        self.ae = nn.Conv2d(channels, channels, 1)
        self.out_size = out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.interpolate(self.trunk(x), size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return torch.cat([self.st(z), self.ae(z)], 1)


class LGST(StudentTeacher):
    """Teacher/student/autoencoder; forward: normalised [B,3,H,W] → (map [B,1,h,w], score [B])."""

    def __init__(self, teacher: LGSTTeacher, *, image_size: int = 256, channels: int = 512, width_divisor: int = 1,
                 upsample_score: bool = True):
        super().__init__(channels)
        out = pdn_output_size(image_size, padding=True)
        self.image_size = image_size
        self.upsample_score = upsample_score
        self.teacher = teacher
        self.student = LocalGlobalStudent(channels, out, width_divisor)
        self.autoencoder = Autoencoder(image_size, channels, padding=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m_st, m_ae = self.raw_maps(x)
        q = self.quantiles
        m = normalise_map(m_st, q[0], q[1]) + normalise_map(m_ae, q[2], q[3])
        s = m
        if self.upsample_score:
            s = F.interpolate(m, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return m, s.amax(dim=(1, 2, 3))


@torch.no_grad()
def fit_map_quantiles(model: LGST, images: torch.Tensor, *, batch_size: int = 8, cap: int = 10_000_000,
                      seed: int = 0) -> MapQuantiles:
    """Set and return q(0.9)/q(0.995) of the raw ST and AE maps over uint8 validation images
    [N,3,H,W] (normalisation skipped when degenerate). Memory: N·h·w floats per map kind."""
    model.eval()
    q, _ = fit_quantiles((model.raw_maps(normalize(images[i:i + batch_size].float().div(255)))
                          for i in range(0, len(images), batch_size)), cap, seed)
    model.quantiles.copy_(q.as_tensor())
    return q


@torch.no_grad()
def lgst_scores(model: LGST, images: torch.Tensor, *, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N,3,H,W] → (scores float32 [N], maps float32 [N,h,w])."""
    model.eval()
    maps, scores = [], []
    for i in range(0, len(images), batch_size):
        m, s = model(normalize(images[i:i + batch_size].float().div(255)))
        maps.append(m[:, 0].numpy())
        scores.append(s.numpy())
    return np.concatenate(scores).astype(np.float32), np.concatenate(maps).astype(np.float32)

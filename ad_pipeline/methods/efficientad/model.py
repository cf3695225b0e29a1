"""The trained EfficientAD as one module: normalised image → (anomaly map, image score).

Holds teacher (frozen), student, autoencoder, the teacher channel statistics and the map
quantiles as buffers, so a saved state dict is all that standalone inference (and the ONNX
graph) needs.
"""

from __future__ import annotations

import torch
from torch import nn

from ad_pipeline.methods.efficientad.autoencoder import Autoencoder
from ad_pipeline.methods.efficientad.maps import (MapQuantiles, combine_maps, normalise_map, raw_maps,
                                                  to_working_resolution)
from ad_pipeline.methods.efficientad.pdn import STUDENT_CHANNELS, TEACHER_CHANNELS, PDN, ModelSize


class EfficientADModel(nn.Module):
    """Teacher/student/autoencoder of one size; forward: [B,3,H,W] → (map [B,1,H,W], score [B])."""

    def __init__(self, size: ModelSize, image_size: int = 256):
        super().__init__()
        self.size = size
        self.image_size = image_size
        self.teacher = PDN(size, TEACHER_CHANNELS, padding=False).requires_grad_(False)
        self.student = PDN(size, STUDENT_CHANNELS, padding=False)
        self.autoencoder = Autoencoder(image_size, TEACHER_CHANNELS, padding=False)
        self.register_buffer("teacher_mean", torch.zeros(1, TEACHER_CHANNELS, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, TEACHER_CHANNELS, 1, 1))
        self.register_buffer("quantiles", MapQuantiles().as_tensor())  # st_a, st_b, ae_a, ae_b

    def teacher_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised teacher output T̂ [B,384,h,w]."""
        return (self.teacher(x) - self.teacher_mean) / self.teacher_std

    def raw_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M_ST, M_AE), each [B,1,h,w] at PDN resolution, before quantile normalisation."""
        return raw_maps(self.teacher_features(x), self.student(x), self.autoencoder(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m_st, m_ae = self.raw_maps(x)
        q = self.quantiles
        m = combine_maps(normalise_map(m_st, q[0], q[1]), normalise_map(m_ae, q[2], q[3]))
        m = to_working_resolution(m, self.image_size)
        return m, m.amax(dim=(1, 2, 3))

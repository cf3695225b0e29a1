"""Student–teacher detectors as modules: normalised image → (anomaly map, image score).

:class:`StudentTeacher` holds what EfficientAD and CSAD's LGST share: frozen teacher, student,
autoencoder, the teacher channel statistics and the map quantiles as buffers, so a saved state
dict is all that standalone inference (and the ONNX graph) needs. :class:`EfficientADModel` is
EfficientAD's network of one size.
"""

from __future__ import annotations

import torch
from torch import nn

from ad_pipeline.components.student_teacher.autoencoder import Autoencoder
from ad_pipeline.components.student_teacher.maps import (MAP_BORDER, MapQuantiles, combine_maps, normalise_map,
                                                          raw_maps, to_working_resolution)
from ad_pipeline.components.student_teacher.pdn import TEACHER_CHANNELS, PDN, ModelSize


class StudentTeacher(nn.Module):
    """Base of the detectors trained by ``train.train_student_autoencoder``.

    Subclasses set ``teacher`` (normalised [B,3,H,W] → [B,C,h,w], frozen), ``student``
    (→ [B,2C,h,w]: teacher-imitating half | autoencoder-imitating half) and ``autoencoder``
    (→ [B,C,h,w]). Buffers: ``teacher_mean`` / ``teacher_std`` [1,C,1,1] and ``quantiles`` [4]
    (st_a, st_b, ae_a, ae_b).
    """

    teacher: nn.Module
    student: nn.Module
    autoencoder: nn.Module

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("teacher_mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("teacher_std", torch.ones(1, channels, 1, 1))
        self.register_buffer("quantiles", MapQuantiles().as_tensor())

    def teacher_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised teacher output T̂ [B,C,h,w]."""
        return (self.teacher(x) - self.teacher_mean) / self.teacher_std

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(T̂ [B,C,h,w], S [B,2C,h,w], A [B,C,h,w])."""
        return self.teacher_features(x), self.student(x), self.autoencoder(x)

    def raw_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M_ST, M_AE), each [B,1,h,w] at the network's resolution, before quantile normalisation."""
        return raw_maps(*self.outputs(x))


class EfficientADModel(StudentTeacher):
    """Teacher/student/autoencoder of one size; forward: [B,3,H,W] → (map [B,1,H,W], score [B]).

    ``channels`` (teacher; the student has twice as many) and ``width_divisor`` default to the
    paper's network; smaller values only make tiny smoke-test models. ``map_border``: zeros padded
    around the combined map before the resize (``maps.MAP_BORDERS``).
    """

    def __init__(self, size: ModelSize, image_size: int = 256, channels: int = TEACHER_CHANNELS,
                 width_divisor: int = 1, map_border: int = MAP_BORDER):
        super().__init__(channels)
        self.size = size
        self.image_size = image_size
        self.map_border = map_border
        self.teacher = PDN(size, channels, padding=False, width_divisor=width_divisor).requires_grad_(False)
        self.student = PDN(size, 2 * channels, padding=False, width_divisor=width_divisor)
        self.autoencoder = Autoencoder(image_size, channels, padding=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.map_and_score(*self.outputs(x))

    def map_and_score(self, t_hat: torch.Tensor, student: torch.Tensor,
                      ae: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Network outputs → (combined map [B,1,H,W] at image_size, score [B] = its max)."""
        m_st, m_ae = raw_maps(t_hat, student, ae)
        q = self.quantiles
        m = combine_maps(normalise_map(m_st, q[0], q[1]), normalise_map(m_ae, q[2], q[3]))
        m = to_working_resolution(m, self.image_size, self.map_border)
        return m, m.amax(dim=(1, 2, 3))

"""EfficientAD's inference graph for export: unit RGB [B,3,S,S] → (map [B,S,S], score [B]).

ImageNet normalisation, teacher/student/autoencoder and the validation map quantiles are all
inside (``EfficientADModel`` holds the quantiles as buffers).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ad_pipeline.components.student_teacher.model import EfficientADModel
from ad_pipeline.export.inference import Inference, Normalize
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.efficientad.method import EfficientAD, EfficientADConfig


class EfficientADInference(nn.Module):
    def __init__(self, model: EfficientADModel):
        super().__init__()
        self.normalize = Normalize()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap, score = self.model(self.normalize(x))
        return amap[:, 0], score


def build(model_dir: Path, cfg: EfficientADConfig, ctx: RunContext) -> Inference:
    method = EfficientAD.load(model_dir, cfg, ctx)
    return Inference(EfficientADInference(method.model.cpu()), resize=cfg.image_size)

"""PUAD's inference graph for export: unit RGB [B,3,S,S] → (EfficientAD's map [B,S,S], PUAD score [B]).

Score = (s_E − μ_E)/σ_E + w · (d_M − μ_M)/σ_M as in ``puad``; the Gaussian (mean, precision)
and the four validation constants are float32 buffers (the library path computes d_M in
float64 numpy, so scores agree to ~1e-5 relative, not bit for bit).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ad_pipeline.export.inference import Inference, Normalize
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.puad import PUAD, PUADM, PUADConfig


class PUADInference(nn.Module):
    def __init__(self, method: PUAD):
        super().__init__()
        self.normalize = Normalize()
        self.model = method.model.cpu().eval()
        self.student_features = method.cfg.feature_extractor == "student"
        self.mahalanobis = method.gaussian.module()
        c = method.calib
        self.register_buffer("calib", torch.tensor([c["mu_E"], c["sd_E"], c["mu_M"], c["sd_M"],
                                                    method.cfg.w_unpicturable], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_hat, student, ae = self.model.outputs(self.normalize(x))
        f = student[:, : t_hat.shape[1]] if self.student_features else t_hat
        amap, s_e = self.model.map_and_score(t_hat, student, ae)
        s_m = self.mahalanobis(f.mean(dim=(2, 3)))
        mu_e, sd_e, mu_m, sd_m, w = self.calib
        return amap[:, 0], (s_e - mu_e) / sd_e + w * (s_m - mu_m) / sd_m


def build(model_dir: Path, cfg: PUADConfig, ctx: RunContext, method_cls: type[PUAD] = PUAD) -> Inference:
    method = method_cls.load(model_dir, cfg, ctx)
    return Inference(PUADInference(method), resize=method.model.image_size)


def build_m(model_dir: Path, cfg: PUADConfig, ctx: RunContext) -> Inference:
    """PUAD-M's graph (its EfficientAD-M is ``ctx.upstream_dirs["efficientad_m"]``)."""
    return build(model_dir, cfg, ctx, PUADM)

"""CSAD's whole inference path as one module (csad.md §6), for export.

Unit RGB [B,3,S,S] → (LGST map [B,S/4,S/4], score [B]): ImageNet normalisation → segmentor
argmax → class histograms → Mahalanobis with the stored pinv covariances → trimmed-z constants,
plus LGST; every statistic is a buffer. Computed in float32 on the float image (the library
path uses float64 numpy for the histogram distances and a uint8-rounded image for LGST), so
scores agree to ~1e-3, not bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ad_pipeline.export.inference import Inference, Normalize
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.csad.config import CSADConfig
from ad_pipeline.methods.csad.method import CSAD
from ad_pipeline.methods.csad.patch_hist import class_histograms


class CSADInference(nn.Module):
    def __init__(self, method: CSAD):
        super().__init__()
        self.normalize = Normalize()
        self.segmentor = method.segmentor.eval()
        self.lgst = method.lgst.eval()
        self.num_classes = method.hist.num_classes
        self.hist = method.hist.global_model.module()
        self.patch = method.hist.patch_model.module()
        s = method.stats
        self.register_buffer("norm", torch.tensor([[s[k].mean, s[k].std] for k in ("hist", "patch_hist", "ph", "lgst")],
                                                  dtype=torch.float32))
        self.branch_weights = (float(method.cfg.branches != "lgst"), float(method.cfg.branches != "patch_hist"))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalize(x)
        seg = self.segmentor(x).argmax(1)
        h_g, h_p = class_histograms(seg, self.num_classes)
        n = self.norm
        z_g = (self.hist(h_g) - n[0, 0]) / n[0, 1]
        z_p = (self.patch(h_p) - n[1, 0]) / n[1, 1]
        ph = (z_g + z_p - n[2, 0]) / n[2, 1]
        lgst_map, lgst_score = self.lgst(x)
        w_ph, w_lg = self.branch_weights  # csad.branches
        return lgst_map[:, 0], w_ph * ph + w_lg * (lgst_score - n[3, 0]) / n[3, 1]


def build(model_dir: Path, cfg: CSADConfig, ctx: RunContext) -> Inference:
    return Inference(CSADInference(CSAD.load(model_dir, cfg, ctx)), resize=cfg.image_size)

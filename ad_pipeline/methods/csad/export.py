"""CSAD's whole inference path as one module (csad.md §6), for ONNX export.

Normalised image [B,3,S,S] → (score [B], LGST map [B,1,S/4,S/4]): segmentor argmax → class
histograms → Mahalanobis with the stored pinv covariances → trimmed-z constants, plus LGST;
every statistic is a buffer. Computed in float32 (the library path uses float64 numpy for the
histogram distances), so scores agree to ~1e-4, not bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from ad_pipeline.data.images import load_batch
from ad_pipeline.export import check_parity, export_onnx
from ad_pipeline.methods.csad.method import CSAD
from ad_pipeline.methods.csad.patch_hist import Mahalanobis, class_histograms


def _mahalanobis(x: torch.Tensor, mean: torch.Tensor, inv_cov: torch.Tensor) -> torch.Tensor:
    d = x - mean
    return ((d @ inv_cov) * d).sum(1).clamp_min(0).sqrt()


class CSADInference(nn.Module):
    def __init__(self, method: CSAD):
        super().__init__()
        self.segmentor = method.segmentor
        self.lgst = method.lgst
        self.num_classes = method.hist.num_classes

        def buf(name: str, model: Mahalanobis) -> None:
            self.register_buffer(f"{name}_mean", torch.as_tensor(model.mean, dtype=torch.float32))
            self.register_buffer(f"{name}_inv_cov", torch.as_tensor(model.inv_cov, dtype=torch.float32))

        buf("hist", method.hist.global_model)
        buf("patch", method.hist.patch_model)
        s = method.stats
        self.register_buffer("norm", torch.tensor([[s[k].mean, s[k].std] for k in ("hist", "patch_hist", "ph", "lgst")],
                                                  dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seg = self.segmentor(x).argmax(1)
        h_g, h_p = class_histograms(seg, self.num_classes)
        n = self.norm
        z_g = (_mahalanobis(h_g, self.hist_mean, self.hist_inv_cov) - n[0, 0]) / n[0, 1]
        z_p = (_mahalanobis(h_p, self.patch_mean, self.patch_inv_cov) - n[1, 0]) / n[1, 1]
        ph = (z_g + z_p - n[2, 0]) / n[2, 1]
        lgst_map, lgst_score = self.lgst(x)
        return ph + (lgst_score - n[3, 0]) / n[3, 1], lgst_map


def export_csad(method: CSAD, out_path: Path, images: Sequence[Path], *, atol: float = 1e-3) -> float:
    """Export a fitted CSAD to ONNX (input ``input`` [B,3,S,S] normalised; outputs ``score``,
    ``map``; dynamic batch; opset 17) and return the max |torch − onnxruntime| on ``images``."""
    module = CSADInference(method).eval()
    x = load_batch(list(images), method.cfg.image_size)
    export_onnx(module, x[:1], out_path, input_names=["input"], output_names=["score", "map"])
    return check_parity(module, out_path, x, atol=atol)

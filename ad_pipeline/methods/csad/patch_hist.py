"""CSAD's patch-histogram branch (csad.md §3): class histograms of a segmentation, Mahalanobis
distances (``components.mahalanobis``, sample covariance) to the training histograms.

Histograms use one fixed layout everywhere (fit, scoring, export): the global histogram h_g
[C] and the four quadrant histograms concatenated in the order TL, BL, TR, BR (the official
numpy path's EMPatches order and its ONNX graph's) → h_p [4C];
each is the fraction of the region's pixels per class, with the background bin (class 0)
set to 0 in both fit and inference.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ad_pipeline.components.mahalanobis import Mahalanobis


def class_histograms(seg: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """int [B,H,W] class maps → (h_g [B,C], h_p [B,4C]) float32; H, W even."""
    foreground = (torch.arange(num_classes, device=seg.device) > 0).float()  # background bin → 0
    onehot = F.one_hot(seg.long(), num_classes).float() * foreground  # [B,H,W,C]; no in-place op (ONNX)
    h, w = seg.shape[1] // 2, seg.shape[2] // 2
    quads = [onehot[:, :h, :w], onehot[:, h:, :w], onehot[:, :h, w:], onehot[:, h:, w:]]  # TL, BL, TR, BR
    return onehot.mean((1, 2)), torch.cat([q.mean((1, 2)) for q in quads], 1)


@dataclass
class PatchHistogramModel:
    """Fitted branch: Mahalanobis models of h_g and h_p."""

    num_classes: int
    global_model: Mahalanobis
    patch_model: Mahalanobis

    @classmethod
    def fit(cls, train_seg: torch.Tensor, num_classes: int) -> PatchHistogramModel:
        h_g, h_p = class_histograms(train_seg, num_classes)
        return cls(num_classes, Mahalanobis.fit(h_g.numpy()), Mahalanobis.fit(h_p.numpy()))

    def distances(self, seg: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Class maps [N,H,W] → (d_g [N], d_p [N])."""
        h_g, h_p = class_histograms(seg, self.num_classes)
        return self.global_model(h_g.numpy()), self.patch_model(h_p.numpy())

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"hist_mean": self.global_model.mean, "hist_invcov": self.global_model.precision,
                "patch_hist_mean": self.patch_model.mean, "patch_hist_invcov": self.patch_model.precision,
                "num_classes": np.asarray(self.num_classes)}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> PatchHistogramModel:
        return cls(int(a["num_classes"]), Mahalanobis(a["hist_mean"], a["hist_invcov"]),
                   Mahalanobis(a["patch_hist_mean"], a["patch_hist_invcov"]))

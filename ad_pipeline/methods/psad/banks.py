"""PSAD's memory-bank features (psad.md §5).

* histogram: raw pixel count per class (background included) → [C].
* composition: per non-background class k, the mean over its pixels of the per-pixel feature
  (frozen CNN layers, each k×k average-pooled and bilinearly upsampled, align_corners=True, to
  the part map's resolution), divided by (Σ M_k + 1) → [(C−1)·D].

The upsampled feature volume (D=1792 × 512² floats ≈ 1.9 GB per image) is never built:
bilinear upsampling is linear, Up(F) = U_h F U_wᵀ, so Σ_p Up(F)[p]·M_k[p] = Σ_q F[q]·(U_hᵀ M_k U_w)[q]
— the part masks are pulled back to each layer's grid instead (exact up to float rounding).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def histogram_features(part_maps: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int [N,H,W] → float32 [N,C] pixel counts."""
    return F.one_hot(part_maps.long(), num_classes).sum((1, 2)).float()


def interpolation_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """U [n_out, n_in] with U @ f = 1-D linear upsampling of f (align_corners=True)."""
    eye = torch.eye(n_in).unsqueeze(0)  # [1, n_in(channels), n_in(length)]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=True)[0].T


def composition_features(features: Sequence[torch.Tensor], part_maps: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Masked mean features of every foreground part.

    ``features``: maps [N,D_l,h_l,w_l] (already pooled); ``part_maps`` int [N,H,W].
    Returns [N,(C−1)·ΣD_l] in class order (class-major). Memory: N·C·H·W mask floats.
    """
    n, h, w = part_maps.shape
    masks = F.one_hot(part_maps.long(), num_classes).permute(0, 3, 1, 2)[:, 1:].float()  # [N,C-1,H,W]
    per_layer = []
    for f in features:
        u_h = interpolation_matrix(f.shape[2], h).to(f)
        u_w = interpolation_matrix(f.shape[3], w).to(f)
        pulled = torch.einsum("Hh,nkHW,Ww->nkhw", u_h, masks, u_w)
        per_layer.append(torch.einsum("ndhw,nkhw->nkd", f, pulled))
    sums = torch.cat(per_layer, 2)  # [N,C-1,D]
    return (sums / (masks.sum((2, 3)).unsqueeze(2) + 1.0)).reshape(n, -1)


class PooledFeatures(nn.Module):
    """Frozen CNN → list of ``layers`` maps, each average-pooled (k×k, stride 1, pad k//2)."""

    def __init__(self, encoder: nn.Module, layers: Sequence[str] = ("layer1", "layer2", "layer3"), pool: int = 5):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.layers = tuple(layers)
        self.pool = pool

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.encoder(x, list(self.layers))
        return [F.avg_pool2d(feats[n], self.pool, stride=1, padding=self.pool // 2) for n in self.layers]

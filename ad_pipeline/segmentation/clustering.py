"""Component descriptors, MeanShift clustering and histogram filtering (csad.md §1.3–1.4).

Pipeline per category: proposer label images → per-component 65×65 crops → rotation-
invariant CNN descriptor + seeded random projection → MeanShift over all components → small
clusters discarded → per-image area histograms → HDBSCAN over histograms → classes that are
present in the dominant histogram cluster, re-indexed 1..K → the "good" (supervised) subset.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import binary_fill_holes
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import HDBSCAN, MeanShift
from torch import nn

from ad_pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD

CROP_SIZE = 65


def component_crop(image: np.ndarray, mask: np.ndarray, size: int = CROP_SIZE) -> np.ndarray | None:
    """Crop one component into a centred ``size``×``size`` uint8 RGB patch (zeros outside it).

    The largest external contour's holes are filled; the crop is scaled so the diagonal of
    its minimum-area rectangle spans ``size`` pixels (each side capped at ``size``).
    ``image`` uint8 [H,W,3], ``mask`` bool [H,W]. None if the mask has no contour.
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    filled = np.zeros(mask.shape, dtype=np.uint8)
    cv2.drawContours(filled, [contour], -1, 1, thickness=cv2.FILLED)
    x, y, w, h = cv2.boundingRect(contour)
    crop = (image * filled[..., None])[y:y + h, x:x + w]
    (_, _), (rw, rh), _ = cv2.minAreaRect(contour)
    scale = size / max(math.hypot(rw, rh), 1.0)
    new_w, new_h = min(size, max(1, round(w * scale))), min(size, max(1, round(h * scale)))
    crop = cv2.resize(crop, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top:top + new_h, left:left + new_w] = crop
    return out


def rotate_batch(x: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotate every image of [B,C,H,W] by every angle (bilinear, zero fill) → [B·R,C,H,W].

    Hand-written with ``affine_grid`` because torchvision's ``rotate`` takes one angle per call.
    """
    b, r = x.shape[0], angles_deg.numel()
    rad = torch.deg2rad(angles_deg.to(x.dtype))
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # [R,2,3]
    theta = theta.repeat(b, 1, 1)
    xs = x.repeat_interleave(r, dim=0)
    grid = F.affine_grid(theta, list(xs.shape), align_corners=False)
    return F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class ComponentDescriptor(nn.Module):
    """Rotation-invariant descriptor of component crops.

    ``features``: module mapping a normalised [B,3,65,65] batch to a feature map [B,C,h,w]
    (WideResNet-50-2 layer4 in the paper, see :func:`backbone_feature_layer`). Each crop is
    rotated by ``linspace(0, 360, n_rotations)`` degrees, features are averaged over space
    and rotations, then projected by a frozen random linear map C → ``proj_dim`` with
    weights ~ N(0, 0.01²) drawn from ``seed`` (bias 0).
    Input uint8-range float crops [B,3,65,65] in [0,1]; output [B,proj_dim].
    """

    def __init__(self, features: nn.Module, in_dim: int, *, proj_dim: int = 512, n_rotations: int = 60,
                 seed: int = 42, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("angles", torch.linspace(0, 360, n_rotations))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("proj_weight", torch.randn(proj_dim, in_dim, generator=g) * 0.01)

    @torch.inference_mode()
    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        rotated = (rotate_batch(crops, self.angles) - self.mean) / self.std
        pooled = self.features(rotated).mean(dim=(2, 3))  # [B·R, C]
        per_crop = pooled.view(crops.shape[0], self.angles.numel(), -1).mean(1)
        return per_crop @ self.proj_weight.T


class BackboneLayer(nn.Module):
    """Adapter: a registry backbone (``bb(x, [layer]) -> {layer: map}``) as a single-output module."""

    def __init__(self, backbone, layer: str):
        super().__init__()
        self.backbone = backbone
        self.model = backbone.model  # registered so .eval()/.to() reach the weights
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x, [self.layer])[self.layer]


def describe_components(descriptor: ComponentDescriptor, crops: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """uint8 crops [N,65,65,3] → float32 descriptors [N,proj_dim]; ``batch_size`` crops
    (× n_rotations images) go through the CNN at a time, which bounds memory."""
    out = []
    for i in range(0, len(crops), batch_size):
        x = torch.from_numpy(crops[i:i + batch_size]).permute(0, 3, 1, 2).float().div_(255.0)
        out.append(descriptor(x).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, descriptor.proj_weight.shape[0]), np.float32)


def cluster_components(descriptors: np.ndarray, image_index: np.ndarray, n_images: int, *, bandwidth: float,
                       min_members_ratio: float = 0.5) -> np.ndarray:
    """MeanShift (``cluster_all``) over all components; clusters with fewer than
    ``min_members_ratio · n_images`` members get label −1. Returns int64 [n_components]."""
    if len(descriptors) == 0:
        return np.zeros(0, dtype=np.int64)
    labels = MeanShift(bandwidth=bandwidth, cluster_all=True).fit_predict(descriptors).astype(np.int64)
    counts = np.bincount(labels)
    labels[counts[labels] < min_members_ratio * n_images] = -1
    return labels


def area_histograms(cluster_maps: Sequence[np.ndarray], n_clusters: int) -> np.ndarray:
    """Fraction of each image's area covered by clusters 1..n (map value 0 = none) → [N, n]."""
    hists = np.zeros((len(cluster_maps), n_clusters), dtype=np.float64)
    for i, cmap in enumerate(cluster_maps):
        counts = np.bincount(cmap.ravel(), minlength=n_clusters + 1)
        hists[i] = counts[1:n_clusters + 1] / cmap.size
    return hists


@dataclass
class HistogramFilter:
    """Result of §1.4: ``kept_classes`` cluster ids (1-based, map values) in new class order
    1..K; ``good_indices`` sorted image indices of the supervised subset; ``hist_labels`` the
    HDBSCAN label per image; ``largest`` the dominant histogram cluster; ``min_cluster_size`` used."""

    kept_classes: np.ndarray
    good_indices: np.ndarray
    hist_labels: np.ndarray
    largest: int
    min_cluster_size: int


def hdbscan_with_retry(hists: np.ndarray, min_cluster_size: int) -> tuple[np.ndarray, int]:
    """HDBSCAN labels; while every point is noise, retry with ``min_cluster_size`` − 1 (≥ 2).
    If even 2 gives only noise, all images form one cluster (label 0)."""
    size = max(2, min_cluster_size)
    while True:
        if len(hists) >= 2:
            labels = HDBSCAN(min_cluster_size=size, copy=True).fit_predict(hists)
            if (labels >= 0).any():
                return labels.astype(np.int64), size
        if size <= 2 or len(hists) < 2:
            return np.zeros(len(hists), dtype=np.int64), size
        size -= 1


def filter_histograms(hists: np.ndarray, *, min_cluster_frac: float = 0.1, min_class_area: float = 0.001,
                      topk_ratio: float = 0.5, largest_only: bool = True) -> HistogramFilter:
    """Pick the dominant histogram cluster, drop classes whose mean area fraction there is ≤
    ``min_class_area``, and choose the confidently labelled images.

    ``hists`` [N, n_clusters]. Good images: per histogram cluster, the ``topk_ratio`` share
    of ALL images nearest (L∞, on kept classes) to the cluster's mean histogram; only the
    dominant cluster's list if ``largest_only`` (``filter_hist``), else the union. With no
    clusters at all (no component survived) nothing is kept and every image counts as good.
    """
    n = len(hists)
    if hists.shape[1] == 0:
        return HistogramFilter(np.zeros(0, np.int64), np.arange(n, dtype=np.int64), np.full(n, -1), -1, 0)
    labels, used = hdbscan_with_retry(hists, int(min_cluster_frac * n))
    cluster_ids, sizes = np.unique(labels[labels >= 0], return_counts=True)
    largest = int(cluster_ids[np.argmax(sizes)])
    kept = np.flatnonzero(hists[labels == largest].mean(0) > min_class_area) + 1
    kept_hists = hists[:, kept - 1]
    k = max(1, int(topk_ratio * n))
    chosen = []
    for c in ([largest] if largest_only else cluster_ids):
        dist = np.abs(kept_hists - kept_hists[labels == c].mean(0)).max(1) if kept.size else np.zeros(n)
        chosen.append(np.argsort(dist, kind="stable")[:k])
    good = np.unique(np.concatenate(chosen))
    return HistogramFilter(kept.astype(np.int64), good.astype(np.int64), labels, largest, used)


def relabel(cluster_map: np.ndarray, kept_classes: np.ndarray) -> np.ndarray:
    """Map cluster ids ``kept_classes[i]`` → class i+1, everything else → 0 (uint8 [H,W])."""
    lut = np.zeros(max(int(cluster_map.max()), int(kept_classes.max(initial=0))) + 1, dtype=np.uint8)
    lut[kept_classes] = np.arange(1, len(kept_classes) + 1, dtype=np.uint8)
    return lut[cluster_map]


def fill_class_holes(label_map: np.ndarray, *, min_px: int = 100) -> np.ndarray:
    """CSAD's ``fill_holes`` (csad.md §2.2) on a class map uint8 [H,W] → uint8 [H,W].

    Classes of at most ``min_px`` pixels become background; every other class region gets its
    holes filled, and the filled regions are painted largest first, so a part lying inside a
    larger one (e.g. fruit in a container) stays on top. Class ids are kept (the reference
    renumbers them by area per image, which permutes ids between images).
    """
    regions = [(c, binary_fill_holes(label_map == c)) for c in np.unique(label_map) if c != 0]
    regions = [(c, m) for c, m in regions if (label_map == c).sum() > min_px]
    out = np.zeros_like(label_map)
    for c, mask in sorted(regions, key=lambda cm: -int(cm[1].sum())):
        out[mask] = c
    return out


def matched_miou(pred_maps: Sequence[np.ndarray], true_maps: Sequence[np.ndarray]) -> float:
    """Mean IoU over the true foreground classes after matching predicted to true classes.

    Background (0) is matched to background; foreground classes are matched one-to-one by
    maximum total IoU (Hungarian, ``scipy.optimize.linear_sum_assignment``) on the confusion
    matrix accumulated over all images; an unmatched true class counts as IoU 0.
    """
    n_pred = max(int(m.max()) for m in pred_maps) + 1
    n_true = max(int(m.max()) for m in true_maps) + 1
    conf = np.zeros((n_pred, n_true), dtype=np.int64)
    for p, t in zip(pred_maps, true_maps, strict=True):
        if p.shape != t.shape:
            raise ValueError(f"label map shapes differ: {p.shape} vs {t.shape}")
        conf += np.bincount(p.ravel().astype(np.int64) * n_true + t.ravel(), minlength=n_pred * n_true).reshape(n_pred, n_true)
    union = conf.sum(1, keepdims=True) + conf.sum(0, keepdims=True) - conf
    iou = np.divide(conf, union, out=np.zeros(conf.shape), where=union > 0)[1:, 1:]
    true_present = conf.sum(0)[1:] > 0
    if not true_present.any():
        return 1.0
    rows, cols = linear_sum_assignment(iou, maximize=True)
    matched = np.zeros(n_true - 1)
    matched[cols] = iou[rows, cols]
    return float(matched[true_present].mean())

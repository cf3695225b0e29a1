"""CSAD's supervised-batch augmentation (csad.md §2.2), applied jointly to image and label map:
LSA (label-preserving component copy-paste, with probability ``lsa_ratio``), then
ShiftScaleRotate and RandomBrightnessContrast (albumentations' recipe, written with cv2).

Background mask (the region a pasted copy must mostly avoid). The official repo uses SAM's
corner-prompted mask of the scene around the object (the table outside the box), not the
unlabelled pixels: pasted parts must land on the object, next to the other parts. Offline
we have no SAM, so the stand-in is everything outside the convex hull of the label map's
foreground and the proposal components (:func:`scene_background`).

Fixed repo bugs: the source is re-sampled every ``resample_every`` failed tries (the repo's
condition never fired), and a copy that finds no destination in ``max_tries`` tries is
skipped (the repo pasted the last rejected placement). Deliberate deviation: the copy is
moved with nearest-neighbour warps for pixels *and* labels (the repo warps a zero-masked
image bilinearly, which darkens the pasted edges, and the label map bilinearly too, which
invents in-between class ids there), so every pasted pixel carries exactly the colour and
class of one source pixel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ad_pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD
from ad_pipeline.segmentation.proposers import overlap_ratio

DESTINATION_POINTS = 10_000  # uniform candidate destinations per try (repo value)


class AugmentConfig(BaseModel):
    """Defaults = the paper's (configs/segmentor: LSA_ratio 1.0, LSA_config; screw_bag uses min_distance 0.1)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    lsa_ratio: float = Field(1.0, ge=0.0, le=1.0)  # probability of LSA per supervised image
    min_aug_num: int = Field(1, ge=0)  # copies held to the stricter background overlap
    max_aug_num: int = Field(2, ge=0)  # at most this many copies per image
    weight_power: float = 0.0  # source sampled ∝ area**weight_power (0 = uniform)
    min_distance: float = Field(0.2, ge=0.0)  # destination ≥ this far (image fractions) from the source centre
    boundary: float = Field(0.1, ge=0.0, lt=0.5)  # destination centres inside [boundary, 1 − boundary]²
    min_label_overlap: float = 0.9  # candidate source: overlap ratio with the label foreground > this
    max_background_px: int = 100  # candidate source: at most this many background-labelled pixels
    mandatory_max_overlap: float = 0.5  # accept a mandatory copy when overlap with the background < this
    extra_max_overlap: float = 0.9  # the same for the copies beyond min_aug_num
    max_tries: int = Field(500, ge=1)
    resample_every: int = Field(10, ge=1)  # draw a new source after this many failed tries
    shift_limit: float = 0.01  # ShiftScaleRotate: fraction of width/height
    scale_limit: float = 0.01
    rotate_limit: float = 2.0  # degrees
    shift_scale_rotate_p: float = Field(0.5, ge=0.0, le=1.0)
    brightness_limit: float = 0.05
    contrast_limit: float = 0.05
    brightness_contrast_p: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> AugmentConfig:
        if self.min_aug_num > self.max_aug_num:
            raise ValueError(f"min_aug_num ({self.min_aug_num}) must not exceed max_aug_num ({self.max_aug_num})")
        reachable = np.sqrt(2.0) * (0.5 - self.boundary)
        if self.min_distance >= reachable:
            raise ValueError(f"min_distance must be < sqrt(2)·(0.5 − boundary) = {reachable:.3f}, "
                             f"got {self.min_distance}")
        return self


@dataclass(frozen=True)
class Placement:
    """One pasted copy: proposal value of the source, rotation (degrees, counter-clockwise as in
    cv2), 2×3 source→destination pixel matrix, centres (x, y) as image fractions, tries used,
    whether it was a mandatory copy (stricter background limit)."""

    source: int
    angle: int
    matrix: np.ndarray
    source_centre: tuple[float, float]
    destination: tuple[float, float]
    tries: int
    mandatory: bool


def scene_background(label: np.ndarray, proposal: np.ndarray) -> np.ndarray:
    """bool [H,W]: outside the convex hull of (label > 0) ∪ (proposal > 0); all True when both are empty."""
    points = cv2.findNonZero(((label > 0) | (proposal > 0)).astype(np.uint8))
    inside = np.zeros(label.shape, dtype=np.uint8)
    if points is not None:
        cv2.fillConvexPoly(inside, cv2.convexHull(points), 1)
    return inside == 0


def lsa_candidates(label: np.ndarray, proposal: np.ndarray, cfg: AugmentConfig) -> tuple[np.ndarray, np.ndarray]:
    """Proposal values usable as LSA sources and their areas (int64 [M] each).

    A component qualifies when it covers > 0.1 % of the image (the repo's split), its overlap
    ratio with the label foreground is > ``min_label_overlap`` and it holds ≤ ``max_background_px``
    background-labelled pixels.
    """
    values = proposal.ravel().astype(np.int64)
    foreground = label.ravel() > 0
    area = np.bincount(values, minlength=256)
    on_foreground = np.bincount(values[foreground], minlength=256)
    ratio = on_foreground / np.maximum(np.minimum(area, foreground.sum()), 1)  # overlap_ratio per value
    ok = (area > 0.001 * proposal.size) & (ratio > cfg.min_label_overlap) & (area - on_foreground <= cfg.max_background_px)
    ok[0] = False
    chosen = np.flatnonzero(ok)
    return chosen, area[chosen]


def sample_destination(centre: tuple[float, float], cfg: AugmentConfig, rng: np.random.Generator) -> tuple[float, float] | None:
    """(x, y) image fraction among ``DESTINATION_POINTS`` uniform points in [boundary, 1 − boundary]²,
    drawn ∝ squared distance to ``centre``; points closer than ``min_distance`` get weight 0.
    None when every point is too close."""
    points = rng.random((DESTINATION_POINTS, 2)) * (1.0 - 2.0 * cfg.boundary) + cfg.boundary
    dist2 = ((points - np.asarray(centre)) ** 2).sum(1)
    weights = np.where(dist2 < cfg.min_distance**2, 0.0, dist2)
    total = weights.sum()
    if total <= 0:
        return None
    pick = rng.choice(DESTINATION_POINTS, p=weights / total)
    return float(points[pick, 0]), float(points[pick, 1])


def warp_nearest(array: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``array`` [H,W] or [H,W,C] moved by the 2×3 ``matrix`` (nearest, zero outside)."""
    h, w = array.shape[:2]
    return cv2.warpAffine(array, matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def move_mask(mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """bool [H,W] mask moved by ``matrix`` (nearest)."""
    return warp_nearest(mask.astype(np.uint8), matrix) > 0


def bbox_centre(mask: np.ndarray) -> tuple[int, int]:
    """(x, y) pixel centre of the bounding box of a non-empty mask, as cv2.boundingRect x + w // 2."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0] + (cols[-1] - cols[0] + 1) // 2), int(rows[0] + (rows[-1] - rows[0] + 1) // 2)


class SourcePool:
    """Candidate sources drawn without replacement, ∝ area**power."""

    def __init__(self, values: np.ndarray, areas: np.ndarray, power: float):
        self.values = list(values.tolist())
        self.weights = list((areas.astype(np.float64) ** power).tolist())

    def __bool__(self) -> bool:
        return bool(self.values)

    def draw(self, rng: np.random.Generator) -> int:
        w = np.asarray(self.weights)
        i = int(rng.choice(len(w), p=w / w.sum()))
        self.weights.pop(i)
        return self.values.pop(i)


def place_copy(proposal: np.ndarray, background: np.ndarray, pool: SourcePool, mandatory: bool, cfg: AugmentConfig,
               rng: np.random.Generator) -> Placement | None:
    """Up to ``max_tries`` random placements of a source drawn from ``pool`` until its moved mask
    overlaps the background by < the mandatory/extra limit; the source is re-drawn every
    ``resample_every`` tries while the pool lasts. None = no valid placement (the copy is skipped)."""
    h, w = proposal.shape
    limit = cfg.mandatory_max_overlap if mandatory else cfg.extra_max_overlap
    source = pool.draw(rng)
    mask = proposal == source
    for attempt in range(cfg.max_tries):
        if attempt and attempt % cfg.resample_every == 0 and pool:
            source = pool.draw(rng)
            mask = proposal == source
        cx, cy = bbox_centre(mask)
        centre = (cx / w, cy / h)
        dest = sample_destination(centre, cfg, rng)
        angle = int(rng.integers(0, 360))
        if dest is None:
            continue
        matrix = cv2.getRotationMatrix2D((float(cx), float(cy)), angle, 1.0)
        matrix[:, 2] += (dest[0] * w - cx, dest[1] * h - cy)
        moved = move_mask(mask, matrix)
        if moved.any() and overlap_ratio(moved, background) < limit:
            return Placement(source, angle, matrix, centre, dest, attempt + 1, mandatory)
    return None


def lsa(image: np.ndarray, label: np.ndarray, proposal: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator,
        background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, list[Placement]]:
    """Copy-paste proposal components of one image onto itself (source = target).

    image float32 [H,W,3], label uint8 [H,W] class ids, proposal uint8 [H,W] component ids,
    background bool [H,W] (default :func:`scene_background`). Copy k < ``min_aug_num`` needs a
    background overlap < ``mandatory_max_overlap``, later ones < ``extra_max_overlap``; a copy
    with no valid placement is skipped. Returns new (image, label) and the placements made.
    """
    if background is None:
        background = scene_background(label, proposal)
    pool = SourcePool(*lsa_candidates(label, proposal, cfg), cfg.weight_power)
    out_image, out_label, placements = image.copy(), label.copy(), []
    for k in range(cfg.max_aug_num):
        if not pool:
            break
        placement = place_copy(proposal, background, pool, k < cfg.min_aug_num, cfg, rng)
        if placement is None:
            continue
        moved = move_mask(proposal == placement.source, placement.matrix)
        out_image[moved] = warp_nearest(image, placement.matrix)[moved]
        out_label[moved] = warp_nearest(label, placement.matrix)[moved]
        placements.append(placement)
    return out_image, out_label, placements


def shift_scale_rotate(image: np.ndarray, label: np.ndarray, cfg: AugmentConfig,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random shift (± shift_limit of the size), scale (1 ± scale_limit) and rotation (± rotate_limit°)
    about the image centre; image bilinear, label nearest, zero outside."""
    h, w = label.shape
    angle = rng.uniform(-cfg.rotate_limit, cfg.rotate_limit)
    scale = rng.uniform(1.0 - cfg.scale_limit, 1.0 + cfg.scale_limit)
    dx, dy = rng.uniform(-cfg.shift_limit, cfg.shift_limit, 2)
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += (dx * w, dy * h)
    image = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return image, warp_nearest(label, matrix)


def brightness_contrast(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """image [0,1] · (1 ± contrast_limit) + (± brightness_limit), clipped to [0, 1]."""
    alpha = 1.0 + rng.uniform(-cfg.contrast_limit, cfg.contrast_limit)
    beta = rng.uniform(-cfg.brightness_limit, cfg.brightness_limit)
    return np.clip(image * alpha + beta, 0.0, 1.0).astype(np.float32)


def augment_one(image: np.ndarray, label: np.ndarray, proposal: np.ndarray | None, cfg: AugmentConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The §2.2 chain on one image (float32 [H,W,3] in [0,1], uint8 [H,W]); ``proposal`` may be
    None only when ``lsa_ratio`` is 0."""
    if rng.random() < cfg.lsa_ratio:
        image, label, _ = lsa(image, label, proposal, cfg, rng)
    if rng.random() < cfg.shift_scale_rotate_p:
        image, label = shift_scale_rotate(image, label, cfg, rng)
    if rng.random() < cfg.brightness_contrast_p:
        image = brightness_contrast(image, cfg, rng)
    return image, label


class SupervisedAugment:
    """The ``augment(x, y, rows, gen)`` hook of :func:`~ad_pipeline.segmentation.train.train_segmentation`.

    ``proposals`` uint8 [N,H,W]: each training row's proposal label image at the training
    resolution (None only when ``cfg.lsa_ratio`` is 0). x is normalised with ``mean``/``std``
    and is de-normalised to [0, 1] for the augmentation. Memory: one float32 copy of the batch
    plus O(H·W) per image; randomness: one numpy Generator per batch seeded from ``gen``.
    """

    def __init__(self, cfg: AugmentConfig, proposals: np.ndarray | None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        if proposals is None and cfg.lsa_ratio > 0:
            raise ValueError("LSA (lsa_ratio > 0) needs the proposal label images")
        self.cfg = cfg
        self.proposals = proposals
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """x float [B,3,H,W] normalised, y int64 [B,H,W] in [0, 255], rows int64 [B] → augmented (x, y)."""
        if y.numel() and (int(y.min()) < 0 or int(y.max()) > 255):
            raise ValueError("label maps must hold class ids in [0, 255]")
        rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=gen)))
        images = (x * self.std + self.mean).permute(0, 2, 3, 1).contiguous().numpy()
        labels = y.numpy().astype(np.uint8)
        out_x, out_y = [], []
        for image, label, row in zip(images, labels, rows.tolist()):
            proposal = None if self.proposals is None else self.proposals[row]
            image, label = augment_one(image, label, proposal, self.cfg, rng)
            out_x.append(image)
            out_y.append(label)
        new_x = torch.from_numpy(np.stack(out_x)).permute(0, 3, 1, 2)
        return ((new_x - self.mean) / self.std).contiguous(), torch.from_numpy(np.stack(out_y)).long()

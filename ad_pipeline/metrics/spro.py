"""sPRO, the MVTec LOCO AD saturated per-region overlap (exact sweep over all scores).

A ground-truth *channel* is one defect (one PNG of ``ground_truth/<split>/<id>/``), even when
it has several disjoint blobs; channels of one image may overlap. A channel with area A and
saturation area S counts min(TP/S, 1): only its S highest-scoring pixels can ever add
overlap, so each channel contributes exactly those S pixels as positives of weight 1/S, and
the standard overlap curve of ``curve`` applies unchanged. False positives are positive
pixels outside the union of the image's channels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ad_pipeline.metrics.curve import area_under_curve, overlap_curve
from ad_pipeline.metrics.pool import PixelPool, PooledPixels

SPRO_LIMITS = (0.01, 0.05, 0.1, 0.3, 1.0)

Channel = tuple[np.ndarray, int]
"""One defect of one image: (mask bool [H,W], pixel_value selecting its DefectSpec)."""


@dataclass(frozen=True)
class DefectSpec:
    """One entry of a category's defects_config.json."""

    defect_name: str
    pixel_value: int
    saturation_threshold: float
    relative_saturation: bool

    def saturation_area(self, area: int) -> int:
        """Pixels of a channel of ``area`` pixels needed for full overlap.

        relative: floor(threshold * area), at least 1 (the official tool divides by zero at 0);
        absolute: min(threshold, area).
        """
        if self.relative_saturation:
            return max(1, int(np.floor(self.saturation_threshold * area)))
        return int(min(self.saturation_threshold, area))


def parse_defects_config(entries: Sequence[Mapping]) -> dict[int, DefectSpec]:
    """defects_config.json content (a list of objects) -> {pixel_value: DefectSpec}."""
    specs: dict[int, DefectSpec] = {}
    for entry in entries:
        try:
            spec = DefectSpec(str(entry["defect_name"]), int(entry["pixel_value"]),
                              float(entry["saturation_threshold"]), bool(entry["relative_saturation"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"defects_config entry {entry!r} is malformed ({e}); expected keys defect_name, "
                             "pixel_value, saturation_threshold, relative_saturation") from None
        valid = 0 < spec.saturation_threshold <= 1 if spec.relative_saturation else spec.saturation_threshold >= 1
        if not valid:
            raise ValueError(f"defect {spec.defect_name!r}: saturation_threshold {spec.saturation_threshold} is "
                             "invalid (relative: a fraction in (0,1]; absolute: pixels >= 1)")
        specs[spec.pixel_value] = spec
    return specs


def add_spro_image(pool: PixelPool, channels: Sequence[Channel], score_map: np.ndarray,
                   defects: Mapping[int, DefectSpec]) -> None:
    """Add one image: score_map float [H,W], channels as (mask [H,W], pixel_value) ([] if good).

    Memory per call: a few [H,W] temporaries; kept: OK pixels + saturation pixels.
    """
    score_map = np.asarray(score_map)
    outside = np.ones(score_map.shape, dtype=bool)
    tops, weights = [], []
    for mask, pixel_value in channels:
        mask = np.asarray(mask) != 0
        if mask.shape != score_map.shape:
            raise ValueError(f"channel mask shape {mask.shape} differs from its map {score_map.shape}")
        if pixel_value not in defects:
            raise ValueError(f"pixel value {pixel_value} is not in defects_config (known: {sorted(defects)})")
        scores = score_map[mask]
        if scores.size == 0:
            raise ValueError(f"channel with pixel value {pixel_value} is empty (no defect pixel)")
        sat = defects[pixel_value].saturation_area(scores.size)
        tops.append(np.partition(scores, scores.size - sat)[scores.size - sat:])
        weights.append(np.full(sat, 1.0 / sat))
        outside &= ~mask
    empty = np.empty(0, score_map.dtype)
    pool.add(score_map[outside], np.concatenate(tops) if tops else empty,
             np.concatenate(weights) if weights else empty)


def spro_of_pool(pool: PooledPixels, limits: Sequence[float] = SPRO_LIMITS) -> dict[str, float]:
    """{str(limit): normalised area} of the mean-over-channels sPRO curve."""
    fpr, overlap = overlap_curve(pool)
    return {limit_key(limit): area_under_curve(fpr, overlap, limit) for limit in limits}


def limit_key(limit: float) -> str:
    """The official JSON key of a limit: 0.05 -> "0.05", 1 -> "1.0"."""
    return str(float(limit))


def spro(gt_channels: Iterable[Sequence[Channel]], maps: Iterable[np.ndarray],
         defects_config: Mapping[int, DefectSpec] | Sequence[Mapping],
         limits: Sequence[float] = SPRO_LIMITS) -> dict[str, float]:
    """AU-sPRO at each limit over a set of images, as {"0.05": value, ...}.

    gt_channels: per image a list of (mask [H,W], pixel_value) channels ([] for good images);
    maps: per image a float [H,W] map. Both are consumed once, in step, so they may be lazy
    generators. Memory: 4 B per OK pixel (float32 maps) + 12 B per saturation pixel; time:
    one in-place sort of the OK scores.
    """
    defects = defects_config if isinstance(defects_config, Mapping) else parse_defects_config(defects_config)
    pool = PixelPool()
    for channels, score_map in zip(gt_channels, maps, strict=True):
        add_spro_image(pool, channels, score_map, defects)
    return spro_of_pool(pool.finish(), limits)

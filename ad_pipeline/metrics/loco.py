"""MVTec LOCO AD splits: logical = good + logical_anomalies, structural = good +
structural_anomalies, mean = 0.5 * (logical + structural) (not a pooled curve).

Image AUROC here is the tie-correct (scikit-learn, Mann-Whitney) one. The official LOCO tool
mishandles tied scores: good = [1, 2], anomalous = [2, 3] gives 1.0 there, while the correct
AUROC is 0.875 (the tied pair counts 1/2). We deliberately implement the correct value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ad_pipeline.metrics.classification import image_auroc
from ad_pipeline.metrics.pool import PixelPool
from ad_pipeline.metrics.spro import SPRO_LIMITS, Channel, DefectSpec, add_spro_image, spro_of_pool

GOOD = "good"
SPLITS = {"logical": "logical_anomalies", "structural": "structural_anomalies"}


def _check_types(defect_types: Sequence[str]) -> None:
    unknown = sorted(set(defect_types) - {GOOD, *SPLITS.values()})
    if unknown:
        raise ValueError(f"unknown LOCO test types {unknown}; expected good, logical_anomalies, structural_anomalies")


def with_mean(per_split: Mapping[str, float]) -> dict[str, float]:
    return {**per_split, "mean": 0.5 * (per_split["logical"] + per_split["structural"])}


def loco_image_auroc(defect_types: Sequence[str], scores: np.ndarray) -> dict[str, float]:
    """{logical, structural, mean} image AUROC; defect_types [N] and scores [N] per test image."""
    _check_types(defect_types)
    types, scores = np.asarray(defect_types), np.asarray(scores, dtype=np.float64)
    per_split = {}
    for split, folder in SPLITS.items():
        keep = (types == GOOD) | (types == folder)
        per_split[split] = image_auroc((types[keep] == folder).astype(int), scores[keep])
    return with_mean(per_split)


def loco_spro(defect_types: Sequence[str], gt_channels: Iterable[Sequence[Channel]], maps: Iterable[np.ndarray],
              defects: Mapping[int, DefectSpec], limits: Sequence[float] = SPRO_LIMITS) -> dict[str, dict[str, float]]:
    """{str(limit): {logical, structural, mean}} AU-sPRO.

    Streams every image once; good images are pooled once and shared by both splits.
    Memory: 4 B per OK pixel of all images (no copy per split).
    """
    _check_types(defect_types)
    pools = {GOOD: PixelPool(), **{folder: PixelPool() for folder in SPLITS.values()}}
    for defect_type, channels, score_map in zip(defect_types, gt_channels, maps, strict=True):
        add_spro_image(pools[defect_type], channels, score_map, defects)
    per_split = {split: spro_of_pool(PixelPool.combined(pools[GOOD], pools[folder]), limits)
                 for split, folder in SPLITS.items()}
    return {key: with_mean({split: per_split[split][key] for split in SPLITS}) for key in per_split["logical"]}

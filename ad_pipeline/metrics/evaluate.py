"""Metrics of one category's test split from a manifest, image scores and anomaly maps.

Maps at the method's working resolution are resized bilinearly (OpenCV, half-pixel centres)
to each image's ground-truth resolution, as the official evaluators read maps at GT size.
Images are streamed one at a time; memory is that of the pixel pool (see ``pool``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ad_pipeline.data.images import image_size, load_mask
from ad_pipeline.data.manifest import Manifest, Sample
from ad_pipeline.errors import ArtifactError, LayoutError
from ad_pipeline.io import read_json
from ad_pipeline.metrics.classification import f1_max, image_ap, image_auroc
from ad_pipeline.metrics.loco import loco_image_auroc, loco_spro
from ad_pipeline.metrics.pixel import ap_of_pool, auroc_of_pool
from ad_pipeline.metrics.pool import PixelPool
from ad_pipeline.metrics.pro import aupro_of_pool, region_weights
from ad_pipeline.metrics.spro import SPRO_LIMITS, Channel, DefectSpec, limit_key, parse_defects_config

HEADLINE_SPRO_LIMIT = 0.05
LOCO_FORMAT = "mvtec_loco"


def evaluate_category(manifest: Manifest, scores: np.ndarray | None, maps: np.ndarray | Sequence[np.ndarray] | None,
                      *, aupro_limit: float = 0.3, spro_limits: Sequence[float] = SPRO_LIMITS,
                      progress: bool = False) -> dict[str, float]:
    """Flat dict of metrics for the test split of ``manifest``.

    scores: float [N] in manifest test order, or None to use the max of each resized map.
    maps: float [N,h,w] (or a sequence of [h,w] arrays, possibly lazy) or None.
    Keys, non-LOCO: image_auroc, image_ap, image_f1_max and, with maps and masks,
    pixel_auroc, pixel_ap, aupro (at ``aupro_limit``). LOCO: image_auroc_{logical,structural,mean},
    spro_{logical,structural,mean} (at 0.05) and spro@<limit>_{logical,structural,mean} for
    the other limits.
    """
    test = manifest.split("test")
    _check_rows("scores", scores, len(test))
    _check_rows("maps", maps, len(test))
    if scores is None and maps is None:
        raise ValueError("evaluate_category needs image scores, maps, or both")
    image_scores: list[float] = []
    resized = _resized_maps(manifest.root, test, maps, image_scores, progress) if maps is not None else None
    if manifest.format == LOCO_FORMAT:
        metrics = _loco_pixel_metrics(manifest, test, resized, spro_limits) if resized is not None else {}
    else:
        metrics = _mvtec_pixel_metrics(manifest.root, test, resized, aupro_limit) if resized is not None else {}
    final_scores = np.asarray(scores if scores is not None else image_scores, dtype=np.float64)
    return _image_metrics(manifest.format, test, final_scores) | metrics


def mean_over_categories(per_cat: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Unweighted mean of each metric over categories; only keys every category has are kept."""
    if not per_cat:
        return {}
    tables = list(per_cat.values())
    shared = [k for k in tables[0] if all(k in t for t in tables)]
    return {k: float(np.mean([t[k] for t in tables])) for k in shared}


def _check_rows(what: str, values, n: int) -> None:
    if values is not None and len(values) != n:
        raise ArtifactError(f"{what} have {len(values)} rows but the manifest test split has {n} images",
                            fix="re-run the method stage so its dumps follow the current manifest")


def _image_metrics(fmt: str, test: list[Sample], scores: np.ndarray) -> dict[str, float]:
    if fmt == LOCO_FORMAT:
        return {f"image_auroc_{k}": v for k, v in loco_image_auroc([s.defect_type for s in test], scores).items()}
    labels = [s.label for s in test]
    return {"image_auroc": image_auroc(labels, scores), "image_ap": image_ap(labels, scores),
            "image_f1_max": f1_max(labels, scores)}


def _resized_maps(root: Path, test: list[Sample], maps, image_scores: list[float], progress: bool) -> Iterator[np.ndarray]:
    """Yield each map float32 at its ground-truth size, recording its max in ``image_scores``."""
    for sample, score_map in tqdm(zip(test, maps), total=len(test), desc="evaluate", disable=not progress):
        height, width = _gt_size(root, sample)
        score_map = np.asarray(score_map, dtype=np.float32)
        if score_map.shape != (height, width):
            score_map = cv2.resize(score_map, (width, height), interpolation=cv2.INTER_LINEAR)
        image_scores.append(float(score_map.max()))
        yield score_map


def _gt_size(root: Path, sample: Sample) -> tuple[int, int]:
    return image_size(root / (sample.mask_paths[0] if sample.mask_paths else sample.path))


def _defect_mask(root: Path, sample: Sample) -> np.ndarray:
    """Union of the sample's masks, binarised > 0 (MVTec masks are 0/255) [H,W] bool."""
    defect = None
    for rel in sample.mask_paths:
        mask = load_mask(root / rel) > 0
        defect = mask if defect is None else defect | mask
    return defect


def _mvtec_pixel_metrics(root: Path, test: list[Sample], maps: Iterator[np.ndarray], limit: float) -> dict[str, float]:
    if not any(s.mask_paths for s in test):
        for _ in maps:  # still needed for the image scores
            pass
        return {}
    pool = PixelPool()
    for sample, score_map in zip(test, maps):
        defect = _defect_mask(root, sample)
        if defect is None:
            pool.add(score_map.ravel(), score_map[:0, 0])
        else:
            pool.add(score_map[~defect], score_map[defect], region_weights(defect))
    pooled = pool.finish()
    return {"pixel_auroc": auroc_of_pool(pooled), "pixel_ap": ap_of_pool(pooled), "aupro": aupro_of_pool(pooled, limit)}


def load_defects(path: Path) -> dict[int, DefectSpec]:
    """Read a LOCO defects_config.json; a malformed file raises LayoutError naming it."""
    try:
        return parse_defects_config(read_json(path))
    except ValueError as e:
        raise LayoutError(str(e), path=path, fix="restore the category's original defects_config.json") from None


def load_channels(root: Path, sample: Sample) -> list[Channel]:
    """The sample's LOCO channels: one (mask bool [H,W], pixel_value) per PNG."""
    channels = []
    for rel in sample.mask_paths:
        raw = load_mask(root / rel)
        values = np.unique(raw[raw > 0])
        if values.size != 1:
            raise LayoutError(f"a LOCO channel must hold 0 and exactly one non-zero value, found {values.tolist()}",
                              path=root / rel, fix="restore the original ground-truth PNG")
        channels.append((raw > 0, int(values[0])))
    return channels


def _loco_pixel_metrics(manifest: Manifest, test: list[Sample], maps: Iterator[np.ndarray],
                        limits: Sequence[float]) -> dict[str, float]:
    if "defects_config" not in manifest.extras:
        raise ArtifactError("LOCO manifest lacks extras['defects_config']", fix="re-run prepare for this dataset")
    defects = load_defects(manifest.root / manifest.extras["defects_config"])
    limits = sorted(set(limits) | {HEADLINE_SPRO_LIMIT})
    channels = (load_channels(manifest.root, s) for s in test)
    areas = loco_spro([s.defect_type for s in test], channels, maps, defects, limits)
    metrics = {}
    for limit in limits:
        prefix = "spro" if limit == HEADLINE_SPRO_LIMIT else f"spro@{limit_key(limit)}"
        metrics |= {f"{prefix}_{split}": value for split, value in areas[limit_key(limit)].items()}
    return metrics

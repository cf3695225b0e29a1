"""Anomaly maps from any tool, scored like MVTec's official evaluators (``ad-pipeline evaluate-maps``).

Maps are ``DIR/<category>/test/<defect type>/<image stem>.tiff`` (single-channel float;
``.tif``, ``.npy`` and ``.png`` accepted too), resized bilinearly to the ground-truth size.
The image score is the max of its map. Every map is checked (count, shape, finiteness)
before any metric is computed, so a problem raises before anything is scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from ad_pipeline.data.images import IMAGE_SUFFIXES
from ad_pipeline.data.manifest import Manifest, Sample
from ad_pipeline.errors import LayoutError, UserError
from ad_pipeline.metrics.evaluate import HEADLINE_SPRO_LIMIT, LOCO_FORMAT, evaluate_category
from ad_pipeline.metrics.spro import limit_key

FORMATS = ("mvtec_ad", LOCO_FORMAT)
DEFAULT_LIMITS = {"mvtec_ad": 0.3, LOCO_FORMAT: HEADLINE_SPRO_LIMIT}
MAP_SUFFIXES = (".tiff", ".tif", ".npy", ".png")
MAX_LISTED = 5


def evaluate_map_folder(fmt: str, dataset_root: Path, category: str, anomaly_maps: Path,
                        integration_limit: float | None = None) -> tuple[dict, float]:
    """The official metrics of one category's maps and the integration limit used.

    mvtec_ad -> {image_auroc, pixel_auroc, aupro}; mvtec_loco -> {image_auroc: {logical,
    structural, mean}, spro: {logical, structural, mean}}. ``integration_limit``: FPR limit of
    AUPRO / sPRO (None: 0.3 for mvtec_ad, 0.05 for mvtec_loco).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    limit = DEFAULT_LIMITS[fmt] if integration_limit is None else integration_limit
    if not 0 < limit <= 1:
        raise UserError(f"integration limit must be in (0, 1], got {limit}", fix="e.g. --integration-limit 0.3")
    manifest = official_test_manifest(fmt, dataset_root, category)
    maps = MapFiles(anomaly_maps / category / "test", manifest.split("test"))
    maps.check()
    flat = evaluate_category(manifest, None, maps, aupro_limit=limit, spro_limits=(limit,))
    return official_layout(fmt, flat, limit), limit


def official_layout(fmt: str, flat: dict[str, float], limit: float) -> dict:
    """The official evaluator's keys picked from ``evaluate_category``'s flat metrics."""
    if fmt == "mvtec_ad":
        return {"image_auroc": flat["image_auroc"], "pixel_auroc": flat["pixel_auroc"], "aupro": flat["aupro"]}
    prefix = "spro" if limit == HEADLINE_SPRO_LIMIT else f"spro@{limit_key(limit)}"
    splits = ("logical", "structural", "mean")
    return {"image_auroc": {s: flat[f"image_auroc_{s}"] for s in splits},
            "spro": {s: flat[f"{prefix}_{s}"] for s in splits}}


def official_test_manifest(fmt: str, dataset_root: Path, category: str) -> Manifest:
    """Walk ``<root>/<category>/test`` and its ground truth into a test-split manifest."""
    root = dataset_root / category
    test_dir = root / "test"
    if not test_dir.is_dir():
        raise LayoutError("no test folder", path=test_dir, fix="check --dataset-root and --category")
    samples = []
    for type_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        for image in sorted(p for p in type_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            masks = () if type_dir.name == "good" else _mask_paths(fmt, root, type_dir.name, image.stem)
            samples.append(Sample(image.relative_to(root).as_posix(), "test", int(type_dir.name != "good"),
                                  type_dir.name, masks))
    if not samples:
        raise LayoutError("no test images found", path=test_dir, fix="check --dataset-root and --category")
    extras = {"defects_config": "defects_config.json"} if fmt == LOCO_FORMAT else {}
    return Manifest(fmt, fmt, category, root, samples, extras)


def _mask_paths(fmt: str, root: Path, defect_type: str, stem: str) -> tuple[str, ...]:
    gt_dir = root / "ground_truth" / defect_type
    if fmt == LOCO_FORMAT:
        found = sorted((gt_dir / stem).glob("*.png"))
        if not found:
            raise LayoutError("no ground-truth channel PNGs", path=gt_dir / stem,
                              fix="restore the image's ground-truth folder")
    else:
        found = [gt_dir / f"{stem}_mask.png"]
        if not found[0].is_file():
            raise LayoutError("ground-truth mask missing", path=found[0], fix="restore the mask file")
    return tuple(p.relative_to(root).as_posix() for p in found)


class MapFiles(Sequence):
    """The maps of the test samples, loaded lazily as float32 [H,W] in sample order."""

    def __init__(self, maps_dir: Path, samples: list[Sample]):
        self.maps_dir = maps_dir
        self.samples = samples
        self.paths: list[Path | None] = [None] * len(samples)

    def check(self) -> None:
        """Match files to samples and load each once: missing, extra, ambiguous, bad shape, NaN/inf."""
        wanted = {(s.defect_type, s.stem): i for i, s in enumerate(self.samples)}
        found = sorted(p for p in self.maps_dir.glob("*/*") if p.suffix.lower() in MAP_SUFFIXES)
        problems = []
        for path in found:
            index = wanted.get((path.parent.name, path.stem))
            if index is None:
                problems.append(f"{path}: extra map (no such test image)")
            elif self.paths[index] is not None:
                problems.append(f"{path}: second map for the same image as {self.paths[index].name}")
            else:
                self.paths[index] = path
        problems += [f"{self.maps_dir / s.defect_type / s.stem}.tiff: missing map"
                     for s, p in zip(self.samples, self.paths) if p is None]
        for path in filter(None, self.paths):
            problems += _map_problems(path)
        if problems:
            listed = "\n  ".join(problems[:MAX_LISTED])
            more = f"\n  … and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
            raise UserError(f"{len(problems)} problem(s) with the anomaly maps:\n  {listed}{more}",
                            path=self.maps_dir,
                            fix="write exactly one finite single-channel map per test image "
                                "as <category>/test/<type>/<stem>.tiff")

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> np.ndarray:
        return _read_map(self.paths[index])


def _read_map(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in (".tiff", ".tif"):
        raw = tifffile.imread(path)
    elif suffix == ".npy":
        raw = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as im:
            raw = np.asarray(im)
    return np.squeeze(np.asarray(raw, dtype=np.float32))


def _map_problems(path: Path) -> list[str]:
    try:
        score_map = _read_map(path)
    except (OSError, ValueError) as e:
        return [f"{path}: unreadable ({e})"]
    if score_map.ndim != 2 or score_map.size == 0:
        return [f"{path}: shape {score_map.shape}, expected a single-channel [H,W] map"]
    if not np.all(np.isfinite(score_map)):
        return [f"{path}: contains NaN/inf"]
    return []

"""Tiny MVTec LOCO AD and MVTec AD trees under the OFFICIAL category names (tests of the real
datasets' recipes without the real data).

The scenes are the synthetic suite's (``tray``/``connectors`` for LOCO, ``weave``/``disc`` for
MVTec AD) written under the official names in turn, with the official layout: LOCO
``train/good``, ``validation/good``, ``test/{good,logical_anomalies,structural_anomalies}``,
``ground_truth/<type>/<stem>/000.png…`` and ``defects_config.json`` (defect_name,
pixel_value, saturation_threshold, relative_saturation); MVTec AD ``train/good``,
``test/<defect>``, ``ground_truth/<defect>/<stem>_mask.png``. LOCO categories also get
``aux/part_labels`` + ``aux/parts.json`` (PSAD's few-shot labels, as a user would place them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ad_pipeline.data.synthetic import ad, loco

LOCO_CATEGORIES = ("breakfast_box", "juice_bottle", "pushpins", "screw_bag", "splicing_connectors")
MVTEC_AD_CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill",
                       "screw", "tile", "toothbrush", "transistor", "wood", "zipper")
TINY_LOCO = loco.LocoCounts(train=8, validation=4, test_good=4, logical=3, structural=3)
TINY_AD = ad.ADCounts(train=8, test_good=4, per_defect=2)


def write_mvtec_loco(root: Path, seed: int = 0, categories: tuple[str, ...] = LOCO_CATEGORIES,
                     counts: loco.LocoCounts = TINY_LOCO) -> None:
    """An official-layout MVTec LOCO AD tree under ``root`` (about 1 s per category)."""
    for k, name in enumerate(categories):
        loco.write_category(Path(root), seed, dataclasses.replace(loco.CATEGORIES[k % len(loco.CATEGORIES)], name=name),
                            counts)


def write_mvtec_ad(root: Path, seed: int = 0, categories: tuple[str, ...] = MVTEC_AD_CATEGORIES,
                   counts: ad.ADCounts = TINY_AD) -> None:
    """An official-layout MVTec AD tree under ``root``."""
    for k, name in enumerate(categories):
        scene = ad.CATEGORIES[k % len(ad.CATEGORIES)]
        ad.write_category(Path(root), seed, dataclasses.replace(scene, name=name), counts)

"""Stage ``part_segmenter@<dataset>``: PSAD's few-shot part segmentation.

The labelled shots are part-label PNGs under ``<category>/aux/part_labels/train/good/<stem>.png``
(the synthetic generator writes them; for MVTec LOCO the user places their few annotated
images there, with ``aux/parts.json`` giving ``num_classes`` incl. background). With
product variants listed in ``parts.json`` one shot per variant is taken (PSAD's juice_bottle
/ splicing_connectors rule), otherwise the first ``psad.shots`` by name.
"""

from __future__ import annotations

import json
from pathlib import Path

from ad_pipeline.data.images import load_mask
from ad_pipeline.data.manifest import Manifest
from ad_pipeline.errors import LayoutError
from ad_pipeline.meta import measured
from ad_pipeline.methods.psad.method import fit_part_segmenter, save_part_segmenter
from ad_pipeline.segmentation.proposers import part_label_path
from stages.common import for_each_category, run_context, write_meta
from stages.params import BaseParams


def parts_info(manifest: Manifest) -> dict:
    path = manifest.root / "aux" / "parts.json"
    return json.loads(path.read_text()) if path.exists() else {}


def pick_shots(manifest: Manifest, n_shots: int) -> list[Path]:
    """Labelled train images to learn from: one per product variant if variants are known, else
    the first ``n_shots`` labelled ones (by name, i.e. manifest order)."""
    labelled = [p for p in manifest.paths("train") if part_label_path(p).exists()]
    if not labelled:
        raise LayoutError("no few-shot part labels found", path=manifest.root / "aux" / "part_labels" / "train" / "good",
                          fix="place a few label PNGs (uint8 class id per pixel, 0 = background) named like their "
                              "train/good images there, and aux/parts.json with {\"num_classes\": K+1}")
    variants = parts_info(manifest).get("variants", {})
    if variants:
        by_variant: dict[str, Path] = {}
        for p in labelled:
            by_variant.setdefault(variants.get(f"train/good/{p.name}", ""), p)
        return list(by_variant.values())
    return labelled[:n_shots]


def run(dataset: str) -> None:
    for_each_category("part_segmenter", dataset, _fit_category)


def _fit_category(p: BaseParams, manifest: Manifest, cat_dir: Path) -> None:
    settings = p.settings("psad", manifest.dataset, manifest.category)
    base = settings.config
    cfg = base.model_copy(update={"num_classes": parts_info(manifest).get("num_classes", base.num_classes)})
    ctx = run_context(p, manifest.dataset, settings)
    shots = pick_shots(manifest, cfg.shots)
    unlabeled = [q for q in manifest.paths("train") if q not in shots]
    with measured() as timing:
        model, history = fit_part_segmenter(shots, [load_mask(part_label_path(s)) for s in shots], unlabeled,
                                            cfg, ctx)
    save_part_segmenter(model, cat_dir, cfg)
    write_meta(cat_dir, method="part_segmenter", section=cfg, ctx=ctx, measured=timing, settings=settings,
               extra={"weights": getattr(model.encoder, "weights", "n/a"), "shots": [str(s) for s in shots],
                      "labels_source": parts_info(manifest).get("source", "manual"),
                      "final_loss": history[-1] if history else None})

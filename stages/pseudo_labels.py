"""Stage ``pseudo_labels@<dataset>``: CSAD's unsupervised part labels of every train image.

Per category: components from the mask proposer (Grounded-SAM with real weights, or the
offline stand-ins), rotation-invariant CNN descriptors, MeanShift + HDBSCAN histogram
filtering → ``artifacts/<dataset>/pseudo_labels/<category>/`` (label PNGs, histograms, the
supervised "good" subset, a preview sheet). Where true part maps exist (the synthetic
data's ``aux/part_labels``) their matched mIoU is recorded in meta.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ad_pipeline.data.images import load_mask, load_rgb
from ad_pipeline.data.manifest import Manifest
from ad_pipeline.io import atomic_path
from ad_pipeline.meta import measured
from ad_pipeline.seed import seed_everything
from ad_pipeline.segmentation.clustering import matched_miou
from ad_pipeline.segmentation.proposers import part_label_path
from ad_pipeline.segmentation.pseudo_labels import build_descriptor, build_proposer, generate_pseudo_labels
from stages.common import for_each_category, log, run_context, write_meta
from stages.params import BaseParams

PREVIEW = 6  # images in the preview sheet


def run(dataset: str) -> None:
    for_each_category("pseudo_labels", dataset, _label_category)


def _label_category(p: BaseParams, manifest: Manifest, cat_dir: Path) -> None:
    cfg = p.pseudo_labels
    cat, dataset = manifest.category, manifest.dataset
    ctx = run_context(p, dataset)
    seed_everything(p.seed)
    grounded = cfg.grounded_sam.get(cat, cfg.grounded_sam.get("default"))
    settings = p.settings("pseudo_labels", dataset, cat)
    labels_cfg = settings.config
    paths = manifest.paths("train")
    with measured() as timing:
        proposer = build_proposer(labels_cfg, grounded=grounded, weights_dir=ctx.weights_dir,
                                  pretrained=ctx.pretrained, device=ctx.device, seed=ctx.seed)
        descriptor = build_descriptor(labels_cfg, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir,
                                      seed=ctx.seed)
        labels = generate_pseudo_labels(paths, proposer, descriptor, labels_cfg, progress=ctx.progress)
    # 'random-init' if either model is (part_labels / color proposers use no weights)
    weights = {"descriptor": descriptor_weights(descriptor), "proposer": getattr(proposer, "weights", "none")}
    labels.save(cat_dir)
    preview_sheet(paths[:PREVIEW], labels.label_maps[:PREVIEW], cat_dir / "preview.png")
    truth = [part_label_path(path) for path in paths]
    miou = (matched_miou(labels.label_maps, [load_mask(t) for t in truth])
            if all(t.exists() for t in truth) else None)
    log.info("pseudo_labels@%s/%s: %d classes, mIoU vs true parts %s", dataset, cat, labels.num_classes, miou)
    write_meta(cat_dir, method="pseudo_labels", section=labels_cfg, ctx=ctx, measured=timing,
               settings=settings,
               extra={"weights": "random-init" if "random-init" in weights.values() else weights["descriptor"],
                      "component_weights": weights, "num_classes": labels.num_classes,
                      "miou_vs_true_parts": miou, "proposer": labels_cfg.proposer,
                      "grounded_sam": grounded.model_dump() if grounded else None, **labels.info})


def descriptor_weights(descriptor) -> str:
    backbone = getattr(getattr(descriptor, "features", None), "backbone", None)
    return getattr(backbone, "weights", "n/a")


def preview_sheet(paths, label_maps, dest) -> None:
    """Images (top row) over their pseudo-labels in a fixed palette (bottom row), 128 px tiles."""
    palette = (np.array([[0, 0, 0]] + [[(37 * i) % 256, (91 * i) % 256, (173 * i) % 256] for i in range(1, 256)]))
    tiles = [(np.asarray(load_rgb(p).resize((128, 128))),
              np.asarray(Image.fromarray(palette[m].astype(np.uint8)).resize((128, 128), Image.NEAREST)))
             for p, m in zip(paths, label_maps)]
    sheet = np.concatenate([np.concatenate(row, axis=1) for row in zip(*tiles)], axis=0)
    with atomic_path(dest) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")

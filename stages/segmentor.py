"""Stage ``segmentor@<dataset>``: CSAD's segmentor trained on the pseudo-labels, plus its
predicted part maps of every split (``parts/<split>/<row>.png``, rows in manifest order)."""

from __future__ import annotations

from pathlib import Path

from ad_pipeline.data.manifest import Manifest
from ad_pipeline.io import write_json
from ad_pipeline.meta import measured
from ad_pipeline.methods.csad.segmentor import fit_segmentor, save_segmentor, write_part_maps
from ad_pipeline.segmentation.pseudo_labels import PseudoLabels
from stages.common import for_each_category, method_dir, run_context, write_meta
from stages.params import BaseParams


def run(dataset: str) -> None:
    for_each_category("segmentor", dataset, _fit_category)


def _fit_category(p: BaseParams, manifest: Manifest, cat_dir: Path) -> None:
    settings = p.settings("csad", manifest.dataset, manifest.category)
    cfg = settings.config
    upstream = method_dir(manifest.dataset, "pseudo_labels") / manifest.category
    ctx = run_context(p, manifest.dataset, settings, pseudo_labels=upstream)
    labels = PseudoLabels.load(upstream)
    with measured() as timing:
        model, history = fit_segmentor(manifest.paths("train"), labels, cfg, ctx)
    save_segmentor(model, cat_dir, cfg)
    write_part_maps(model, manifest, cat_dir, cfg, ctx.device)
    write_json(cat_dir / "history.json", history)
    write_meta(cat_dir, method="segmentor", section=cfg, ctx=ctx, measured=timing, settings=settings,
               extra={"weights": getattr(model.encoder, "weights", "n/a"), "num_classes": labels.num_classes})

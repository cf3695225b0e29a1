"""Stage ``psad_segmenter@<dataset>``: PSAD's second-stage segmenter (psad.md §3).

The few-shot segmenter of ``part_segmenter@`` labels every train image; a fresh network
(``psad.retrain_*``, random-init trunk as in the seed's ``run_unet_v2.sh``) is trained on those
pseudo-labels and ``psad@`` takes its part maps. With ``psad.second_stage: false`` each category
gets only a meta.json saying so, and ``psad@`` uses the few-shot maps.
"""

from __future__ import annotations

from pathlib import Path

from ad_pipeline.data.manifest import Manifest
from ad_pipeline.meta import measured
from ad_pipeline.methods.psad.method import (
    FEWSHOT,
    RETRAINED,
    fit_second_stage,
    load_part_segmenter,
    save_part_segmenter,
    segmenter_settings,
)
from stages.common import for_each_category, method_dir, run_context, write_meta
from stages.params import BaseParams


def run(dataset: str) -> None:
    for_each_category(RETRAINED, dataset, _segment_category)


def _segment_category(p: BaseParams, manifest: Manifest, cat_dir: Path) -> None:
    fewshot_dir = method_dir(manifest.dataset, FEWSHOT) / manifest.category
    settings = p.settings("psad", manifest.dataset, manifest.category)
    cfg = segmenter_settings(fewshot_dir, settings.config)
    ctx = run_context(p, manifest.dataset, settings)
    if not cfg.second_stage:
        write_meta(cat_dir, method=RETRAINED, section=cfg, ctx=ctx, measured={}, settings=settings,
                   extra={"second_stage": False})
        return
    fewshot = load_part_segmenter(fewshot_dir, cfg, ctx)
    with measured() as timing:
        model, history = fit_second_stage(fewshot, manifest.paths("train"), cfg, ctx)
    save_part_segmenter(model, cat_dir, cfg, RETRAINED)
    write_meta(cat_dir, method=RETRAINED, section=cfg, ctx=ctx, measured=timing, settings=settings,
               extra={"second_stage": True, "weights": getattr(model.encoder, "weights", "n/a"),
                      "n_pseudo_labels": len(manifest.paths("train")),
                      "first_loss": history[0] if history else None,
                      "final_loss": history[-1] if history else None})

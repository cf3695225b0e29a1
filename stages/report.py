"""Stage ``report``: ``report/index.html`` (offline) and ``report/results.md`` with tables,
ROC curves and best/worst overlay images for every dataset in ``summary_datasets``, and
UniAD's feature-reconstruction and learned-query images of the datasets in ``uniad_vis.datasets``."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from ad_pipeline.data.images import load_mask, load_rgb
from ad_pipeline.fusion import resize_maps
from ad_pipeline.io import atomic_dir, read_json, read_scores
from ad_pipeline.metrics import pro_curve
from ad_pipeline.report.figures import overlay_figure, pick_cases, pro_figure, roc_figure
from ad_pipeline.report.render import render_html, render_markdown
from stages.common import ARTIFACTS, METRICS_DIR, QUERIES, RECONSTRUCTION, load_manifests, method_dir, params, vis_dir

DISPLAY = 192  # overlay images are shown at this size (pixels, square)


def run(out: Path = Path("report")) -> None:
    p = params()
    everything = [read_json(METRICS_DIR / f"{ds}.json") for ds in p.summary_datasets]
    results = [r for r in everything if not r.get("absent")]
    absent = {r["dataset"]: r["missing"] for r in everything if r.get("absent")}
    exports = {ds: read_json(ARTIFACTS / "exports" / ds / "export.json") for ds in p.summary_datasets
               if (ARTIFACTS / "exports" / ds / "export.json").exists()}
    with atomic_dir(out) as tmp:
        (tmp / "img").mkdir()
        figures = {r["dataset"]: _figures(r, tmp, p.evaluate.aupro_limit, r["dataset"] in p.uniad_vis.datasets)
                   for r in results}
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        (tmp / "index.html").write_text(render_html(results, figures, stamp, exports, absent))
        (tmp / "results.md").write_text(render_markdown(results, exports, absent))


def _figures(result: dict, out: Path, limit: float, with_vis: bool) -> dict[str, list[str]]:
    ds = result["dataset"]
    figs: dict[str, list[str]] = {}
    for manifest in load_manifests(ds):
        cat = manifest.category
        labels = np.array(manifest.labels("test"))
        dumps = {m: read_scores(method_dir(ds, m) / cat, "test", manifest.fingerprint("test"))
                 for m in result["methods"]}
        paths = []
        if 0 < labels.sum() < len(labels):
            rel = f"img/roc_{ds}_{cat}.png"
            roc_figure(labels, {m: d[0] for m, d in dumps.items()}, f"{ds} / {cat}: image ROC", out / rel)
            paths.append(rel)
        has_masks = any(s.mask_paths for s in manifest.split("test"))  # none for cifar10
        curves = {m: pro_curve(_masks_like(manifest, maps), maps) for m, (_, maps) in dumps.items()
                  if maps is not None and result["format"] != "mvtec_loco" and labels.sum() > 0 and has_masks}
        if curves:
            rel = f"img/pro_{ds}_{cat}.png"
            pro_figure(curves, limit, f"{ds} / {cat}: PRO (map resolution)", out / rel)
            paths.append(rel)
        for method, (scores, maps) in dumps.items():
            if maps is None:
                continue
            rel = f"img/cases_{ds}_{cat}_{method}.png"
            overlay_figure(_cases(manifest, labels, scores, maps), f"{method} on {ds} / {cat}", out / rel)
            paths.append(rel)
        for name in (RECONSTRUCTION, QUERIES):
            src = vis_dir(ds) / cat / name
            if with_vis and "uniad" in result["methods"] and src.exists():
                rel = f"img/vis_{ds}_{cat}_uniad_{name}"
                shutil.copyfile(src, out / rel)
                paths.append(rel)
        figs[cat] = paths
    return figs


def _masks_like(manifest, maps: np.ndarray) -> np.ndarray:
    """Union ground-truth masks of the test images, nearest-resized to the maps' size: bool [N,h,w]."""
    h, w = maps.shape[1:]
    out = np.zeros((len(maps), h, w), dtype=bool)
    for i, s in enumerate(manifest.split("test")):
        for mp in s.mask_paths:
            out[i] |= np.asarray(Image.fromarray(load_mask(manifest.root / mp)).resize((w, h), Image.NEAREST)) > 0
    return out


def _cases(manifest, labels: np.ndarray, scores: np.ndarray, maps: np.ndarray) -> list[dict]:
    samples = manifest.split("test")
    rows = []
    for idx, caption in pick_cases(labels, scores):
        s = samples[idx]
        image = np.asarray(load_rgb(manifest.root / s.path).resize((DISPLAY, DISPLAY)))
        mask = None
        if s.mask_paths:
            union = np.zeros((DISPLAY, DISPLAY), dtype=bool)
            for mp in s.mask_paths:
                m = load_mask(manifest.root / mp) > 0
                union |= resize_maps(m[None].astype(np.float32), (DISPLAY, DISPLAY))[0] >= 0.5
            mask = union
        rows.append({"image": image, "mask": mask, "map": resize_maps(maps[idx][None], (DISPLAY, DISPLAY))[0],
                     "caption": f"{caption} — {Path(s.path).parent.name}/{Path(s.path).name}, score {scores[idx]:.3g}"})
    return rows

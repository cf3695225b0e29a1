"""``ad-pipeline predict``: run a fitted model on new images from the line.

Writes per image ``<stem>_map.png`` (the anomaly map) and ``<stem>_overlay.png``, one JSON
line per image in ``predictions.jsonl`` (score, decision at the validation threshold saved
with the model) and ``summary.json``. ``run`` uses a fitted model directory (PyTorch),
``run_exported`` a file written by the export stage (ONNX, OpenVINO), with the same outputs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
from matplotlib import colormaps  # noqa: E402
from PIL import Image  # noqa: E402

from ad_pipeline.data.images import IMAGE_SUFFIXES, image_size, load_rgb  # noqa: E402
from ad_pipeline.errors import UserError  # noqa: E402
from ad_pipeline.fusion import resize_maps  # noqa: E402
from ad_pipeline.io import atomic_dir, read_json  # noqa: E402
from ad_pipeline.methods.base import RunContext  # noqa: E402
from ad_pipeline.methods.registry import get_method  # noqa: E402

log = logging.getLogger("ad_pipeline")


def collect_images(inputs: list[Path]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        if item.is_dir():
            paths += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            paths.append(item)
        else:
            raise UserError("no such file or folder", path=item)
    if not paths:
        raise UserError("no images found", path=", ".join(map(str, inputs)),
                        fix=f"pass image files or folders with {', '.join(IMAGE_SUFFIXES)} files")
    return paths


def load_model(method: str, model_dir: Path, device: str, weights_dir: Path | None):
    meta = read_json(model_dir / "meta.json")
    if meta.get("method") != method:
        raise UserError(f"this model directory holds a {meta.get('method')!r} model, not {method!r}", path=model_dir)
    cls = get_method(method)
    if cls.zero_shot:
        raise UserError(f"{method} is zero-shot and scores a whole batch against itself; it has no fitted model",
                        fix=f"run `ad-pipeline run {method} <dataset>` on a dataset folder instead")
    cfg = cls.Config(**{k: v for k, v in meta["params"].items() if k in cls.Config.model_fields})
    ctx = RunContext(seed=meta["seed"], device=device, backbone=meta["backbone"], pretrained=meta["pretrained"],
                     weights_dir=weights_dir, progress=False,
                     upstream_dirs={k: Path(v) for k, v in meta.get("upstream", {}).items()})
    return cls.load(model_dir, cfg, ctx), meta


def check_sizes(paths: list[Path], expected: list[int] | None) -> None:
    if not expected:
        return
    wrong = [f"{p} ({h}×{w})" for p in paths for h, w in [image_size(p)] if [h, w] != expected]
    if wrong:
        raise UserError(f"{len(wrong)} image(s) differ from the training size {expected[0]}×{expected[1]} (H×W): "
                        + ", ".join(wrong[:5]), fix="crop/resize them like the training images, "
                        "or pass --allow-resize to let the model squash them")


def run(method: str, model_dir: Path, inputs: list[Path], out: Path, device: str = "cpu",
        weights_dir: Path | None = None, allow_resize: bool = False) -> dict:
    paths = collect_images(inputs)
    model, meta = load_model(method, model_dir, device, weights_dir)
    if not allow_resize:
        check_sizes(paths, meta.get("image_size"))
    for p in paths:
        load_rgb(p)  # fail on unreadable files before any work
    threshold_file = model_dir / "threshold.json"
    decision = read_json(threshold_file) if threshold_file.exists() else {}
    if decision.get("warning"):
        log.warning("WARNING %s: %s", threshold_file, decision["warning"])
    result = model.score(paths)
    return write_predictions(out, paths, result.scores, result.maps, decision,
                             {"method": method, "model_dir": str(model_dir), "weights": meta.get("weights")})


def run_exported(model: Path, inputs: list[Path], out: Path, allow_resize: bool = False) -> dict:
    """As ``run`` for a file written by the export stage (any installed format), read with the
    ``model.json`` beside it (method, input geometry, decision threshold, training image size)."""
    from ad_pipeline.export.compare import run_images
    from ad_pipeline.export.formats import load_runner
    from ad_pipeline.export.inference import geometries

    model = Path(model)
    runner = load_runner(model)
    info_file = model.with_suffix(".json")
    if not info_file.is_file():
        raise UserError("the exported model has no model.json beside it", path=info_file,
                        fix="use a model folder written by the export stage (artifacts/exports/<dataset>/...)")
    info = read_json(info_file)
    paths = collect_images(inputs)
    if not allow_resize:
        check_sizes(paths, info.get("image_size"))
    for p in paths:
        load_rgb(p)
    decision = info.get("decision", {})
    if decision.get("warning"):
        log.warning("WARNING %s: %s", info_file, decision["warning"])
    maps, scores = run_images(runner, paths, inputs=geometries(info))
    return write_predictions(out, paths, scores, maps, decision,
                             {"method": info["method"], "model": str(model), "weights": info.get("weights")})


def write_predictions(out: Path, paths: list[Path], scores: np.ndarray, maps: np.ndarray | None, decision: dict,
                      about: dict) -> dict:
    """Map and overlay PNGs, ``predictions.jsonl`` and ``summary.json`` (``about`` + counts) in
    ``out``; ``decision``: the model's threshold.json ({} = no threshold, no decisions)."""
    threshold = decision.get("score_threshold")
    cmap = colormaps["jet"]
    with atomic_dir(out) as tmp:
        lines = []
        for i, p in enumerate(paths):
            score = float(scores[i])
            record = {"image": str(p), "score": score,
                      "anomalous": None if threshold is None else bool(score > threshold)}
            if maps is not None:
                image = np.asarray(load_rgb(p))
                amap = resize_maps(maps[i][None], image.shape[:2])[0]
                lo, hi = float(maps.min()), float(maps.max())
                rgb = (cmap((amap - lo) / (hi - lo + 1e-12))[..., :3] * 255).astype(np.uint8)
                Image.fromarray(rgb).save(tmp / f"{p.stem}_map.png")
                Image.fromarray((0.5 * image + 0.5 * rgb).astype(np.uint8)).save(tmp / f"{p.stem}_overlay.png")
                record["map"] = f"{p.stem}_map.png"
            lines.append(json.dumps(record))
        (tmp / "predictions.jsonl").write_text("\n".join(lines) + "\n")
        flagged = sum(json.loads(line)["anomalous"] or 0 for line in lines)
        summary = {"method": about["method"], **{k: v for k, v in about.items() if k not in ("method", "weights")},
                   "images": len(paths), "threshold": threshold,
                   "threshold_source": decision.get("source"), "threshold_warning": decision.get("warning"),
                   "flagged": flagged if threshold is not None else None, "weights": about.get("weights")}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

"""Stage ``export_<method>@<dataset>``: one ONNX graph per category (image → map, score) with an
onnxruntime parity check on the category's test images and a CPU latency figure.

Writes ``artifacts/exports/<dataset>/<method>/<category>.onnx`` and ``export.json``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ad_pipeline.errors import UserError
from ad_pipeline.export import export_efficientad, onnx_session
from ad_pipeline.io import atomic_dir, read_json, write_json
from ad_pipeline.methods.registry import get_method
from stages.common import ARTIFACTS, load_manifests, method_dir, params, run_context, skip_absent

EXPORTABLE = ("efficientad", "csad")
PARITY_IMAGES = 16  # test images used for the parity check
LATENCY_RUNS = 20


def export_dir(dataset: str, method: str) -> Path:
    return ARTIFACTS / "exports" / dataset / method


def cpu_latency_ms(onnx_path: Path, image_size: int) -> float:
    """Mean onnxruntime CPU latency of one 1×3×S×S image (after one warm-up run)."""
    session = onnx_session(onnx_path)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    session.run(None, {name: x})
    t0 = time.perf_counter()
    for _ in range(LATENCY_RUNS):
        session.run(None, {name: x})
    return 1000 * (time.perf_counter() - t0) / LATENCY_RUNS


def export_category(p, method: str, dataset: str, manifest, out: Path) -> dict:
    model_dir = method_dir(dataset, method) / manifest.category
    images = manifest.paths("test")[:PARITY_IMAGES]
    onnx_path = out / f"{manifest.category}.onnx"
    if method == "efficientad":
        info = export_efficientad(model_dir, onnx_path, images)
        size = info["image_size"]
    else:
        from ad_pipeline.methods.csad.export import export_csad

        cls = get_method(method)
        settings = p.settings(method, dataset, manifest.category)
        cfg = settings.config
        upstream = {name: method_dir(dataset, name) / manifest.category for name in cls.requires}
        fitted = cls.load(model_dir, cfg, run_context(p, dataset, settings, **upstream))
        info = {"onnx_path": str(onnx_path), "max_abs_diff": export_csad(fitted, onnx_path, images)}
        size = cfg.image_size
    info["onnx_path"] = onnx_path.name  # beside export.json
    return info | {"cpu_ms_per_image": round(cpu_latency_ms(onnx_path, size), 2),
                   "weights": read_json(model_dir / "meta.json").get("weights")}


def run(method: str, dataset: str) -> None:
    if method not in EXPORTABLE:
        raise UserError(f"no ONNX export for {method!r}", fix=f"exportable methods: {', '.join(EXPORTABLE)}")
    p = params()
    if skip_absent(f"export_{method}@{dataset}", dataset, export_dir(dataset, method)):
        return
    with atomic_dir(export_dir(dataset, method)) as out:
        report = {m.category: export_category(p, method, dataset, m, out) for m in load_manifests(dataset)}
        write_json(out / "export.json", report)

"""Stage ``export@<dataset>``: every exportable method enabled on the dataset × every installed
runtime format (ONNX, OpenVINO), each exported model scored on the test split.

Per category writes ``artifacts/exports/<dataset>/<method>/<category>/model.<suffix>`` and
``model.json`` (what ``predict --model`` needs: method, input geometry, decision threshold);
``artifacts/exports/<dataset>/export.json`` holds the table: one row per method × category ×
format ("pytorch" = the inference graph in PyTorch) with the image AUROC(s) of that row and of
the method stage's own PyTorch scores, max |Δ| of maps and scores against the PyTorch graph,
absolute and relative to max(1, max |value|) (the pytorch row: its scores against the method
stage's), and CPU ms per image at one thread.
Fails (ParityError, no output) when an exported format misses the acceptance tolerances. A graph
that the ONNX exporter cannot convert (an operator with no ONNX form, e.g. the antialiased bicubic
resize of a ViT's position embeddings) is not a failure of the stage: the model keeps its PyTorch
row, the reason is logged and listed under ``unsupported`` (and in the report's notes). So is a
configuration without a graph (``NotExportable``, e.g. PSAD's ``patch_bank: full``), with no row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ad_pipeline.data.manifest import Manifest
from ad_pipeline.export.compare import ParityError, latency_ms, max_abs_diff, max_rel_diff, run_images, torch_runner
from ad_pipeline.export.formats import FORMATS, export_formats, installed_formats, load_runner
from ad_pipeline.export.inference import Inference, NotExportable, inference_module
from ad_pipeline.io import atomic_dir, read_json, read_scores, write_json
from ad_pipeline.methods.registry import NOT_EXPORTABLE, get_method, method_names
from ad_pipeline.metrics.evaluate import evaluate_category
from stages.common import ARTIFACTS, load_manifests, log, method_dir, params, run_context, skip_absent, upstream_dir
from stages.params import BaseParams

THREADS = 1  # latency is measured single-threaded: comparable across runtimes and machines
LATENCY_RUNS = 10
AUROC_TOL = 0.001  # |Δ image AUROC| vs PyTorch (0.1 point)
MAP_TOL = 1e-4  # max |Δ map| vs the PyTorch graph, relative to max(1, max |map|) (compare.max_rel_diff)
SCORE_TOL = 1e-4  # the same for scores


def export_dir(dataset: str) -> Path:
    return ARTIFACTS / "exports" / dataset


def load_inference(p: BaseParams, method: str, dataset: str, category: str) -> Inference:
    """The inference graph of ``method``'s fitted model for one category (params as the method stage's)."""
    settings = p.settings(method, dataset, category)
    upstream = {name: upstream_dir(name, dataset, category) for name in get_method(method).requires}
    ctx = run_context(p, dataset, settings, **upstream)
    return inference_module(method, method_dir(dataset, method) / category, settings.config, ctx)


def image_aurocs(manifest: Manifest, scores: np.ndarray) -> dict[str, float]:
    """image_auroc (MVTec-style) or image_auroc_{logical,structural,mean} (LOCO), in points."""
    metrics = evaluate_category(manifest, scores, None)
    return {k: round(100 * v, 3) for k, v in metrics.items() if k.startswith("image_auroc")}


def export_category(p: BaseParams, method: str, dataset: str, manifest: Manifest, out: Path,
                    formats: list[str]) -> tuple[list[dict], str | None]:
    """The table rows of one category, and the reason when this configuration has no graph
    (``NotExportable``: no rows, nothing written) or the exporter cannot convert it."""
    model_dir = method_dir(dataset, method) / manifest.category
    try:
        inference = load_inference(p, method, dataset, manifest.category)
    except NotExportable as e:
        log.warning("export@%s: %s/%s has no inference graph: %s", dataset, method, manifest.category, e.what)
        return [], f"{type(e).__name__}: {e.what}"
    out.mkdir(parents=True)
    test = manifest.paths("test")
    stage_scores, _ = read_scores(model_dir, "test", manifest.fingerprint("test"), with_maps=False)
    reference = torch_runner(inference.module)
    sides = [g.size for g in inference.inputs]
    ref_maps, ref_scores = run_images(reference, test, inputs=inference.inputs)
    threshold_file = model_dir / "threshold.json"
    meta = read_json(model_dir / "meta.json")
    base = {"method": method, "category": manifest.category, "pytorch_auroc": image_aurocs(manifest, stage_scores)}
    rows = [base | {"format": "pytorch", "file": None, "auroc": image_aurocs(manifest, ref_scores),
                    "max_abs_diff_map": None, "max_rel_diff_map": None,
                    "max_abs_diff_score": max_abs_diff(ref_scores, stage_scores),
                    "max_rel_diff_score": max_rel_diff(ref_scores, stage_scores),
                    "cpu_ms_per_image": round(latency_ms(reference, sides, LATENCY_RUNS), 2)}]
    try:
        files = export_formats(inference.module, inference.load(test[:1]), out, formats)
    except torch.onnx.errors.OnnxExporterError as e:
        reason = f"{type(e).__name__}: {str(e).splitlines()[0]}"
        log.warning("export@%s: %s/%s cannot be exported: %s", dataset, method, manifest.category, reason)
        return rows, reason
    write_json(out / "model.json", {
        "method": method, "dataset": dataset, "category": manifest.category, **inference.geometry(),
        "decision": read_json(threshold_file) if threshold_file.exists() else {},
        "weights": meta.get("weights"), "image_size": meta.get("image_size"),
        "files": {name: path.name for name, path in files.items()}})
    runners, refused = load_runners(files)
    for name, runner in runners.items():
        path = files[name]
        maps, scores = run_images(runner, test, inputs=inference.inputs)
        rows.append(base | {"format": name, "file": f"{method}/{manifest.category}/{path.name}",
                            "auroc": image_aurocs(manifest, scores), "max_abs_diff_map": max_abs_diff(maps, ref_maps),
                            "max_rel_diff_map": max_rel_diff(maps, ref_maps),
                            "max_abs_diff_score": max_abs_diff(scores, ref_scores),
                            "max_rel_diff_score": max_rel_diff(scores, ref_scores),
                            "cpu_ms_per_image": round(latency_ms(runner, sides, LATENCY_RUNS), 2)})
    return rows, "; ".join(refused) or None


def load_runners(files: dict[str, Path]) -> tuple[dict, list[str]]:
    """{format: runner} of the exported files, and one reason per file its runtime refuses to
    load on this CPU (e.g. OpenVINO's CPU plugin under ``DNNL_MAX_CPU_ISA=SSE41``: "bad
    combination"): that format gets no row instead of failing the stage."""
    runners, refused = {}, []
    for name, path in files.items():
        try:
            runners[name] = load_runner(path, THREADS)
        except RuntimeError as e:
            reason = f"{name} runtime cannot load it on this CPU: {' '.join(str(e).split())[-160:]}"
            log.warning("export: %s: %s", path, reason)
            refused.append(reason)
    return runners, refused


def check_rows(rows: list[dict]) -> None:
    """ParityError listing every exported row outside AUROC_TOL / MAP_TOL / SCORE_TOL."""
    bad = []
    for r in rows:
        if r["format"] == "pytorch":
            continue
        d_auroc = max(abs(r["auroc"][k] - r["pytorch_auroc"][k]) / 100 for k in r["auroc"])
        if d_auroc > AUROC_TOL or r["max_rel_diff_map"] > MAP_TOL or r["max_rel_diff_score"] > SCORE_TOL:
            bad.append(f"{r['method']}/{r['category']}/{r['format']}: |Δ AUROC| {d_auroc:.4g}, "
                       f"rel. |Δ map| {r['max_rel_diff_map']:.3g}, rel. |Δ score| {r['max_rel_diff_score']:.3g}")
    if bad:
        raise ParityError(f"exports outside tolerance (AUROC {AUROC_TOL:g}, map {MAP_TOL:g}, score {SCORE_TOL:g}, "
                          "relative to max(1, |PyTorch value|)): " + "; ".join(bad))


def run(dataset: str) -> None:
    p = params()
    enabled = [m for m in method_names() if dataset in p.method(m).datasets]
    methods = [m for m in enabled if m not in NOT_EXPORTABLE]
    formats = installed_formats()
    if skip_absent(f"export@{dataset}", dataset, export_dir(dataset)):
        return
    torch.set_num_threads(THREADS)
    with atomic_dir(export_dir(dataset)) as out:
        rows, unsupported = [], {}
        for method in methods:
            for manifest in load_manifests(dataset):
                log.info("export@%s: %s/%s → %s", dataset, method, manifest.category, ", ".join(formats))
                cat_rows, reason = export_category(p, method, dataset, manifest, out / method / manifest.category,
                                                   formats)
                rows += cat_rows
                if reason is not None:
                    unsupported[f"{method}/{manifest.category}"] = reason
        check_rows(rows)
        write_json(out / "export.json", {
            "dataset": dataset, "formats": formats, "threads": THREADS,
            "not_installed": [f for f in FORMATS if f not in formats],
            "skipped": {m: NOT_EXPORTABLE[m] for m in enabled if m in NOT_EXPORTABLE},
            "unsupported": unsupported, "rows": rows})

"""Stage ``summarize``: the top-level summaries of the datasets in ``summary_datasets``.

``metrics.json`` (dataset → method → weights + every mean metric) is the file CI's regression
gate compares against the committed baseline. ``headline.json`` (dataset → method → the
format's two headline numbers) is the one file dvc.yaml declares as ``metrics``, so that
``dvc exp show`` stays readable; the per-category numbers are in ``metrics/<dataset>.json``.
A dataset whose data are absent appears as ``{"absent": true, "missing": …}`` (no numbers).
"""

from __future__ import annotations

from pathlib import Path

from ad_pipeline.io import read_json, write_json
from stages.common import METRICS_DIR, params

HEADLINE = {"mvtec_loco": ("image_auroc_mean", "spro_mean"), "default": ("image_auroc", "aupro")}


def headline(result: dict) -> dict:
    if result.get("absent"):
        return {"absent": True}
    keys = HEADLINE.get(result["format"], HEADLINE["default"])
    return {m: {k: r["mean"][k] for k in keys if k in r["mean"]} for m, r in result["methods"].items()}


def run(out: Path = Path("metrics.json"), headline_out: Path = Path("headline.json")) -> None:
    p = params()
    results = {ds: read_json(METRICS_DIR / f"{ds}.json") for ds in p.summary_datasets}
    summary = {ds: {"absent": True, "missing": r["missing"]} if r.get("absent") else
               {m: {"weights": res["weights"], **res["mean"]} for m, res in r["methods"].items()}
               for ds, r in results.items()}
    write_json(out, summary)
    write_json(headline_out, {ds: headline(r) for ds, r in results.items()})

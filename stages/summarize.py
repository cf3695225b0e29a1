"""Stage ``summarize``: the top-level ``metrics.json`` (dataset → method → mean metrics).

This is the file CI's regression gate compares against the committed baseline.
"""

from __future__ import annotations

from pathlib import Path

from ad_pipeline.io import read_json, write_json
from stages.common import METRICS_DIR, params


def run(out: Path = Path("metrics.json")) -> None:
    p = params()
    summary = {}
    for dataset in p.summary_datasets:
        result = read_json(METRICS_DIR / f"{dataset}.json")
        summary[dataset] = {m: {"weights": r["weights"], **r["mean"]} for m, r in result["methods"].items()}
    write_json(out, summary)

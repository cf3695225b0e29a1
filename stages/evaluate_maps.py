"""``ad-pipeline evaluate-maps``: score a folder of anomaly maps like MVTec's official evaluators
(the layout and checks: ``ad_pipeline.metrics.map_folder``). On a problem nothing is written."""

from __future__ import annotations

from pathlib import Path

import typer

from ad_pipeline.io import write_json
from ad_pipeline.metrics.map_folder import evaluate_map_folder


def evaluate_maps(format: str, dataset_root: Path, category: str, anomaly_maps: Path,
                  integration_limit: float | None = None, output: Path | None = None) -> dict:
    """Evaluate one category's maps; prints a table, returns (and optionally writes) the metrics."""
    result, limit = evaluate_map_folder(format, dataset_root, category, anomaly_maps, integration_limit)
    typer.echo(f"{category} ({format}, integration limit {limit})")
    for name, value in result.items():
        if isinstance(value, dict):
            typer.echo(f"  {name:<12}" + "  ".join(f"{k} {v:.4f}" for k, v in value.items()))
        else:
            typer.echo(f"  {name:<12}{value:.4f}")
    if output is not None:
        write_json(output, result)
    return result

"""``ad-pipeline check-metrics``: CI regression gate between a baseline and a current metrics JSON."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer

from ad_pipeline.io import read_json
from ad_pipeline.metrics.gate import FAILING, compare_metrics, format_table


def check_metrics(
    baseline: Annotated[Path, typer.Argument(help="baseline metrics JSON (e.g. from the main branch)")],
    current: Annotated[Path, typer.Argument(help="metrics JSON of this run")],
    tolerance: Annotated[float, typer.Option(help="allowed drop per metric (absolute)")] = 0.005,
) -> int:
    """Print a before/after table; return 1 if any metric dropped by more than ``tolerance``,
    disappeared or is not finite, else 0. New metrics are reported but pass."""
    changes = compare_metrics(read_json(baseline), read_json(current), tolerance)
    typer.echo(format_table(changes))
    failed = [c for c in changes if c.status in FAILING]
    for c in failed:
        typer.echo(f"FAIL {c.name}: {c.status.lower()} (before {c.before}, after {c.after}, tolerance {tolerance})")
    typer.echo(f"{len(failed)} metric(s) failed the gate" if failed else f"all {len(changes)} metrics pass")
    return 1 if failed else 0


@functools.wraps(check_metrics)
def check_metrics_command(*args, **kwargs) -> None:
    """CLI entry: exits with check_metrics' status (register this one as a typer command)."""
    raise typer.Exit(check_metrics(*args, **kwargs))


if __name__ == "__main__":
    typer.run(check_metrics_command)

"""``ad-pipeline check-metrics``: CI regression gate between a baseline and a current metrics JSON."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import read_json
from ad_pipeline.metrics.gate import FAILING, NoiseModel, compare_metrics, format_table

NOISE_FILE = Path("metrics_noise.json")


def load_noise(path: Path) -> NoiseModel:
    """The noise model of ``path``; a missing or malformed file is one error naming it and the fix."""
    fix = "regenerate it with the baseline: `dvc repro report && ad-pipeline baseline-noise`"
    try:
        return NoiseModel.from_json(read_json(path))
    except ArtifactError as e:
        raise ArtifactError(e.what, path=path, fix=fix) from None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ArtifactError(f"not a noise model ({type(e).__name__}: {e}); expected "
                            '{"k": .., "metrics": {name: {"quantum": .., "spread": ..}}}', path=path, fix=fix) from None


def check_metrics(
    baseline: Annotated[Path, typer.Argument(help="baseline metrics JSON (e.g. from the main branch)")],
    current: Annotated[Path, typer.Argument(help="metrics JSON of this run")],
    noise: Annotated[Path, typer.Option(help="the baseline's noise model")] = NOISE_FILE,
    tolerance: Annotated[Optional[float], typer.Option(help="one absolute tolerance instead of the noise model")] = None,
) -> int:
    """Print a before/after table; return 1 if any metric dropped by more than its tolerance,
    disappeared, is not finite or has no noise model, else 0. New metrics are reported but pass."""
    model = load_noise(noise) if tolerance is None else tolerance
    changes = compare_metrics(read_json(baseline), read_json(current), model)
    typer.echo(format_table(changes))
    failed = [c for c in changes if c.status in FAILING]
    for c in failed:
        typer.echo(f"FAIL {c.name}: {c.status.lower()} (before {c.before}, after {c.after}, tolerance {c.tolerance})")
    rule = f"tolerance {tolerance}" if tolerance is not None else f"noise model {noise} (k = {model.k})"
    typer.echo(f"{len(failed)} metric(s) failed the gate ({rule})" if failed
               else f"all {len(changes)} metrics pass ({rule})")
    return 1 if failed else 0


@functools.wraps(check_metrics)
def check_metrics_command(*args, **kwargs) -> None:
    """CLI entry: exits with check_metrics' status (register this one as a typer command)."""
    raise typer.Exit(check_metrics(*args, **kwargs))


if __name__ == "__main__":
    typer.run(check_metrics_command)

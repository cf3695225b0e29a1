"""The ``ad-pipeline`` command line (also ``python -m stages``). One command per DVC stage,
plus the user tools (evaluate-maps, check-metrics, params). Stage modules are imported
lazily so that ``--help`` is instant."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

import typer

from ad_pipeline.errors import UserError
from stages.options import OPTIONS

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Reproducible industrial anomaly detection: DVC stages and tools.")


@app.callback()
def _global(
    params: Path = typer.Option(Path("params.yaml"), "--params", help="params file to read"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars (CI)"),
) -> None:
    OPTIONS.params_path = params
    OPTIONS.quiet = quiet
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s")
    _set_numerics(params)


def _set_numerics(params: Path) -> None:
    """Apply params' ``numerics:`` profile before any command imports torch (see ad_pipeline/numerics).
    An unreadable or invalid section means the defaults here; the full params load reports it."""
    import yaml
    from pydantic import ValidationError

    from ad_pipeline import numerics

    try:
        section = (yaml.safe_load(params.read_text()) or {}).get("numerics") or {}
        config = numerics.NumericsConfig.model_validate(section)
    except (OSError, yaml.YAMLError, AttributeError, ValidationError):
        config = numerics.NumericsConfig()
    numerics.apply(config)
    numerics.pin_threads()


@app.command("check-params")
def check_params() -> None:
    """Validate params.yaml (the first DVC stage: every other stage depends on it)."""
    from stages import check_params as stage

    stage.run()


@app.command()
def synthesize() -> None:
    """Write the embedded synthetic datasets (deterministic from `seed`)."""
    from stages import synthesize as stage

    stage.run()


@app.command()
def prepare(dataset: str) -> None:
    """Validate a dataset's layout and write its manifests."""
    from stages import prepare as stage

    stage.run(dataset)


@app.command()
def preflight(dataset: str) -> None:
    """List everything the dataset's recipe needs that is not there, and the cost per stage."""
    from stages import preflight as stage
    from stages.common import params as load

    typer.echo(stage.require(load(), dataset))


@app.command("import-part-labels")
def import_part_labels(
    dataset: str,
    category: str,
    format: Optional[str] = typer.Option(None, help="labelme | coco | cvat | png"),
    source: Optional[Path] = typer.Option(None, help="the exported annotation folder (COCO: the .json file)"),
    classes: Optional[str] = typer.Option(None, help="comma-separated part names, in class-id order (1, 2, …)"),
    from_pseudo_labels: bool = typer.Option(False, "--from-pseudo-labels",
                                            help="bootstrap from CSAD's pseudo-labels of the same images"),
    shots: int = typer.Option(5, help="with --from-pseudo-labels: how many images to take"),
) -> None:
    """Import PSAD's few-shot part labels into <root>/<category>/aux/part_labels (README "PSAD part labels")."""
    from stages import import_part_labels as stage

    labels = stage.run(dataset, category, format, source, classes.split(",") if classes else None,
                       from_pseudo_labels, shots)
    typer.echo(f"{len(labels.masks)} label(s), {labels.num_classes} classes incl. background: "
               f"{', '.join(labels.class_names)}")


@app.command("convert-visa")
def convert_visa(dataset: str = typer.Argument("visa")) -> None:
    """Convert the raw VisA archive (1cls split) into an MVTec-style tree with 0/255 masks."""
    from stages import convert_visa as stage

    stage.run(dataset)


@app.command("run")
def run_method(method: str, dataset: str) -> None:
    """Fit and score one per-category method on a dataset (stage `<method>@<dataset>`)."""
    from stages import run_method as stage

    stage.run(method, dataset)


@app.command("efficientad-teacher")
def efficientad_teacher(dataset: str, method: str = typer.Option(
        "efficientad", help="the EfficientAD variant whose teacher to make (efficientad_m: efficientad_teacher_m@)")) -> None:
    """The EfficientAD PDN teacher of a dataset: weights_dir/teacher_<size>.pth, else distilled."""
    from stages import efficientad_teacher as stage

    stage.run(dataset, method)


@app.command()
def uniad(dataset: str) -> None:
    """Train one UniAD model for all categories of a dataset and write per-category dumps."""
    from stages import uniad as stage

    stage.run(dataset)


@app.command("uniad-vis")
def uniad_vis(dataset: str) -> None:
    """Train UniAD's visualisation decoder and render reconstructions and learned queries."""
    from stages import uniad_vis as stage

    stage.run(dataset)


@app.command("pseudo-labels")
def pseudo_labels(dataset: str) -> None:
    """CSAD pseudo-labels of the training images (mask proposer + clustering)."""
    from stages import pseudo_labels as stage

    stage.run(dataset)


@app.command()
def segmentor(dataset: str) -> None:
    """Train CSAD's segmentor on the pseudo-labels; predict part maps of every split."""
    from stages import segmentor as stage

    stage.run(dataset)


@app.command("part-segmenter")
def part_segmenter(dataset: str) -> None:
    """Train PSAD's few-shot part segmenter from a few labelled train images."""
    from stages import part_segmenter as stage

    stage.run(dataset)


@app.command("psad-segmenter")
def psad_segmenter(dataset: str) -> None:
    """Train PSAD's second-stage segmenter on the few-shot segmenter's pseudo-labels."""
    from stages import psad_segmenter as stage

    stage.run(dataset)


@app.command()
def psad(dataset: str) -> None:
    """PSAD scoring (histogram, composition and PatchCore banks with adaptive scaling)."""
    from stages import psad as stage

    stage.run(dataset)


@app.command()
def export(dataset: str) -> None:
    """Export every exportable fitted model of a dataset to each installed format (ONNX, OpenVINO);
    score the exports on the test split against PyTorch (AUROC, max |Δ|, CPU latency)."""
    from stages import export as stage

    stage.run(dataset)


@app.command()
def evaluate(dataset: str) -> None:
    """Evaluate every enabled method's dumps for a dataset (stage `evaluate@<dataset>`)."""
    from stages import evaluate as stage

    stage.run(dataset)


@app.command()
def fuse(dataset: str) -> None:
    """Fuse the methods listed in `fuse.methods` (validation-only normalisation)."""
    from stages import fuse as stage

    stage.run(dataset)


@app.command()
def summarize(out: Path = typer.Option(Path("metrics.json"), help="summary file (the CI gate's)"),
              headline: Path = typer.Option(Path("headline.json"), help="headline numbers (dvc exp show)")) -> None:
    """Write the top-level metrics.json and headline.json from the per-dataset metrics."""
    from stages import summarize as stage

    stage.run(out, headline)


@app.command()
def report(out: Path = typer.Option(Path("report"), help="output folder")) -> None:
    """Write the HTML + markdown results report (tables, ROC curves, overlays)."""
    from stages import report as stage

    stage.run(out)


@app.command()
def predict(
    inputs: list[Path] = typer.Argument(..., help="image files and/or folders"),
    method: Optional[str] = typer.Option(None, help="method of the fitted model (patchcore, efficientad, puad, …)"),
    model_dir: Optional[Path] = typer.Option(None, help="artifacts/<dataset>/<method>/<category>"),
    model: Optional[Path] = typer.Option(None, help="an exported model file (.onnx, .xml) instead of "
                                                     "--method/--model-dir: artifacts/exports/<dataset>/<method>/<category>/model.onnx"),
    out: Path = typer.Option(..., help="output folder"),
    device: str = typer.Option("cpu"),
    weights_dir: Optional[Path] = typer.Option(None, help="local weights (if the model needs a backbone)"),
    allow_resize: bool = typer.Option(False, help="accept images of another size than the training images"),
) -> None:
    """Score new images with a fitted model: maps, overlays, scores and decisions."""
    from stages import predict as stage

    if model is not None:
        if method is not None or model_dir is not None:
            raise UserError("pass either --model or --method with --model-dir, not both")
        summary = stage.run_exported(model, inputs, out, allow_resize)
    elif method is None or model_dir is None:
        raise UserError("predict needs --method and --model-dir (a fitted model) or --model (an exported file)")
    else:
        summary = stage.run(method, model_dir, inputs, out, device, weights_dir, allow_resize)
    typer.echo(f"{summary['images']} images scored, {summary['flagged']} flagged at threshold "
               f"{summary['threshold']}; results in {out}")


exp_grid = typer.Typer(no_args_is_help=True, help="A seed's ablation table as queued DVC experiments.")
app.add_typer(exp_grid, name="exp-grid")


@exp_grid.command("queue")
def exp_grid_queue(
    grid: Path = typer.Argument(..., help="experiments/<name>.yaml"),
    dataset: Optional[str] = typer.Option(None, help="dataset instead of the grid's own"),
    run: bool = typer.Option(False, "--run", help="run each row now, one after the other (no queue)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="only print the commands"),
) -> None:
    """`dvc exp run --queue -n <grid>-<ii> -S …` for each row of the grid (then `dvc queue start`)."""
    from stages.exp_grid import queue

    for line in queue(grid, dataset=dataset, run_now=run, dry_run=dry_run):
        typer.echo(line)


@exp_grid.command("table")
def exp_grid_table(
    grid: Path = typer.Argument(..., help="experiments/<name>.yaml"),
    dataset: Optional[str] = typer.Option(None, help="dataset instead of the grid's own"),
    out: Path = typer.Option(Path("experiments/results"), help="folder for <grid>.md and <grid>.json"),
) -> None:
    """Collect the grid's finished experiments into the seed's table (markdown + JSON)."""
    from stages.exp_grid import render_markdown, table

    typer.echo(render_markdown(table(grid, dataset=dataset, out=out)))


@app.command("params")
def show_params(
    dataset: Optional[str] = typer.Option(None, help="show the effective settings on this dataset"),
    method: Optional[str] = typer.Option(None, help="method (or efficientad_teacher / pseudo_labels) to show"),
    category: Optional[str] = typer.Option(None, help="category, for per-category settings"),
) -> None:
    """Validate params.yaml and print it with defaults filled in; with --dataset and --method, the
    effective settings of that stage with the source of each value (paper default / dataset
    profile / user override)."""
    import yaml

    from stages.common import params as load
    from stages.settings import settings_table

    p = load()
    if dataset is None and method is None:
        typer.echo(yaml.safe_dump(p.model_dump(mode="json"), sort_keys=False))
        return
    if dataset is None or method is None:
        raise UserError("--dataset and --method go together", fix="e.g. ad-pipeline params --dataset mvtec_loco "
                                                                  "--method efficientad")
    typer.echo(settings_table(p, method, dataset, category))


@app.command("evaluate-maps")
def evaluate_maps(
    format: str = typer.Option(..., help="mvtec_ad or mvtec_loco"),
    dataset_root: Path = typer.Option(..., help="dataset root holding <category>/test and ground_truth"),
    category: str = typer.Option(..., help="category folder name, e.g. bottle"),
    anomaly_maps: Path = typer.Option(..., help="DIR with <category>/test/<type>/<stem>.tiff (or .npy/.png) maps"),
    integration_limit: Optional[float] = typer.Option(None, help="FPR limit (default 0.3 AUPRO, 0.05 sPRO)"),
    output: Optional[Path] = typer.Option(None, help="write the metrics JSON here"),
) -> None:
    """Evaluate anomaly maps from any tool exactly like the official MVTec AD / LOCO evaluators."""
    from stages.evaluate_maps import evaluate_maps as run

    run(format, dataset_root, category, anomaly_maps, integration_limit, output)


@app.command("check-metrics")
def check_metrics(
    baseline: Path = typer.Option(..., help="baseline metrics JSON (the committed metrics.json)"),
    current: Path = typer.Option(..., help="metrics JSON of this run"),
    noise: Path = typer.Option(Path("metrics_noise.json"), help="the baseline's noise model"),
    tolerance: Optional[float] = typer.Option(None, help="one absolute tolerance instead of the noise model"),
) -> None:
    """CI regression gate: fail if a metric dropped by more than its noise tolerance or disappeared."""
    from stages.check_metrics import check_metrics as run

    raise typer.Exit(run(baseline, current, noise, tolerance))


@app.command("baseline-noise")
def baseline_noise(
    seed: Optional[list[int]] = typer.Option(None, help="extra seeds (default: params gate.seeds)"),
    out: Path = typer.Option(Path("metrics_noise.json"), help="noise model file"),
    fresh: bool = typer.Option(False, help="re-run seeds that the existing noise file recorded for this baseline"),
) -> None:
    """Re-run the pipeline with other seeds and write the gate's noise model for metrics.json."""
    from stages import baseline_noise as stage

    stage.run(seed or None, out, fresh=fresh)


def main() -> None:
    try:
        app()
    except UserError as e:
        typer.secho(f"error: {e.render()}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

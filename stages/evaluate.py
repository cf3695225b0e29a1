"""Stage ``evaluate@<dataset>``: every enabled method's dumps → ``metrics/<dataset>.{json,md}``.

The metrics live outside ``artifacts/<dataset>/`` because the stage depends on that whole
directory (all method dumps); ``metrics/`` is git-tracked so ``dvc metrics show`` and
``dvc exp show`` display it.
"""

from __future__ import annotations

from pathlib import Path

from ad_pipeline.io import atomic_path, file_digest, read_json, read_scores, sha256_of, write_json
from ad_pipeline.metrics.evaluate import evaluate_category, mean_over_categories
from ad_pipeline.report.published import published_for
from ad_pipeline.report.render import recipe_line
from stages.common import (METRICS_DIR, dataset_absent, ground_truth_dir, load_manifests, log, manifest_dir,
                           method_dir, params, warn_absent)


def method_weights(dump_root: Path, categories: list[str]) -> str:
    """'pretrained' / 'random-init' (or 'mixed') from the methods' meta.json files."""
    modes = {read_json(dump_root / c / "meta.json").get("weights", "n/a") for c in categories}
    return modes.pop() if len(modes) == 1 else "mixed"


BUDGET_KEYS = ("model_size", "steps", "epochs", "lgst_steps", "image_size", "coreset_ratio")


def method_recipe(dump_root: Path, categories: list[str]) -> dict:
    """Whether every category ran the paper recipe, what deviated ({setting: source}, union over
    categories) and the budget actually used (backbone, steps/epochs, image size) from meta.json."""
    metas = [read_json(dump_root / c / "meta.json") for c in categories]
    deviations = {k: v for m in metas for k, v in m.get("deviations", {}).items()}
    budget: dict = {}
    for m in metas:
        params = m.get("params", {})
        budget.setdefault("backbone", m.get("backbone"))
        for k in BUDGET_KEYS:
            if k in params:
                budget.setdefault(k, params[k])
    return {"paper_recipe": all(m.get("paper_recipe", False) for m in metas), "deviations": deviations,
            "budget": budget}


def run(dataset: str) -> None:
    p = params()
    missing = dataset_absent(dataset)
    if missing is not None:
        warn_absent(f"evaluate@{dataset}", dataset, missing)
        write_metrics(dataset, {"dataset": dataset, "absent": True, "missing": missing}, absent_markdown(dataset, missing))
        return
    manifests = load_manifests(dataset)
    categories = [m.category for m in manifests]
    result: dict = {"dataset": dataset, "format": p.datasets[dataset].format,
                    "published": p.datasets[dataset].published, "inputs": prepared_digest(dataset), "methods": {}}
    for method in p.methods_for(dataset):
        root = method_dir(dataset, method)
        per_cat = {}
        for manifest in manifests:
            scores, maps = read_scores(root / manifest.category, "test", manifest.fingerprint("test"))
            per_cat[manifest.category] = evaluate_category(
                manifest, scores, maps, aupro_limit=p.evaluate.aupro_limit, spro_limits=tuple(p.evaluate.spro_limits))
        result["methods"][method] = {
            "weights": method_weights(root, categories),
            "inputs": dumps_digest(root, categories),
            "recipe": method_recipe(root, categories),
            "mean": mean_over_categories(per_cat),
            "categories": per_cat,
        }
        log.info("evaluate@%s: %s %s", dataset, method, result["methods"][method]["mean"])
    write_metrics(dataset, result, markdown_table(result))


def prepared_digest(dataset: str) -> str:
    """sha256 over prepare@'s outputs (manifests: image bytes; ground_truth: mask bytes)."""
    files = sorted(p for d in (manifest_dir(dataset), ground_truth_dir(dataset)) for p in d.glob("*.json"))
    return sha256_of([f"{p.parent.name}/{p.name}:{file_digest(p)}" for p in files])


def dumps_digest(root: Path, categories: list[str]) -> str:
    """sha256 over the test dump files evaluated: it changes whenever a dump does, so stages that
    depend on ``metrics/`` (summarize, report) re-run even when the metric values do not."""
    return sha256_of([f"{c}/{p.name}:{file_digest(p)}" for c in categories
                      for p in sorted((root / c).glob("test_*"))])


def write_metrics(dataset: str, result: dict, markdown: str) -> None:
    write_json(METRICS_DIR / f"{dataset}.json", result)
    with atomic_path(METRICS_DIR / f"{dataset}.md") as tmp:
        tmp.write_text(markdown)


def absent_markdown(dataset: str, missing: str) -> str:
    return (f"# {dataset}: DATA ABSENT\n\nNo results: `prepare@{dataset}` found no data.\n\n"
            f"What is missing and where to put it:\n\n```\n{missing}\n```\n\n"
            "Then re-run `dvc repro` (or `dvc exp run`).\n")


def markdown_table(result: dict) -> str:
    """One table per method: categories × metrics (published values beside ours where the
    paper has them), the mean row; weights, recipe marks and budget on top."""
    lines = [f"# {result['dataset']} ({result['format']})", ""]
    for method, res in result["methods"].items():
        keys = list(res["mean"])
        lines += [f"## {method} — weights: {res['weights']}", "", recipe_line(res.get("recipe")), "",
                  "| category | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for cat, vals in [*res["categories"].items(), ("**mean**", res["mean"])]:
            pub = published_for(result.get("published"), method, None if cat == "**mean**" else cat)
            lines.append(f"| {cat} | " + " | ".join(
                f"{100 * vals[k]:.2f}" + (f" (pub. {100 * pub[k]:.1f})" if k in pub else "") for k in keys) + " |")
        lines.append("")
    return "\n".join(lines)

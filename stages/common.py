"""What every stage shares: params, paths of the artifact contract, run context, meta.json."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ad_pipeline import numerics
from ad_pipeline.data.manifest import Manifest
from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import atomic_dir, params_hash, read_json, write_json
from ad_pipeline.meta import library_versions
from ad_pipeline.methods.base import RunContext
from stages.options import OPTIONS
from stages.params import BaseParams, load_params
from stages.settings import Effective

ARTIFACTS = Path("artifacts")
METRICS_DIR = Path("metrics")
ABSENT_FILE = "ABSENT.json"  # the only file of a stage output for a dataset whose data are absent
log = logging.getLogger("ad_pipeline")


def params() -> BaseParams:
    return load_params(OPTIONS.params_path)


def manifest_dir(dataset: str) -> Path:
    return ARTIFACTS / dataset / "manifest"


def ground_truth_dir(dataset: str) -> Path:
    """``artifacts/<dataset>/ground_truth``: prepare@'s sha256 of the masks, per category."""
    return ARTIFACTS / dataset / "ground_truth"


def method_dir(dataset: str, method: str) -> Path:
    """``artifacts/<dataset>/<method>``; fused results live apart in ``artifacts/fusion/<dataset>``
    because the fuse stage depends on the whole ``artifacts/<dataset>`` directory."""
    return ARTIFACTS / "fusion" / dataset if method == "fused" else ARTIFACTS / dataset / method


# teacher stage of each EfficientAD variant (its method's ``requires``)
TEACHER_STAGES = {"efficientad": "efficientad_teacher", "efficientad_m": "efficientad_teacher_m"}


def teacher_dir(dataset: str, stage: str = "efficientad_teacher") -> Path:
    """``<stage>@<dataset>``'s output: the PDN teacher an EfficientAD variant uses on that dataset."""
    return ARTIFACTS / stage / dataset


def upstream_dir(name: str, dataset: str, category: str) -> Path:
    """The output a method builds on (``requires``): the teacher stage's dir, else a method's category dir."""
    return teacher_dir(dataset, name) if name in TEACHER_STAGES.values() else method_dir(dataset, name) / category


RECONSTRUCTION, QUERIES = "reconstruction.png", "queries.png"  # uniad_vis@'s figures per category


def vis_dir(dataset: str) -> Path:
    """``uniad_vis@<dataset>``'s output (read by the report): ``<category>/{RECONSTRUCTION,QUERIES}``, vis.json."""
    return ARTIFACTS / "vis" / "uniad" / dataset


def _index(dataset: str) -> dict:
    index_path = manifest_dir(dataset) / "index.json"
    if not index_path.exists():
        raise ArtifactError(f"no manifests for dataset {dataset!r}", path=manifest_dir(dataset),
                            fix=f"run `dvc repro prepare@{dataset}` first")
    return read_json(index_path)


def dataset_absent(dataset: str) -> str | None:
    """What is missing and where to put it when ``prepare@<dataset>`` found no data, else None."""
    index = _index(dataset)
    return index.get("missing", "data absent") if index.get("absent") else None


def warn_absent(stage: str, dataset: str, missing: str) -> None:
    """The loud multi-line warning every stage logs for a dataset whose data are absent."""
    bar = "!" * 78
    log.warning("%s\nWARNING %s: dataset %r is ABSENT, nothing computed (no results for it).\n"
                "  missing: %s\n  then re-run `dvc repro` (or `dvc exp run`).\n%s",
                bar, stage, dataset, missing.replace("\n", "\n    "), bar)


def skip_absent(stage: str, dataset: str, out_dirs: Path | list[Path]) -> bool:
    """For a stage on an absent dataset: warn, write each output dir holding only ``ABSENT.json``
    ({"absent": true, "missing": …}) and return True; return False when the data are there."""
    missing = dataset_absent(dataset)
    if missing is None:
        return False
    warn_absent(stage, dataset, missing)
    for out_dir in [out_dirs] if isinstance(out_dirs, Path) else out_dirs:
        with atomic_dir(out_dir) as out:
            write_json(out / ABSENT_FILE, {"absent": True, "dataset": dataset, "missing": missing})
    return True


def load_manifests(dataset: str) -> list[Manifest]:
    """The manifests written by ``prepare@<dataset>``, in category order."""
    index = _index(dataset)
    if index.get("absent"):
        raise ArtifactError(f"dataset {dataset!r} is absent: prepare@{dataset} found no data",
                            path=manifest_dir(dataset), fix=index.get("missing"))
    return [Manifest.load(manifest_dir(dataset) / f"{cat}.json") for cat in index["categories"]]


def for_each_category(name: str, dataset: str, run_one: Callable[[BaseParams, Manifest, Path], None]) -> None:
    """The per-category stage ``<name>@<dataset>``: on an absent dataset only the ABSENT marker
    (:func:`skip_absent`); else one atomic ``method_dir(dataset, name)`` holding a fresh
    ``<category>/`` per manifest, filled by ``run_one(params, manifest, category_dir)``."""
    p = params()
    out_dir = method_dir(dataset, name)
    if skip_absent(f"{name}@{dataset}", dataset, out_dir):
        return
    with atomic_dir(out_dir) as out:
        for manifest in load_manifests(dataset):
            cat_dir = out / manifest.category
            cat_dir.mkdir()
            run_one(p, manifest, cat_dir)


@dataclass(frozen=True)
class DatasetStage:
    """What a dataset-level stage starts from: params, one section's effective settings on the
    dataset (``settings.config``: its validated Config) and the run context."""

    params: BaseParams
    settings: Effective
    ctx: RunContext


def start_dataset_stage(stage: str, section: str, dataset: str,
                        out_dirs: Path | list[Path]) -> DatasetStage | None:
    """None after :func:`skip_absent` wrote the ABSENT markers of an absent dataset; else the
    params, ``section``'s effective settings on ``dataset`` and its run context."""
    p = params()
    if skip_absent(stage, dataset, out_dirs):
        return None
    settings = p.settings(section, dataset)
    return DatasetStage(p, settings, run_context(p, dataset, settings))


def pretrained_mode(p: BaseParams, dataset: str) -> str:
    """``pretrained`` as the dataset allows it: missing weights are an error ("true") unless the
    dataset's profile sets ``allow_random_init: true`` (the demo and tests)."""
    return p.pretrained if p.datasets[dataset].allow_random_init else "true"


def run_context(p: BaseParams, dataset: str, settings: Effective | None = None, **upstream: Path) -> RunContext:
    """The run context of a stage on ``dataset``; ``settings`` (a method's effective settings)
    gives the backbone of pluggable methods."""
    return RunContext(
        seed=p.seed,
        device=p.device,
        backbone=(settings.backbone if settings is not None else None) or "n/a",
        pretrained=pretrained_mode(p, dataset),
        weights_dir=Path(p.weights_dir),
        cache_dir=Path(p.cache_dir) if p.cache_dir else None,
        progress=not OPTIONS.quiet,
        dataset_format=p.datasets[dataset].format,
        upstream_dirs=upstream,
    )


def recipe_marks(settings: Effective | None, weights: str, upstream: Mapping[str, Path] | None = None) -> dict:
    """``paper_recipe`` (every setting the paper's, no random-init weights, every upstream stage
    the paper's) and the ``deviations`` from it: ``{setting: source}``, ``"weights":
    "random-init"`` and ``"upstream.<stage>": "not the paper recipe"``."""
    deviations = settings.deviations() if settings is not None else {}
    if weights in ("random-init", "mixed"):
        deviations = {**deviations, "weights": weights}
    for name, d in (upstream or {}).items():
        meta = Path(d) / "meta.json"
        if meta.exists() and not read_json(meta).get("paper_recipe", True):
            deviations = {**deviations, f"upstream.{name}": "not the paper recipe"}
    return {"paper_recipe": not deviations, "deviations": deviations}


def write_meta(out_dir: Path, *, method: str, section: Any, ctx: RunContext, measured: dict, extra: dict,
               settings: Effective | None = None) -> None:
    """meta.json: method, backbone, weights mode, params hash, timings, device, recipe marks
    (:func:`recipe_marks`), library versions."""
    cfg = section.model_dump(mode="json") if section is not None else {}
    weights = extra.pop("weights", "n/a")
    write_json(out_dir / "meta.json", {
        "method": method,
        "backbone": ctx.backbone,
        "pretrained": ctx.pretrained,
        "weights": weights,
        **recipe_marks(settings, weights, ctx.upstream_dirs),
        "seed": ctx.seed,
        "device": cfg.get("device") or ctx.device,  # a section's own device overrides the run's
        "dtype": cfg.get("precision", "fp32"),  # MuSc's autocast precision; every other stage computes in fp32
        "params": cfg,
        "params_hash": params_hash(cfg | {"seed": ctx.seed, "backbone": ctx.backbone}),
        **measured,
        **extra,
        "versions": library_versions(),
        "numerics": numerics.record(),
    })

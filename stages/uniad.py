"""Stage ``uniad@<dataset>``: ONE model trained on the training images of every category
(the unified setting), then per-category dumps in ``artifacts/<dataset>/uniad/<category>/``.
Categories whose manifests name a ``model_group`` (cifar10: each normal-class split is its own
experiment) get one unified model per group instead, checkpointed in ``…/<dataset>/<group>/``.

With ``uniad.distributed.nproc_per_node: K > 1`` the stage re-launches itself under torchrun
with K processes (DDP; NCCL on GPUs, gloo on CPU); rank 0 scores and writes the dumps.
Checkpoints live in ``artifacts/checkpoints/uniad/<dataset>/`` (a persistent DVC output), so a
killed training resumes from its last checkpoint instead of starting again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ad_pipeline.data.manifest import Manifest
from ad_pipeline.io import atomic_dir, write_scores
from ad_pipeline.meta import measured
from ad_pipeline.methods.uniad.launch import is_main_process, relaunch_under_torchrun, under_torchrun
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.method import MODEL_FILE, save_model_state
from ad_pipeline.methods.uniad.score import score_uniad
from ad_pipeline.methods.uniad.train import TrainResult, train_unified
from ad_pipeline.seed import seed_everything
from stages.common import ARTIFACTS, OPTIONS, load_manifests, method_dir, start_dataset_stage, write_meta
from stages.settings import Effective


def checkpoint_dir(dataset: str, group: str | None = None):
    base = ARTIFACTS / "checkpoints" / "uniad" / dataset
    return base if group is None else base / group


def model_groups(manifests: Sequence[Manifest]) -> dict[str | None, list[Manifest]]:
    """Manifests by ``extras["model_group"]`` (None: the whole dataset), in category order."""
    groups: dict[str | None, list[Manifest]] = {}
    for m in manifests:
        groups.setdefault(m.extras.get("model_group"), []).append(m)
    return groups


def run(dataset: str) -> None:
    stage = start_dataset_stage(f"uniad@{dataset}", "uniad", dataset,
                                [method_dir(dataset, "uniad"), checkpoint_dir(dataset)])
    if stage is None:
        return
    settings, ctx = stage.settings, stage.ctx
    cfg = settings.config
    nproc = cfg.distributed.nproc_per_node
    if nproc > 1 and not under_torchrun():
        argv = ["-m", "stages", "--params", str(OPTIONS.params_path), *(["--quiet"] if OPTIONS.quiet else []),
                "uniad", dataset]
        raise SystemExit(relaunch_under_torchrun(nproc, argv))
    groups = model_groups(load_manifests(dataset))
    results = {}
    for group, manifests in groups.items():
        seed_everything(stage.params.seed)
        with measured() as timing:
            result = train_unified({m.category: m.paths("train") for m in manifests}, cfg, ctx,
                                   checkpoint_dir(dataset, group),
                                   validation_sets={m.category: m.paths("validation") for m in manifests})
        results[group] = (result, dict(timing))
    if not is_main_process():
        return
    with atomic_dir(method_dir(dataset, "uniad")) as out:
        for group, manifests in groups.items():
            result, timing = results[group]
            model_file = out / MODEL_FILE if group is None else out / manifests[0].category / MODEL_FILE
            _write_group(out, model_file, manifests, result, timing, settings, ctx, writer=f"uniad@{dataset}")


def _write_group(out: Path, model_file: Path, manifests: list[Manifest], result: TrainResult, timing: dict,
                 settings: Effective, ctx: RunContext, writer: str) -> None:
    """One group's model file (hard-linked into every category folder) and per-category dumps."""
    cfg = settings.config
    model_file.parent.mkdir(exist_ok=True)
    save_model_state(model_file, result.model_state)
    for manifest in manifests:
        cat_dir = out / manifest.category
        cat_dir.mkdir(exist_ok=True)
        if cat_dir / MODEL_FILE != model_file:
            os.link(model_file, cat_dir / MODEL_FILE)  # one model for the group's categories, no copies
        for split in ("test", "validation"):
            paths = manifest.paths(split)
            if paths:
                s = score_uniad(result.model_state, paths, cfg, ctx)
                write_scores(cat_dir, split, manifest.fingerprint(split), s.scores, s.maps, writer=writer)
        meta = {k: v for k, v in result.meta.items() if k != "loss_history"}
        write_meta(cat_dir, method="uniad", section=cfg, ctx=ctx, measured=timing, settings=settings,
                   extra={"setting": "unified", "categories": [m.category for m in manifests], **meta})

"""Stage ``uniad@<dataset>``: ONE model trained on the training images of every category
(the unified setting), then per-category dumps in ``artifacts/<dataset>/uniad/<category>/``.

With ``uniad.distributed.nproc_per_node: K > 1`` the stage re-launches itself under torchrun
with K processes (DDP; NCCL on GPUs, gloo on CPU); rank 0 scores and writes the dumps.
Checkpoints live in ``artifacts/checkpoints/uniad/<dataset>/`` (a persistent DVC output), so a
killed training resumes from its last checkpoint instead of starting again.
"""

from __future__ import annotations

import os

from ad_pipeline.io import atomic_dir, write_scores
from ad_pipeline.meta import measured
from ad_pipeline.methods.uniad.launch import is_main_process, relaunch_under_torchrun, under_torchrun
from ad_pipeline.methods.uniad.method import MODEL_FILE, save_model_state
from ad_pipeline.methods.uniad.score import score_uniad
from ad_pipeline.methods.uniad.train import train_unified
from ad_pipeline.seed import seed_everything
from stages.common import ARTIFACTS, OPTIONS, load_manifests, method_dir, params, run_context, skip_absent, write_meta


def checkpoint_dir(dataset: str):
    return ARTIFACTS / "checkpoints" / "uniad" / dataset


def run(dataset: str) -> None:
    p = params()
    if skip_absent(f"uniad@{dataset}", dataset, [method_dir(dataset, "uniad"), checkpoint_dir(dataset)]):
        return
    settings = p.settings("uniad", dataset)
    cfg = settings.config
    nproc = cfg.distributed.nproc_per_node
    if nproc > 1 and not under_torchrun():
        argv = ["-m", "stages", "--params", str(OPTIONS.params_path), *(["--quiet"] if OPTIONS.quiet else []),
                "uniad", dataset]
        raise SystemExit(relaunch_under_torchrun(nproc, argv))
    manifests = load_manifests(dataset)
    ctx = run_context(p, dataset, settings)
    seed_everything(p.seed)
    with measured() as timing:
        result = train_unified({m.category: m.paths("train") for m in manifests}, cfg, ctx, checkpoint_dir(dataset),
                               validation_sets={m.category: m.paths("validation") for m in manifests})
    if not is_main_process():
        return
    with atomic_dir(method_dir(dataset, "uniad")) as out:
        save_model_state(out / MODEL_FILE, result.model_state)
        for manifest in manifests:
            cat_dir = out / manifest.category
            cat_dir.mkdir()
            os.link(out / MODEL_FILE, cat_dir / MODEL_FILE)  # one model for all categories, no copies
            for split in ("test", "validation"):
                paths = manifest.paths(split)
                if paths:
                    s = score_uniad(result.model_state, paths, cfg, ctx)
                    write_scores(cat_dir, split, manifest.fingerprint(split), s.scores, s.maps,
                                 writer=f"uniad@{dataset}")
            meta = {k: v for k, v in result.meta.items() if k != "loss_history"}
            write_meta(cat_dir, method="uniad", section=cfg, ctx=ctx, measured=dict(timing), settings=settings,
                       extra={"setting": "unified", "categories": [m.category for m in manifests], **meta})

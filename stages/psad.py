"""Stage ``psad@<dataset>``: PSAD scoring on the (second-stage) part segmenter and a patch bank.

``psad.patch_bank: seed`` (default) computes the seed's PatchCore scores here (``psad.seed_bank``);
``full`` scores here against a bank of every train patch, with the patch features and kNN scoring
of the ``patchcore`` params (PSAD itself imports no PatchCore); ``coreset`` reads ``patchcore@``'s
``train_loo`` / ``validation`` / ``test`` dumps (never recomputed), checked against the manifest:
missing or stale dumps are an error naming the stage to run. meta.json's ``patch_bank`` says which.
"""

from __future__ import annotations

from ad_pipeline.data.manifest import Manifest
from ad_pipeline.io import read_json
from ad_pipeline.methods.base import MethodConfig, RunContext
from ad_pipeline.methods.patchcore.method import PatchCore
from ad_pipeline.methods.psad.method import load_patch_scores
from ad_pipeline.methods.psad.patch_bank import full_bank_patch_scores
from ad_pipeline.methods.psad.seed_bank import seed_bank_scores
from stages import run_method
from stages.common import method_dir, params, run_context

PATCHCORE_SPLITS = {"train_loo": "train", "validation": "validation", "test": "test"}


def load_patchcore_dumps(model, manifest: Manifest, dataset: str) -> None:
    pc_dir = method_dir(dataset, "patchcore") / manifest.category
    for dump, split in PATCHCORE_SPLITS.items():
        if manifest.split(split):
            model.patch_scores.update(load_patch_scores(pc_dir, dump, manifest.fingerprint(split),
                                                        manifest.paths(split)))
    meta = read_json(pc_dir / "meta.json") if (pc_dir / "meta.json").exists() else {}
    model.patch_bank = {"source": "patchcore@ dumps", "coreset_ratio": meta.get("params", {}).get("coreset_ratio"),
                        "memory_bank_size": meta.get("memory_bank_size"), "coreset_size": meta.get("coreset_size")}


def full_bank_scores(pc: MethodConfig, ctx: RunContext, train, others) -> tuple[dict, dict]:
    """``full_bank_patch_scores`` with the patch features and kNN scoring of PatchCore's ``pc`` params."""
    patchcore = PatchCore(pc.model_copy(update={"coreset_ratio": 1.0}), ctx)
    return full_bank_patch_scores(patchcore.features, patchcore.scoring, train, others)


def prepare(model, manifest: Manifest, dataset: str) -> None:
    if "p" not in model.cfg.memory_type:
        return
    if model.cfg.patch_bank == "coreset":
        load_patchcore_dumps(model, manifest, dataset)
        return
    others = [manifest.paths("validation"), manifest.paths("test")]
    if model.cfg.patch_bank == "seed":
        cfg = model.cfg
        model.patch_scores, model.patch_bank, bank = seed_bank_scores(cfg.seed_bank, cfg.image_size, cfg.preprocess,
                                                                      model.ctx, manifest.paths("train"), others)
        model.seed_bank = bank if cfg.seed_bank.save_bank else None
        return
    p = params()
    pc = p.settings("patchcore", dataset, manifest.category)  # the dataset's PatchCore settings, no coreset
    scores, facts = full_bank_scores(pc.config, run_context(p, dataset, pc), manifest.paths("train"), others)
    model.patch_scores.update(scores)
    model.patch_bank = facts


def run(dataset: str) -> None:
    run_method.run("psad", dataset, prepare=lambda model, manifest: prepare(model, manifest, dataset))

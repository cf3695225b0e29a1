"""Stage ``psad@<dataset>``: PSAD scoring on the part segmenter and PatchCore's dumps.

PatchCore's ``train_loo`` / ``validation`` / ``test`` dumps are read (never recomputed) and
checked against the manifest: missing or stale dumps are an error naming the stage to run.
"""

from __future__ import annotations

from ad_pipeline.data.manifest import Manifest
from ad_pipeline.methods.psad.method import load_patch_scores
from stages import run_method
from stages.common import method_dir

PATCHCORE_SPLITS = {"train_loo": "train", "validation": "validation", "test": "test"}


def load_patchcore_dumps(model, manifest: Manifest, dataset: str) -> None:
    pc_dir = method_dir(dataset, "patchcore") / manifest.category
    for dump, split in PATCHCORE_SPLITS.items():
        if manifest.split(split):
            model.patch_scores.update(load_patch_scores(pc_dir, dump, manifest.fingerprint(split),
                                                        manifest.paths(split)))


def run(dataset: str) -> None:
    run_method.run("psad", dataset, prepare=lambda model, manifest: load_patchcore_dumps(model, manifest, dataset))

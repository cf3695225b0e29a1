"""PSAD's patch bank with the seed's full PatchCore memory (no coreset), psad.md §4.

Kept apart from ``method.py`` so that the segmenter stages do not import PatchCore.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore.method import PatchCore, PatchCoreConfig


def full_bank_patch_scores(cfg: PatchCoreConfig, ctx: RunContext, train: Sequence[Path],
                           others: Sequence[Sequence[Path]]) -> tuple[dict[str, float], dict[str, Any]]:
    """PatchCore image scores with the FULL memory bank (``coreset_ratio`` 1, the seed's dumps):
    train images leave-one-out, every image in ``others`` against the whole bank.

    Returns ({path: score}, facts for meta.json). Memory: all train patch features [N·h·w, D].
    """
    pc = PatchCore(cfg.model_copy(update={"coreset_ratio": 1.0}), ctx)
    pc.fit(list(train), [])
    scores = {str(p): float(s) for p, s in zip(train, pc.train_loo_scores())}
    for paths in others:
        if paths:
            scores |= {str(p): float(s) for p, s in zip(paths, pc.score(list(paths)).scores)}
    return scores, {"source": "psad (own PatchCore, no coreset)", "coreset_ratio": 1.0,
                    "memory_bank_size": pc.bank_size, "backbone": pc.backbone.spec.name,
                    "weights": pc.backbone.weights}

"""PSAD's ``patch_bank: full``: our PatchCore's patch features and kNN scoring with the full memory
(every train patch, no coreset, as the seed's dumps), from the shared components (patch features,
memory bank kNN scores). The seed's own anomalib-style PatchCore is ``seed_bank.py`` (docs/parity.md).

Kept apart from ``method.py`` so that the segmenter stages do not import the backbone pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ad_pipeline.components.memory_bank import KnnScoring, MemoryBank
from ad_pipeline.components.patches import PatchFeatures


def full_bank_patch_scores(features: PatchFeatures, scoring: KnnScoring, train: Sequence[Path],
                           others: Sequence[Sequence[Path]]) -> tuple[dict[str, float], dict[str, Any]]:
    """PatchCore image scores with the FULL memory bank (every train patch, the seed's dumps): train
    images leave-one-out (``features.batch_size`` images per search), every image in ``others``
    against the whole bank.

    Returns ({path: score}, facts for meta.json). Memory: all train patch features [N, h, w, D].
    """
    feats = features(train)
    n, h, w, _ = feats.shape
    memory = MemoryBank(feats.flatten(0, 2), scoring, source=torch.arange(n).repeat_interleave(h * w))
    scores = {}
    for start in range(0, n, features.batch_size):
        rows = slice(start, start + features.batch_size)
        owners = torch.arange(n)[rows]
        scores |= dict(zip(map(str, train[rows]), map(float, memory.scores(feats[rows], owners)[1])))
    for paths in others:
        if paths:
            scores |= dict(zip(map(str, paths), map(float, memory.scores(features(paths))[1])))
    if not np.isfinite(list(scores.values())).all():
        raise FloatingPointError("PSAD's patch bank produced non-finite scores (features overflowed?)")
    return scores, {"source": "psad (own PatchCore, no coreset)", "coreset_ratio": 1.0,
                    "memory_bank_size": n * h * w, "backbone": features.backbone.spec.name,
                    "weights": features.backbone.weights}

"""Scoring with a trained UniAD model (spec ``uniad.md`` §3.7 and §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ad_pipeline.errors import ArtifactError
from ad_pipeline.methods.base import RunContext, Scores
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.features import build_feature_extractor, extract_aligned_features
from ad_pipeline.methods.uniad.model import UniADReconstructor, anomaly_map, image_scores
from ad_pipeline.methods.uniad.train import build_model, resolve_device

SCORE_POOL = 16  # avg-pool kernel before the max (the reference's "max" image score for MVTec AD)


@torch.no_grad()
def score_features(model: UniADReconstructor, features: Tensor, *, image_size: int, batch_size: int = 8,
                   device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Image scores float32 ``[N]`` and anomaly maps float32 ``[N, S, S]`` (``S = image_size``) of
    aligned features ``[N, C, h, w]``. Memory: the maps, ``N·S²·4`` bytes, plus one batch."""
    model = model.to(device).eval()
    n = len(features)
    maps = np.empty((n, image_size, image_size), dtype=np.float32)
    scores = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        clean = features[start:start + batch_size].to(device)
        batch_maps = anomaly_map(clean, model(clean), (image_size, image_size))
        maps[start:start + len(clean)] = batch_maps.cpu().numpy()
        scores[start:start + len(clean)] = image_scores(batch_maps, SCORE_POOL).cpu().numpy()
    if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(maps))):
        raise FloatingPointError("UniAD produced NaN/inf anomaly maps: the model weights are not finite")
    return scores, maps


def score_uniad(model_state: Mapping[str, Tensor], paths: Sequence[Path], cfg: Config, ctx: RunContext) -> Scores:
    """Score one category's images with the unified model: ``Scores(scores [N], maps [N, S, S])``,
    rows in the order of ``paths`` (``S = cfg.image_size``; 224 by default)."""
    device = resolve_device(cfg, ctx)
    extractor = build_feature_extractor(cfg, ctx)
    features = extract_aligned_features(extractor, paths, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                        device=device, num_workers=cfg.num_workers, cache_dir=ctx.cache_dir,
                                        progress=ctx.progress)
    model = build_model(cfg, tuple(features.shape[1:]))
    try:
        model.load_state_dict(model_state)
    except RuntimeError as e:
        raise ArtifactError(f"UniAD weights do not fit the configured model ({str(e).splitlines()[0]})",
                            fix="re-run the uniad stage with the current params") from None
    scores, maps = score_features(model, features, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                  device=device)
    return Scores(scores, maps, extras={"weights": extractor.backbone.weights})

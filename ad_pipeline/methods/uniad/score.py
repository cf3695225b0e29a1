"""Scoring with a trained UniAD model (spec ``uniad.md`` §3.7 and §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ad_pipeline.errors import ArtifactError
from ad_pipeline.methods.base import RunContext, Scores
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.distributed import resolve_device
from ad_pipeline.methods.uniad.features import build_feature_extractor, extract_aligned_features, extract_options
from ad_pipeline.methods.uniad.model import UniADReconstructor, anomaly_map, build_model, image_scores

SCORE_POOL = 16  # avg-pool kernel before the max (the reference's "max" image score for MVTec AD)
SCORE_RULES = ("max", "mean", "std")


def postprocess(maps: Tensor, rule: str, pool: int = SCORE_POOL) -> Tensor:
    """Image scores ``[B]`` of anomaly maps ``[B, H, W]`` (the reference's evaluator): ``max`` of the
    ``pool``×``pool`` avg-pooled map (stride 1, no padding), ``mean`` of the map, or its ``std``
    (population, ddof 0, as ``np.std``)."""
    if rule == "max":
        return image_scores(maps, pool)
    if rule == "mean":
        return maps.flatten(1).mean(dim=1)
    if rule == "std":
        return maps.flatten(1).std(dim=1, correction=0)
    raise ValueError(f"unknown image score rule {rule!r}; expected one of {', '.join(SCORE_RULES)}")


@torch.no_grad()
def score_features(model: UniADReconstructor, features: Tensor, *, image_size: int, batch_size: int = 8,
                   device: str | torch.device = "cpu", rule: str = "max",
                   map_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Image scores float32 ``[N]`` (``rule`` applied to the ``S×S`` map, ``S = image_size``) and
    anomaly maps float32 ``[N, M, M]`` (``M = map_size or S``; bilinear antialiased resize of the
    full map) of aligned features ``[N, C, h, w]``. Memory: the maps, ``N·M²·4`` bytes, plus one batch."""
    model = model.to(device).eval()
    n = len(features)
    m = map_size or image_size
    maps = np.empty((n, m, m), dtype=np.float32)
    scores = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        clean = features[start:start + batch_size].to(device)
        batch_maps = anomaly_map(clean, model(clean), (image_size, image_size))
        scores[start:start + len(clean)] = postprocess(batch_maps, rule).cpu().numpy()
        if m != image_size:
            batch_maps = F.interpolate(batch_maps[:, None], size=(m, m), mode="bilinear", antialias=True)[:, 0]
        maps[start:start + len(clean)] = batch_maps.cpu().numpy()
    if not (np.all(np.isfinite(scores)) and np.all(np.isfinite(maps))):
        raise FloatingPointError("UniAD produced NaN/inf anomaly maps: the model weights are not finite")
    return scores, maps


def score_uniad(model_state: Mapping[str, Tensor], paths: Sequence[Path], cfg: Config, ctx: RunContext) -> Scores:
    """Score one category's images with the unified model: ``Scores(scores [N], maps [N, S, S])``,
    rows in the order of ``paths`` (``S = cfg.map_size or cfg.image_size``; 224 by default). The image
    score rule is ``cfg.image_score`` (``auto``: by ``ctx.dataset_format``)."""
    device = resolve_device(cfg, ctx)
    extractor = build_feature_extractor(cfg, ctx)
    features = extract_aligned_features(extractor, paths, **extract_options(cfg, ctx, device, ctx.progress))
    model = build_model(cfg, tuple(features.shape[1:]))
    try:
        model.load_state_dict(model_state)
    except RuntimeError as e:
        raise ArtifactError(f"UniAD weights do not fit the configured model ({str(e).splitlines()[0]})",
                            fix="re-run the uniad stage with the current params") from None
    scores, maps = score_features(model, features, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                  device=device, rule=cfg.score_rule(ctx.dataset_format), map_size=cfg.map_size)
    return Scores(scores, maps, extras={"weights": extractor.backbone.weights})

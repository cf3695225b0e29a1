"""UniAD's inference graph for export: unit RGB [B,3,S,S] → (map [B,S,S], score [B]).

Backbone normalisation → frozen backbone + neck (aligned features) → the reconstruction
transformer (eval: no feature jitter) → per-position L2 error upsampled to S → image score =
max of the ``SCORE_POOL`` box-averaged map, as ``score.score_features``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ad_pipeline.errors import ArtifactError
from ad_pipeline.export.inference import Inference, Normalize
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.features import AlignedFeatures, build_feature_extractor, feature_shape
from ad_pipeline.methods.uniad.method import UniAD
from ad_pipeline.methods.uniad.model import UniADReconstructor, anomaly_map, build_model, image_scores
from ad_pipeline.methods.uniad.score import SCORE_POOL


class UniADInference(nn.Module):
    def __init__(self, extractor: AlignedFeatures, model: UniADReconstructor, image_size: int):
        super().__init__()
        spec = extractor.backbone.spec
        self.normalize = Normalize(spec.mean, spec.std)
        self.extractor = extractor.eval()
        self.model = model.eval()
        self.size = image_size

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.extractor(self.normalize(x))
        amap = anomaly_map(feats, self.model(feats), (self.size, self.size))
        return amap, image_scores(amap, SCORE_POOL)


def build(model_dir: Path, cfg: Config, ctx: RunContext) -> Inference:
    state = UniAD.load(model_dir, cfg, ctx).model_state
    extractor = build_feature_extractor(cfg, ctx)
    model = build_model(cfg, feature_shape(extractor, cfg.image_size))
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ArtifactError(f"UniAD weights do not fit the configured model ({str(e).splitlines()[0]})",
                            path=model_dir, fix="re-run the uniad stage with the current params") from None
    return Inference(UniADInference(extractor, model, cfg.image_size), resize=cfg.image_size)

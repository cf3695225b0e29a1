"""PatchCore with the real (packaged) EfficientNet-Lite0 ImageNet weights on real MVTec AD bottle images."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore import PatchCore, PatchCoreConfig

BOTTLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "mvtec_ad" / "bottle"


@pytest.mark.slow
@pytest.mark.skipif(not (BOTTLE / "train" / "good").is_dir(), reason=f"real bottle images not found at {BOTTLE}")
def test_patchcore_efficientnet_lite0_separates_real_bottle_defects():
    """20 train/good; test: 20 good + 63 defects (broken_large, broken_small, contamination).
    Measured: pretrained lite0 image AUROC 1.000, seeded random init 0.871; we require >= 0.98."""
    train = sorted((BOTTLE / "train" / "good").glob("*.png"))
    test = sorted((BOTTLE / "test").glob("*/*.png"))
    labels = [int(p.parent.name != "good") for p in test]
    assert len(train) == 20 and len(test) == 83 and sum(labels) == 63
    ctx = RunContext(backbone="efficientnet_lite0", pretrained="true", progress=False)
    method = PatchCore(PatchCoreConfig(), ctx)
    assert method.backbone.weights == "pretrained"
    method.fit(train, [])
    result = method.score(test)
    auroc = roc_auc_score(labels, result.scores)
    assert result.maps.shape == (83, 224, 224)
    assert auroc >= 0.98, f"image AUROC {auroc:.4f}"

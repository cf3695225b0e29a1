"""PatchCore on ViT backbones (random init, tiny): token grids, shapes, determinism, size checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ad_pipeline.backbones.features import load_images
from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore import PatchCore, PatchCoreConfig
from tests.helpers import write_random_images

CTX = RunContext(seed=0, pretrained="false", progress=False)


def tiny(backbone: str, size: int, **extra) -> PatchCoreConfig:
    return PatchCoreConfig(backbone=backbone, resize=size, image_size=size, pretrain_embed_dim=48,
                           target_embed_dim=32, coreset_ratio=0.5, batch_size=3, **extra)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_random_images(tmp_path_factory.mktemp("vit_images"), 6, (40, 48), seed=3)


def test_dinov2_patchcore_fits_scores_and_is_deterministic(images):
    method = PatchCore(tiny("dinov2_vits14", 56), CTX)
    assert method.layers == [5, 8]  # ~1/2 and ~3/4 of 12 blocks
    method.fit(images[:4], [])
    first = method.score(images[4:])
    assert first.scores.shape == (2,) and first.maps.shape == (2, 56, 56)
    assert np.isfinite(first.scores).all() and np.isfinite(first.maps).all() and (first.scores > 0).all()
    assert method.memory.bank.shape == (4 * 16 // 2, 32)  # 4 images × 4×4 tokens, half kept
    again = PatchCore(tiny("dinov2_vits14", 56), CTX)
    again.fit(images[:4], [])
    second = again.score(images[4:])
    assert np.array_equal(first.scores, second.scores) and np.array_equal(first.maps, second.maps)
    loo = method.train_loo_scores()
    assert loo.shape == (4,) and np.isfinite(loo).all()


def test_vit_tokens_are_laid_out_row_major_on_the_patch_grid(images):
    """embed == the aggregator applied to tokens reshaped [B, h, w, C] -> [B, C, h, w] by hand."""
    method = PatchCore(tiny("dinov2_vits14", 42, layers=[1, 3]), CTX)
    x = load_images(method.backbone, images[:2], 42, crop=42)
    with torch.inference_mode():
        tokens = method.backbone(x, [1, 3])
    grids = [tokens[b].reshape(2, 3, 3, -1).permute(0, 3, 1, 2) for b in (1, 3)]
    expected = method.features.aggregator(grids)
    torch.testing.assert_close(method.embed(images[:2]), expected)
    assert expected.shape == (2, 3, 3, 32)


def test_clip_patchcore_scores_finite_maps(images):
    method = PatchCore(tiny("ViT-B-16", 48), CTX)
    assert method.layers == [5, 8]
    method.fit(images[:3], [])
    result = method.score(images[3:])
    assert result.maps.shape == (3, 48, 48) and np.isfinite(result.maps).all() and np.isfinite(result.scores).all()
    assert method.meta()["memory_bank_size"] == 3 * 9


def test_vit_image_size_must_be_a_multiple_of_the_patch_size():
    with pytest.raises(UserError, match="not a multiple of the patch size 14") as err:
        PatchCore(tiny("dinov2_vits14", 60), CTX)
    assert "56 or 70" in str(err.value)


def test_vit_layers_are_block_indices(images):
    with pytest.raises(UserError, match="invalid layers"):
        PatchCore(tiny("dinov2_vits14", 28, layers=["layer2"]), CTX).embed(images[:1])

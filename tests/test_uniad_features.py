"""UniAD features: EfficientNet-B4 block choice, point-sampling neck, extraction cache."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ad_pipeline.errors import LayoutError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.features import align_features, build_feature_extractor, extract_aligned_features
from tests.helpers import write_random_images

CTX = RunContext(pretrained="false", progress=False)


@pytest.fixture(scope="module")
def extractor():
    return build_feature_extractor(Config(), CTX)


def test_default_blocks_match_reference_channels_and_strides(extractor):
    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode():
        maps = extractor.backbone(x, extractor.blocks)
        aligned = extractor(x)
    assert [m.shape[1] for m in maps.values()] == [24, 32, 56, 160]
    assert [224 // m.shape[-1] for m in maps.values()] == [2, 4, 8, 16]
    assert aligned.shape == (1, 272, 14, 14)


def test_neck_point_samples_with_align_corners():
    fine = torch.arange(64.0).view(1, 1, 8, 8)
    coarse = torch.full((1, 2, 2, 2), 7.0)
    out = align_features([fine, coarse])
    assert out.shape == (1, 3, 2, 2)
    # align_corners=True down-sampling 8 -> 2 picks the corner pixels, no averaging
    assert out[0, 0].tolist() == [[0.0, 7.0], [56.0, 63.0]]
    assert torch.equal(out[0, 1:], coarse[0])


def test_neck_upsamples_a_coarser_block_to_the_stride_grid():
    """CIFAR's fifth block (stride 32) is brought up to the stride-16 grid (outstrides [16])."""
    fine = torch.zeros(1, 1, 4, 4)
    coarse = torch.tensor([[0.0, 3.0], [6.0, 9.0]]).view(1, 1, 2, 2)
    out = align_features([fine, coarse], size=(4, 4))
    assert out.shape == (1, 2, 4, 4)
    assert out[0, 1, 0].tolist() == [0.0, 1.0, 2.0, 3.0] and out[0, 1, :, 0].tolist() == [0.0, 2.0, 4.0, 6.0]
    five = build_feature_extractor(Config(backbone="efficientnet_lite0", image_size=64, feature_blocks=[
        "blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"]), CTX)
    with torch.inference_mode():
        assert five(torch.zeros(1, 3, 64, 64)).shape == (1, 16 + 24 + 40 + 112 + 320, 4, 4)


def test_extraction_is_ordered_batched_and_cached(extractor, tmp_path):
    paths = write_random_images(tmp_path, 3)
    kw = dict(image_size=64, batch_size=2, progress=False)
    plain = extract_aligned_features(extractor, paths, **kw)
    assert plain.shape == (3, 272, 4, 4) and plain.dtype == torch.float32
    single = extract_aligned_features(extractor, paths[2:], **kw)
    assert torch.allclose(single[0], plain[2], atol=1e-5)

    cached = extract_aligned_features(extractor, paths, cache_dir=tmp_path / "cache", **kw)
    files = list((tmp_path / "cache" / "uniad").glob("*.npy"))
    assert len(files) == 1 and torch.equal(cached, plain)
    np.save(files[0], np.zeros((3, 272, 4, 4), dtype=np.float32))  # prove the second call reads the file
    assert float(extract_aligned_features(extractor, paths, cache_dir=tmp_path / "cache", **kw).abs().sum()) == 0.0
    os.utime(paths[0], ns=(1, 1))  # a changed image invalidates the key
    fresh = extract_aligned_features(extractor, paths, cache_dir=tmp_path / "cache", **kw)
    assert torch.equal(fresh, plain) and len(list((tmp_path / "cache" / "uniad").glob("*.npy"))) == 2


def test_missing_image_is_a_layout_error(extractor, tmp_path):
    with pytest.raises(LayoutError, match="missing.png"):
        extract_aligned_features(extractor, [tmp_path / "missing.png"], image_size=64, progress=False)

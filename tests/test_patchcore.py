"""PatchCore: pooling bins, aggregation, coreset vs a literal k-center loop, exact kNN, method behaviour."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import ValidationError
from sklearn.metrics import roc_auc_score

from ad_pipeline.components.coreset import greedy_coreset, literal_greedy_coreset
from ad_pipeline.components.knn import build_index
from ad_pipeline.components.memory_bank import MemoryBank
from ad_pipeline.components.patches import PatchAggregator, pool_to
from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore import PatchCore, PatchCoreConfig


def test_adaptive_pooling_bins_follow_floor_ceil_formula():
    for length, out in [(10, 4), (4608, 1024), (9216, 1024), (7, 7), (5, 8)]:
        v = torch.randn(3, length, dtype=torch.float64)
        expected = torch.stack([v[:, math.floor(i * length / out): math.ceil((i + 1) * length / out)].mean(1)
                                for i in range(out)], dim=1)
        torch.testing.assert_close(pool_to(v, out), expected)
    # hand-computed: L=10, O=4 -> bins [0,3), [2,5), [5,8), [7,10)
    torch.testing.assert_close(pool_to(torch.arange(10.0)[None], 4), torch.tensor([[1.0, 3.0, 6.0, 8.0]]))


def test_aggregation_is_neighbourhood_mean_then_layerwise_pairs():
    fine = torch.randn(2, 4, 6, 6)
    coarse = torch.randn(2, 4, 3, 3)
    agg = PatchAggregator(patch_size=3, pretrain_embed_dim=4, target_embed_dim=4)
    out = agg([fine, coarse])
    assert out.shape == (2, 6, 6, 4)
    # C·9 -> C pooling is the per-channel 3x3 zero-padded mean
    fine_mean = F.avg_pool2d(fine, 3, stride=1, padding=1, count_include_pad=True).permute(0, 2, 3, 1)
    coarse_unfolded = F.unfold(coarse, 3, padding=1).unflatten(2, (3, 3))
    coarse_mean = F.interpolate(coarse_unfolded, size=(6, 6), mode="bilinear", align_corners=False)
    coarse_mean = coarse_mean.unflatten(1, (4, 9)).mean(2).permute(0, 2, 3, 1)
    # target pooling over [fine(4) | coarse(4)] -> means of consecutive pairs
    expected = torch.cat([fine_mean, coarse_mean], dim=-1).unflatten(-1, (4, 2)).mean(-1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("candidates", [16, 64, 100_000])
def test_coreset_matches_literal_k_center(candidates):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(1200, 48, generator=g) * torch.linspace(0.2, 3, 48)
    expected = literal_greedy_coreset(feats, 0.15, projection_dim=16, seed=5)
    got = greedy_coreset(feats, 0.15, projection_dim=16, seed=5, candidates=candidates)
    assert got.tolist() == expected
    assert len(set(expected)) == len(expected) == 180


def test_coreset_edge_cases():
    feats = torch.randn(50, 8)
    assert greedy_coreset(feats, 1.0).tolist() == list(range(50))
    with pytest.raises(ValueError, match="selects no point"):
        greedy_coreset(feats, 0.01)
    assert torch.equal(greedy_coreset(feats, 0.2, seed=1), greedy_coreset(feats, 0.2, seed=1))


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_knn_equals_brute_force_cdist(backend):
    g = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(300, 32, generator=g), torch.randn(500, 32, generator=g)
    options = {} if backend == "faiss" else {"chunk_elements": 500 * 7}  # torch: 43 chunks
    d, idx = build_index(bank, backend, **options).search(queries, 3)
    brute = torch.cdist(queries.double(), bank.double()) ** 2
    ref = torch.topk(brute, 3, dim=1, largest=False)
    assert torch.equal(idx, ref.indices)
    torch.testing.assert_close(d.double(), ref.values, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fewer than k=3"):
        build_index(bank[:2], backend).search(queries, 3)


def _texture(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    stripes = 110 + 50 * np.sin(xx / 2.5 + rng.uniform(0, 6.3)) + rng.normal(0, 8, (size, size))
    return np.repeat(np.clip(stripes, 0, 255)[..., None], 3, axis=2).astype(np.uint8)


def _with_blob(img: np.ndarray, cy: int, cx: int) -> np.ndarray:
    out = img.copy()
    yy, xx = np.mgrid[:img.shape[0], :img.shape[1]]
    out[(yy - cy) ** 2 + (xx - cx) ** 2 <= 36] = 255
    return out


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """8 train stripes; test: 6 normal + 6 with a bright disc (radius 6 px) at a known place."""
    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    paths = {"train": [], "test": []}
    labels, centres = [], []
    for i in range(8):
        paths["train"].append(root / f"train{i}.png")
        Image.fromarray(_texture(rng)).save(paths["train"][-1])
    for i in range(12):
        img = _texture(rng)
        if i % 2:
            centres.append((int(rng.integers(16, 48)), int(rng.integers(16, 48))))
            img = _with_blob(img, *centres[-1])
        labels.append(i % 2)
        paths["test"].append(root / f"test{i}.png")
        Image.fromarray(img).save(paths["test"][-1])
    return paths, labels, centres


TINY = dict(backbone="resnet18", resize=64, image_size=64, pretrain_embed_dim=64, target_embed_dim=64,
            coreset_ratio=0.25, batch_size=4)
CTX = RunContext(seed=0, pretrained="false", progress=False)


@pytest.fixture(scope="module")
def fitted(synthetic):
    paths, _, _ = synthetic
    method = PatchCore(PatchCoreConfig(**TINY), CTX)
    method.fit(paths["train"], [])
    return method


def test_random_init_patchcore_finds_blobs(synthetic, fitted):
    """Random-init resnet18 at 64 px: every blob image outscores every normal one (AUROC 1.0),
    and the map peaks within ~10 px of the blob centre."""
    paths, labels, centres = synthetic
    result = fitted.score(paths["test"])
    assert result.scores.dtype == np.float32 and result.maps.shape == (12, 64, 64)
    assert roc_auc_score(labels, result.scores) == 1.0
    good, bad = result.scores[::2], result.scores[1::2]
    assert bad.min() > 1.2 * good.max()
    for (cy, cx), m in zip(centres, result.maps[1::2]):
        py, px = np.unravel_index(np.argmax(m), m.shape)
        assert abs(py - cy) <= 10 and abs(px - cx) <= 10
    assert np.allclose(result.scores, result.maps.reshape(12, -1).max(1), rtol=0.5)  # blur lowers the peak
    assert fitted.meta() == {"backbone": "resnet18", "weights": "random-init", "layers": ["layer2", "layer3"],
                             "memory_bank_size": 8 * 64, "coreset_size": 128}


def test_save_load_round_trip_and_determinism(synthetic, fitted, tmp_path):
    paths, _, _ = synthetic
    first = fitted.score(paths["test"])
    fitted.save(tmp_path)
    loaded = PatchCore.load(tmp_path, PatchCoreConfig(**TINY), CTX)
    again = loaded.score(paths["test"])
    assert np.array_equal(first.scores, again.scores) and np.array_equal(first.maps, again.maps)

    refit = PatchCore(PatchCoreConfig(**TINY), CTX)
    refit.fit(paths["train"], [])
    assert torch.equal(refit.memory.bank, fitted.memory.bank)

    with pytest.raises(ArtifactError, match="fitted with config"):
        PatchCore.load(tmp_path, PatchCoreConfig(**(TINY | {"gaussian_sigma": 2.0})), CTX)


def test_reweighting_lowers_scores_and_stays_finite(synthetic, fitted):
    paths, labels, _ = synthetic
    plain = fitted.score(paths["test"]).scores
    memory = fitted.memory
    fitted.memory = MemoryBank(memory.bank, dataclasses.replace(memory.scoring, reweight=True))
    try:
        weighted = fitted.score(paths["test"]).scores
    finally:
        fitted.memory = memory
    assert np.isfinite(weighted).all() and (weighted < plain).all() and (weighted > 0).all()


def test_config_and_backbone_validation():
    with pytest.raises(ValidationError):
        PatchCoreConfig(coreset_ration=0.1)
    with pytest.raises(UserError, match="unknown backbone 'wide_resnet'"):
        PatchCore(PatchCoreConfig(backbone="wide_resnet"), CTX)

"""MuSc math on tensors: LNAMD, MSM (fast vs literal reference), chunking, RsCIN, subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ad_pipeline.methods.musc.lnamd import aggregate, lnamd_features, tokens_to_normed_map
from ad_pipeline.methods.musc.msm import mutual_scores, neighbour_count, patch_scores, plan_chunks
from ad_pipeline.methods.musc.rscin import default_k_list, rescore
from ad_pipeline.methods.musc.subsets import stratified_subsets
from musc_reference import lnamd_reference, msm_reference, musc_reference, rscin_reference


def _tokens(n: int, side: int, c: int, seed: int) -> torch.Tensor:
    """Random tokens [N, 1+L, C] with a dummy class token at 0 (as the reference expects)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1 + side * side, c, generator=g) * 3 + 0.5


def _fast_z(tokens: torch.Tensor, r: int) -> torch.Tensor:
    side = int((tokens.shape[1] - 1) ** 0.5)
    return lnamd_features(tokens_to_normed_map(tokens[:, 1:], (side, side)), r)


@pytest.mark.parametrize("r", [1, 3, 5])
def test_lnamd_avg_pool_equals_unfold_formulation(r):
    tokens = _tokens(3, 6, 16, seed=r)
    torch.testing.assert_close(_fast_z(tokens, r), lnamd_reference(tokens, r), rtol=0, atol=1e-6)


def test_layer_norm_is_joint_over_channels_and_grid():
    fmap = tokens_to_normed_map(_tokens(2, 4, 8, seed=0)[:, 1:], (4, 4))
    per_image = fmap.flatten(1)
    torch.testing.assert_close(per_image.mean(dim=1), torch.zeros(2), rtol=0, atol=1e-6)
    torch.testing.assert_close(per_image.var(dim=1, unbiased=False), torch.ones(2), rtol=0, atol=1e-4)


def test_aggregate_hand_computed_corner_uses_divisor_r_squared():
    fmap = torch.arange(9.0).view(1, 1, 3, 3)
    # top-left 3x3 neighbourhood with zero padding holds 0, 1, 3, 4 -> sum 8, divided by 9
    assert aggregate(fmap, 3)[0, 0, 0, 0].item() == pytest.approx(8 / 9)
    assert aggregate(fmap, 3)[0, 0, 1, 1].item() == pytest.approx(4.0)
    with pytest.raises(ValueError, match="odd"):
        aggregate(fmap, 2)


def test_constant_feature_map_gives_zero_tokens_not_nan():
    z = lnamd_features(tokens_to_normed_map(torch.ones(2, 9, 4), (3, 3)), 3)
    assert torch.isfinite(z).all() and (z == 0).all()


@pytest.mark.parametrize(("n", "r"), [(5, 1), (8, 3), (13, 5)])
def test_mutual_scores_match_literal_reference(n, r):
    z = _fast_z(_tokens(n, 5, 12, seed=n), r)
    k = neighbour_count(n, 0.3)
    torch.testing.assert_close(mutual_scores(z, k), msm_reference(z, 0.3), rtol=0, atol=1e-5)


def test_mutual_scores_hand_computed():
    # three one-patch images on the unit circle at 0, 90 and 180 degrees; k = 1
    z = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[-1.0, 0.0]]])
    expected = torch.tensor([[2**0.5], [2**0.5], [2**0.5]], dtype=torch.float64)
    torch.testing.assert_close(mutual_scores(z, 1), expected)
    # k = 2: image 0 has distances sqrt(2) and 2 -> mean (sqrt(2) + 2) / 2
    assert mutual_scores(z, 2)[0, 0].item() == pytest.approx((2**0.5 + 2) / 2, abs=1e-7)


@pytest.mark.parametrize(("n", "n_layers", "r_list"), [(6, 1, [1]), (9, 2, [1, 3]), (11, 3, [1, 3, 5])])
def test_patch_scores_match_literal_reference(n, n_layers, r_list):
    layers = [_tokens(n, 5, 10, seed=100 * n + i) for i in range(n_layers)]
    maps = [tokens_to_normed_map(t[:, 1:], (5, 5)) for t in layers]
    fast = patch_scores(maps, r_list, neighbour_count(n, 0.3))
    torch.testing.assert_close(fast, musc_reference(layers, r_list, 0.3), rtol=0, atol=1e-5)


def test_small_budget_means_more_blocks_and_identical_scores():
    n, side = 12, 4
    z = _fast_z(_tokens(n, side, 8, seed=7), 3)
    n_patches = side * side
    roomy, tiny = plan_chunks(n, n_patches, 2**30), plan_chunks(n, n_patches, 6_000)
    assert (roomy.block, roomy.band) == (n, n)
    assert tiny.band < n and tiny.block < tiny.band
    assert tiny.n_blocks(n) > roomy.n_blocks(n) == 1
    assert tiny.peak_bytes(n, n_patches) <= 6_000
    k = neighbour_count(n, 0.3)
    torch.testing.assert_close(mutual_scores(z, k, max_memory_bytes=6_000), mutual_scores(z, k), rtol=0, atol=1e-6)


def test_plan_uses_small_blocks_for_symmetry_when_memory_allows():
    plan = plan_chunks(64, 196, 2**31)  # ViT-B-16 at 224: 8 images (1568 rows) per block
    assert (plan.block, plan.band) == (8, 64)
    assert plan.n_blocks(64) == 8 * 9 // 2


def test_plan_never_goes_below_one_image_pair():
    plan = plan_chunks(5, 100, 1)
    assert (plan.block, plan.band) == (1, 1)


def test_mutual_scores_rejects_k_out_of_range():
    z = _fast_z(_tokens(4, 3, 4, seed=0), 1)
    with pytest.raises(ValueError, match="k must be"):
        mutual_scores(z, 0)
    with pytest.raises(ValueError, match="k must be"):
        mutual_scores(z, 4)


def test_neighbour_count_truncates():
    assert [neighbour_count(n, 0.3) for n in (2, 4, 5, 42, 83)] == [0, 0, 1, 12, 24]


def test_reduced_precision_close_to_fp32():
    z = _fast_z(_tokens(6, 4, 16, seed=3), 1)
    fp32 = mutual_scores(z, 1)
    torch.testing.assert_close(mutual_scores(z, 1, precision="bf16"), fp32, rtol=0, atol=5e-2)


def test_rscin_worked_example_from_spec():
    w = np.array([[1, 0.9, 0.1], [0.9, 1, 0.2], [0.1, 0.2, 1]])
    feats = np.linalg.cholesky(w)  # rows whose Gram matrix is exactly W
    out, warnings = rescore(np.array([0.0, 1.0, 2.0]), feats, [1, 2])
    np.testing.assert_allclose(out, [0.118421, 0.381579, 0.958333], atol=1e-6)
    assert warnings == []


def test_rscin_matches_reference_and_zero_disables():
    g = np.random.default_rng(0)
    scores, feats = g.random(9), g.normal(size=(9, 5))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    out, _ = rescore(scores, feats, [1, 2, 3])
    np.testing.assert_allclose(out, rscin_reference(scores, torch.from_numpy(feats), [1, 2, 3]).numpy(), atol=1e-12)
    unchanged, _ = rescore(scores, feats, [0])
    np.testing.assert_array_equal(unchanged, scores)


def test_rscin_guards_degenerate_inputs():
    feats = np.eye(3)
    flat, warnings = rescore(np.ones(3), feats, [1, 2])
    np.testing.assert_array_equal(flat, np.zeros(3))
    assert any("equal" in w for w in warnings)
    clamped, warnings = rescore(np.array([0.0, 1.0, 2.0]), feats, [9])
    assert np.isfinite(clamped).all() and any("clamped" in w for w in warnings)
    negative = np.array([[1.0, 0.0], [-3.0, 0.0], [0.0, 1.0]])
    guarded, warnings = rescore(np.array([0.0, 1.0, 2.0]), negative, [3])
    assert np.isfinite(guarded).all() and any("non-positive" in w for w in warnings)
    with pytest.raises(ValueError, match="non-finite"):
        rescore(np.array([0.0, np.nan]), np.eye(2), [1])


def test_default_k_list_per_format():
    assert default_k_list("mvtec_ad") == [1, 2, 3]
    assert default_k_list("visa") == [1, 8, 9]
    assert default_k_list("btad") == [1, 2, 3]


def test_stratified_subsets_hand_made():
    types = ["good"] * 5 + ["crack"] * 3 + ["hole"]
    subsets = stratified_subsets(types, 2, seed=42)
    # python's random with seed 42 shuffles [0..4] to [3, 1, 2, 4, 0], then [5, 6, 7] to [6, 7, 5]
    assert subsets == [[3, 2, 0, 6, 5, 8], [1, 4, 7]]
    assert sorted(i for s in subsets for i in s) == list(range(9))
    assert stratified_subsets(types, 1, seed=0) == [list(range(9))]
    with pytest.raises(ValueError):
        stratified_subsets(types, 0, seed=0)

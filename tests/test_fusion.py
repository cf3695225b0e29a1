"""Score fusion: normalisation formulas on hand-computable values."""

from __future__ import annotations

import numpy as np
import pytest

from ad_pipeline.fusion import fit_normalizer, fuse, resize_maps, trimmed_zscore


def test_trimmed_zscore_uses_values_strictly_inside_q20_q80():
    val = np.arange(11, dtype=float)  # q20 = 2, q80 = 8 → kept 3..7: mean 5, pop. std sqrt(2)
    z = trimmed_zscore(np.array([5.0, 5.0 + np.sqrt(2)]), val)
    np.testing.assert_allclose(z, [0.0, 1.0])


def test_zscore_and_constant_validation():
    n = fit_normalizer(np.array([1.0, 3.0]), "z")
    assert (n.mean, n.std) == (2.0, 1.0)
    flat = fit_normalizer(np.full(5, 4.0), "trimmed_z")  # all tied: std 0 → 1, mean kept
    np.testing.assert_allclose(flat(np.array([6.0])), [2.0])


def test_rank_is_the_validation_ecdf():
    n = fit_normalizer(np.array([3.0, 1.0, 2.0, 2.0]), "rank")
    np.testing.assert_allclose(n(np.array([0.0, 1.0, 2.0, 2.5, 9.0])), [0, 0.25, 0.75, 0.75, 1.0])


def test_fuse_sums_weighted_normalised_scores():
    a_val, b_val = np.array([0.0, 2.0]), np.array([10.0, 30.0])   # z: mean 1 std 1 / mean 20 std 10
    fused = fuse([np.array([1.0, 3.0]), np.array([20.0, 40.0])], [a_val, b_val], kind="z", weights=[1.0, 0.5])
    np.testing.assert_allclose(fused, [0.0, 2.0 + 0.5 * 2.0])


def test_fuse_is_invariant_to_affine_rescaling_of_one_method():
    rng = np.random.default_rng(0)
    t, v = rng.random(20), rng.random(30)
    u, w = rng.random(20), rng.random(30)
    base = fuse([t, u], [v, w], "trimmed_z")
    np.testing.assert_allclose(fuse([7 * t + 3, u], [7 * v + 3, w], "trimmed_z"), base, rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="no validation values"):
        fit_normalizer(np.array([]), "z")
    with pytest.raises(ValueError, match="2 weights for 1 methods"):
        fuse([np.ones(2)], [np.ones(2)], weights=[1, 2])


def test_resize_maps_to_common_size():
    maps = np.ones((2, 4, 4), dtype=np.float16)
    out = resize_maps(maps, (8, 6))
    assert out.shape == (2, 8, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0)

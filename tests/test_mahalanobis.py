"""components.mahalanobis: both estimators, hand-computed distances, the Euclidean fallbacks,
and the torch module against the numpy distance."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from ad_pipeline.components.mahalanobis import Mahalanobis


def test_sample_covariance_hand_computation_and_pinv():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])  # cov = diag(4/3, 4/3)
    m = Mahalanobis.fit(x)
    np.testing.assert_allclose(m(np.array([[1.0 + 2.0, 1.0]])), [2.0 / np.sqrt(4 / 3)])
    assert m.shrinkage == 0.0
    # rank-deficient (rows sum to 1): pinv gives a finite distance, never NaN
    h = np.array([[0.2, 0.8], [0.3, 0.7], [0.25, 0.75]])
    d = Mahalanobis.fit(h)(np.array([[0.5, 0.5], [0.25, 0.75]]))
    assert np.isfinite(d).all() and d[0] > d[1]


def test_fewer_than_two_vectors_is_euclidean_for_both_estimators():
    for estimator in ("sample", "ledoit_wolf"):
        single = Mahalanobis.fit(np.array([[1.0, 1.0]]), estimator)
        np.testing.assert_allclose(single(np.array([[4.0, 5.0]])), [5.0])


def test_ledoit_wolf_matches_sklearn_and_direct_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)) @ rng.normal(size=(5, 5))  # correlated: 0 < shrinkage < 1
    g = Mahalanobis.fit(x, "ledoit_wolf")
    lw = LedoitWolf().fit(x)
    assert np.allclose(g.mean, x.mean(0)) and g.shrinkage == lw.shrinkage_ and 0 < g.shrinkage < 1
    assert np.allclose(g.precision, np.linalg.pinv(lw.covariance_))
    queries = rng.normal(size=(7, 5))
    direct = [np.sqrt((q - g.mean) @ g.precision @ (q - g.mean)) for q in queries]
    assert np.allclose(g(queries), direct)


def test_hand_computed_clipped_and_overflow_falls_back_to_euclidean():
    assert Mahalanobis(np.zeros(2), np.eye(2))(np.array([[3.0, 4.0]])).tolist() == [5.0]
    assert Mahalanobis(np.zeros(2), -np.eye(2))(np.array([[1.0, 0.0]])).tolist() == [0.0]  # round-off clip
    huge = Mahalanobis(np.zeros(2), np.full((2, 2), 1e308))  # quadratic form overflows to inf
    assert huge(np.array([[1.0, 1.0], [0.0, 0.0]])).tolist() == [np.sqrt(2.0), 0.0]


def test_torch_module_matches_numpy():
    rng = np.random.default_rng(1)
    g = Mahalanobis.fit(rng.normal(size=(30, 6)), "ledoit_wolf")
    queries = rng.normal(size=(5, 6))
    module = g.module()
    assert module.mean.dtype == torch.float32 and module.precision.shape == (6, 6)
    got = module(torch.as_tensor(queries, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, g(queries), rtol=1e-5)
    assert Mahalanobis(np.zeros(2), -np.eye(2)).module()(torch.tensor([[1.0, 0.0]])).tolist() == [0.0]

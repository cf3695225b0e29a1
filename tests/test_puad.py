"""PUAD: its Gaussian fit, z-normalised score sum on a tiny EfficientAD, save/load checks."""

from __future__ import annotations

import numpy as np
import pytest
from efficientad_tiny import fit_tiny, tiny_dataset
from sklearn.covariance import LedoitWolf

from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.puad import PUAD, PUADConfig, fit_gaussian, mean_std



def test_gaussian_is_ledoit_wolf():
    x = np.random.default_rng(0).normal(size=(40, 5))
    g = fit_gaussian(x)
    assert g.shrinkage == LedoitWolf().fit(x).shrinkage_
    assert np.allclose(g.precision, np.linalg.pinv(LedoitWolf().fit(x).covariance_))


def test_mean_std_is_population_std_with_guard():
    assert mean_std(np.array([1.0, 3.0]), "x") == (2.0, 1.0)
    assert mean_std(np.array([4.0, 4.0, 4.0]), "x") == (4.0, 1.0)
    with pytest.raises(UserError, match="at least 2"):
        fit_gaussian(np.zeros((1, 3)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("puad")
    data = tiny_dataset(root)
    eff = fit_tiny(root, data, steps=2)
    eff.save(root / "effad")
    return data, RunContext(progress=False, upstream_dirs={"efficientad": root / "effad"}), root


@pytest.mark.parametrize("extractor", ["student", "teacher"])
def test_puad_score_is_weighted_sum_of_z_scores(setup, extractor):
    data, ctx, _ = setup
    puad = PUAD(PUADConfig(feature_extractor=extractor, w_unpicturable=0.5), ctx)
    puad.fit(data["train"], data["validation"])
    out = puad.score(data["good"] + data["bad"])
    c, e, m = puad.calib, out.extras["efficientad_score"], out.extras["mahalanobis"]
    assert out.scores.shape == (4,) and out.maps is None
    want = (e - c["mu_E"]) / c["sd_E"] + 0.5 * (m - c["mu_M"]) / c["sd_M"]
    assert np.allclose(out.scores, want, atol=1e-5)
    val = puad.score(data["validation"])  # validation z-scores of each term have mean 0
    assert abs(np.mean(val.extras["mahalanobis"]) - c["mu_M"]) < 1e-4 * max(1.0, c["mu_M"])
    assert puad.gaussian.precision.shape == (16, 16)


def test_puad_save_load_round_trip_and_stale_checks(setup, tmp_path):
    data, ctx, root = setup
    cfg = PUADConfig()
    puad = PUAD(cfg, ctx)
    puad.fit(data["train"], data["validation"])
    puad.save(tmp_path)
    again = PUAD.load(tmp_path, cfg, ctx)
    assert np.array_equal(puad.score(data["bad"]).scores, again.score(data["bad"]).scores)
    with pytest.raises(ArtifactError, match="feature_extractor"):
        PUAD.load(tmp_path, PUADConfig(feature_extractor="teacher"), ctx)
    other = fit_tiny(root / "other", data, steps=1)
    other.save(tmp_path / "other_effad")
    with pytest.raises(ArtifactError, match="another EfficientAD"):
        PUAD.load(tmp_path, cfg, RunContext(upstream_dirs={"efficientad": tmp_path / "other_effad"}))


def test_puad_without_efficientad_is_a_user_error():
    with pytest.raises(UserError, match="trained EfficientAD"):
        PUAD(PUADConfig(), RunContext())

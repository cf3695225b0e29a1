"""EfficientAD-S and PUAD inference against the official LeapMind/PUAD outputs
(fixtures: tests/fixtures/parity/efficientad/, written by make_fixtures.py there; docs/parity.md).

Same seeded networks (64-channel teacher, 256² input) and PNGs: raw maps, teacher statistics,
validation quantiles and scores under ``map_rule="puad"``, PUAD's Mahalanobis distances,
calibration and final scores; and the size of the switch (our default ``map_rule="nelson"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ad_pipeline.components.student_teacher.data import load_uint8, load_unit, normalize
from ad_pipeline.components.student_teacher.maps import MAP_BORDERS, to_working_resolution
from ad_pipeline.components.student_teacher.train import teacher_statistics
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.efficientad.method import EfficientAD, EfficientADConfig
from ad_pipeline.methods.puad import PUAD, PUADConfig
from tests.parity_efficientad_common import CHANNELS, IMAGE_SIZE, SEED, model, write_dataset

FIXTURES = Path(__file__).parent / "fixtures" / "parity" / "efficientad"


def rel(ours, theirs) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def official():
    return dict(np.load(FIXTURES / "official.npz"))


@pytest.fixture(scope="module")
def run(official, tmp_path_factory):
    """Our EfficientAD (official teacher statistics, our quantiles) per map rule, saved for PUAD."""
    tmp = tmp_path_factory.mktemp("parity_efficientad")
    paths = write_dataset(tmp / "data")
    test = paths["test/good"] + paths["test/bad"]
    ctx = RunContext(seed=SEED, progress=False)
    out = {"paths": paths, "test": test, "x": normalize(load_unit(test, IMAGE_SIZE))}
    for rule in ("puad", "nelson"):
        cfg = EfficientADConfig(channels=CHANNELS, image_size=IMAGE_SIZE, map_rule=rule)
        method = EfficientAD(cfg, ctx)
        net = model(MAP_BORDERS[rule])
        net.teacher_mean.copy_(torch.from_numpy(official["mu"]).view(1, -1, 1, 1))
        net.teacher_std.copy_(torch.from_numpy(official["sigma"]).view(1, -1, 1, 1))
        quantiles, _ = method._validation_quantiles(net, paths["validation/good"])
        net.quantiles.copy_(quantiles.as_tensor())
        method.model, method.info = net, {"model_size": "small", "image_size": IMAGE_SIZE, "channels": CHANNELS,
                                          "width_divisor": 1, "map_rule": rule}
        method.save(tmp / rule)
        out[rule] = method
        out.setdefault("dirs", {})[rule] = tmp / rule
    return out


def test_raw_maps_and_teacher_statistics_match_official(official, run):
    net = run["puad"].model
    with torch.no_grad():
        m_st, m_ae = net.raw_maps(run["x"])
        assert rel(m_st[:, 0], official["raw_st"]) < 1e-4 and rel(m_ae[:, 0], official["raw_ae"]) < 1e-4
        assert rel(to_working_resolution(m_st, IMAGE_SIZE, 0)[:, 0, ::8, ::8], official["resized_st"]) < 1e-4
        assert rel(to_working_resolution(m_ae, IMAGE_SIZE, 0)[:, 0, ::8, ::8], official["resized_ae"]) < 1e-4
        mean, std = teacher_statistics(net, load_uint8(run["paths"]["train/good"], IMAGE_SIZE))
    assert rel(mean.flatten(), official["mu"]) < 1e-4
    n = 3 * 56 * 56  # the official std is unbiased over (N, H, W): ours is the population std
    assert rel(std.flatten() * (n / (n - 1)) ** 0.5, official["sigma"]) < 1e-4


def test_puad_rule_quantiles_and_scores_match_official(official, run):
    method = run["puad"]
    assert rel(method.model.quantiles, official["quantiles"]) < 1e-4
    scores = method.score(run["test"]).scores
    assert rel(scores, official["efficientad_scores"]) < 1e-4


def test_nelson_rule_is_the_documented_deviation(official, run):
    nelson = run["nelson"].score(run["test"]).scores
    assert rel(nelson, official["efficientad_scores"]) > 1e-3  # the 4-px border and raw-map quantiles


def test_puad_matches_official(official, run):
    ctx = RunContext(seed=SEED, progress=False, upstream_dirs={"efficientad": run["dirs"]["puad"]})
    puad = PUAD(PUADConfig(), ctx)
    puad.fit(run["paths"]["train/good"], run["paths"]["validation/good"])
    c = puad.calib
    assert rel([c["mu_E"], c["sd_E"], c["mu_M"], c["sd_M"]], official["puad_calibration"]) < 1e-4
    scores = puad.score(run["test"])
    assert rel(scores.extras["efficientad_score"], official["efficientad_scores"]) < 1e-4
    assert rel(scores.extras["mahalanobis"], official["mahalanobis"]) < 1e-4
    assert rel(scores.scores, official["puad_scores"]) < 1e-4

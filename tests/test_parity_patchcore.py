"""PatchCore against the official amazon-science/patchcore-inspection outputs
(fixtures: tests/fixtures/parity/patchcore/, written by make_fixtures.py there; docs/parity.md).

Same seeded random-init WRN50-2, same PNGs, 64² crops: test features, coreset selection, patch
scores, maps and image scores, with the official switches ``coreset_rng="global"`` and
``bn_warmup`` on ("warm": the official loader as is) and off ("eval": an official run whose backbone
was put in eval mode first).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from ad_pipeline.backbones import build_backbone
from ad_pipeline.components.coreset import greedy_coreset
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore import method as patchcore_method
from ad_pipeline.methods.patchcore.method import PatchCore, PatchCoreConfig
from tests.parity_patchcore_common import BACKBONE, CORESET_RATIO, SEED, config, write_dataset

FIXTURES = Path(__file__).parent / "fixtures" / "parity" / "patchcore"


@pytest.fixture(scope="module")
def official():
    return dict(np.load(FIXTURES / "official.npz"))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("parity_patchcore"))


@pytest.fixture(scope="module")
def wrn50():
    """One seeded random-init WRN50-2 (its init takes seconds); each PatchCore gets a copy."""
    return build_backbone(BACKBONE, pretrained="false", seed=SEED)


@pytest.fixture(autouse=True)
def reuse_backbone(wrn50, monkeypatch):
    monkeypatch.setattr(patchcore_method, "build_backbone", lambda *a, **k: copy.deepcopy(wrn50))


def fitted(train, cache, **switches) -> PatchCore:
    ctx = RunContext(seed=SEED, backbone=BACKBONE, pretrained="false", progress=False, cache_dir=cache)
    method = PatchCore(PatchCoreConfig(**config(**switches)), ctx)
    torch.manual_seed(SEED)  # the official fix_seeds(0) before fit ...
    np.random.seed(SEED)
    torch.empty((), dtype=torch.int64).random_()  # ... whose DataLoader then draws its base seed
    method.fit(train, [])
    return method


def rel(ours, theirs) -> float:
    return float(np.abs(np.asarray(ours, dtype=np.float64) - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("tag, switches", [("warm", dict(bn_warmup=True, coreset_rng="global")),
                                           ("eval", dict(coreset_rng="global"))])
def test_patchcore_matches_official(official, dataset, tag, switches, tmp_path):
    train, test = dataset
    method = fitted(train, tmp_path, **switches)  # the feature cache spares the repeated backbone passes
    feats = method.embed(test)
    assert rel(feats[..., ::16], official[f"test_features_{tag}"]) < 1e-5
    other = "eval" if tag == "warm" else "warm"
    assert rel(feats[..., ::16], official[f"test_features_{other}"]) > 1e-2  # bn_warmup matters
    train_feats = method.embed(train).flatten(0, 2)
    picks = torch.from_numpy(official[f"coreset_{tag}"])
    assert torch.equal(method.memory.bank, train_feats[picks])  # the same rows, in the same order
    seeded = greedy_coreset(train_feats, CORESET_RATIO, seed=SEED)  # our default draws: other rows
    assert len(np.intersect1d(seeded, picks)) < len(picks)
    patch, _ = method.memory.scores(feats)
    assert rel(patch, official[f"patch_scores_{tag}"]) < 1e-4
    scores = method.score(test)
    assert rel(scores.maps, official[f"maps_{tag}"]) < 1e-4
    assert rel(scores.scores, official[f"image_scores_{tag}"]) < 1e-4

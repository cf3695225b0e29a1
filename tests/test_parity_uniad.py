"""UniAD against the official zhiyuanyou/UniAD outputs (fixtures: tests/fixtures/parity/uniad/).

Same seeded weights and inputs on both sides (``parity_uniad_common``): reconstruction transformer
(encoder, decoder, reconstruction, map, image score), lukemelas EfficientNet-B4 + neck, and three
AdamW training steps with the same jitter noise. See docs/parity.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from parity_uniad_common import (
    CFG, SEED, backbone, images, recon_features, reconstructor, subsample, train_features, weights_checksum,
)

from ad_pipeline.methods.uniad.model import anomaly_map, image_scores
from ad_pipeline.methods.uniad.features import AlignedFeatures
from ad_pipeline.methods.uniad.distributed import DistInfo
from ad_pipeline.methods.uniad.train import train_epoch

FIXTURES = Path(__file__).parent / "fixtures" / "parity" / "uniad"
TOL = 1e-4


@pytest.fixture(scope="module")
def official():
    meta = json.loads((FIXTURES / "meta.json").read_text())
    return meta, dict(np.load(FIXTURES / "official.npz"))


def close(ours, theirs, tol=TOL):
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape
    assert float(np.abs(ours - theirs).max()) <= tol * max(1.0, float(np.abs(theirs).max()))


def test_same_seeded_weights_as_the_fixtures(official):
    meta, _ = official
    assert weights_checksum(reconstructor().state_dict()) == meta["weights_checksum"]["reconstructor"]


def test_reconstruction_map_and_score_match_official(official):
    _, ref = official
    model = reconstructor().eval()
    seen = {}
    model.encoder[-1].register_forward_hook(lambda _m, _i, o: seen.__setitem__("encoder", o))
    model.decoder_norm.register_forward_hook(lambda _m, _i, o: seen.__setitem__("decoder", o))
    feats = recon_features()
    with torch.no_grad():
        rec = model(feats)
        maps = anomaly_map(feats, rec, (224, 224))
    close(subsample(seen["encoder"]), ref["encoder"])
    close(subsample(seen["decoder"]), ref["decoder"])
    close(subsample(rec.flatten(2).transpose(1, 2)), ref["reconstruction"])
    close(maps[:, ::7, ::7], ref["map"])
    close(maps.flatten(1).amax(1), ref["map_max"])
    close(image_scores(maps, 16), ref["image_score"])


def test_lukemelas_backbone_and_neck_match_official(official):
    meta, ref = official
    bb = backbone()
    assert weights_checksum(bb.model.state_dict()) == meta["weights_checksum"]["backbone"]
    extractor = AlignedFeatures(bb, CFG.blocks)
    x = images()
    with torch.no_grad():
        maps = bb(x, CFG.blocks)
        align = extractor(x)
    for name in CFG.blocks:
        close(maps[name][:, ::4, ::4, ::4], ref[f"block{name.split('.')[-1]}"])
    close(align[:, ::8], ref["feature_align"])


def test_training_steps_match_official(official):
    _, ref = official
    model = reconstructor(dropout=0.0)
    cfg = CFG.model_copy(update={"dropout": 0.0, "batch_size": 2})
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    info = DistInfo(rank=0, world_size=1, device=torch.device("cpu"), owns_group=False)
    mean_loss = train_epoch(model, train_features(), list(range(6)), 0, cfg, SEED, optimizer, info)
    assert abs(mean_loss - float(ref["train_loss"].mean())) <= TOL * float(ref["train_loss"].mean())
    # 3 steps move weights by ~3e-4: compare the updates themselves (Adam amplifies float noise)
    state, init = model.state_dict(), reconstructor(dropout=0.0).state_dict()
    for key, sub, fixture in (("input_proj.weight", (slice(None, None, 8), slice(None, None, 8)), "trained_input_proj"),
                              ("decoder.0.queries", (slice(None, None, 7), slice(None, None, 8)), "trained_queries0"),
                              ("encoder.0.attn.in_proj_weight", (slice(None, None, 8), slice(None, None, 8)),
                               "trained_enc0_in_proj")):
        ours, theirs = (state[key] - init[key])[sub].numpy(), ref[fixture] - init[key][sub].numpy()
        assert np.abs(theirs).max() > 1e-5  # the steps did move these weights
        assert np.abs(ours - theirs).max() <= 2e-2 * np.abs(theirs).max()

"""UniAD's visualisation decoder: shapes, training lowers the reconstruction loss, query inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ad_pipeline.methods.uniad.config import VisConfig
from ad_pipeline.methods.uniad.model import UniADReconstructor
from ad_pipeline.methods.uniad.vis import (
    VisDecoder, build_decoder, decode, query_features, reconstruction_loss, to_uint8, train_decoder,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_decoder_upsamples_the_feature_grid_16x():
    decoder = VisDecoder(272, planes=(16, 8, 8, 8), blocks=(2, 1, 1, 1))
    assert decoder(torch.randn(2, 272, 3, 5)).shape == (2, 3, 48, 80)
    # the paper-size decoder has the reference's 16 residual blocks, 4 of which change shape
    paper = build_decoder(VisConfig(), 272)
    assert len(paper.stages) == 16 and paper(torch.randn(1, 272, 2, 2)).shape == (1, 3, 32, 32)


def test_training_lowers_the_reconstruction_loss():
    torch.manual_seed(0)
    features = torch.randn(8, 12, 2, 2)
    # images that are a fixed function of the features: upsampled colour projections
    images = torch.nn.functional.interpolate(features[:, :3], scale_factor=16, mode="nearest")
    decoder = build_decoder(VisConfig(planes=[16, 8, 8, 8], blocks=[1, 1, 1, 1]), 12)
    before = reconstruction_loss(decoder, features, images)
    cfg = VisConfig(planes=[16, 8, 8, 8], blocks=[1, 1, 1, 1], epochs=40, lr=5e-3, batch_size=4, grad_clip=1.0)
    history = train_decoder(decoder, features, images, cfg, seed=0)
    after = reconstruction_loss(decoder, features, images)
    assert len(history) == 40 and after < 0.5 * before and history[-1] < history[0]
    out = decode(decoder, features, MEAN, STD)
    assert out.shape == (8, 32, 32, 3) and out.dtype == np.uint8


def test_training_refuses_images_of_the_wrong_size():
    decoder = build_decoder(VisConfig(planes=[4, 4, 4, 4], blocks=[1, 1, 1, 1]), 3)
    with pytest.raises(ValueError, match="must be 16× the feature grid"):
        train_decoder(decoder, torch.zeros(2, 3, 2, 2), torch.zeros(2, 3, 30, 32), VisConfig(epochs=1), seed=0)


def test_to_uint8_inverts_the_normalisation():
    rgb = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    normalised = (rgb - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert to_uint8(normalised, MEAN, STD).tolist() == [[[[0, 128, 255]]]]


def test_query_inputs_are_output_proj_of_baselines_and_learned_queries():
    model = UniADReconstructor(10, (3, 4), hidden=8, heads=2, ffn=16, enc_layers=1, dec_layers=2, neighbor_size=3)
    inputs = query_features(model)
    assert list(inputs) == ["baseline rand", "baseline ones", "baseline zeros", "query layer 0", "query layer 1"]
    assert all(v.shape == (1, 10, 3, 4) for v in inputs.values())
    bias = model.output_proj.bias.detach()
    assert torch.allclose(inputs["baseline zeros"][0, :, 1, 2], bias)
    q = model.decoder[1].queries.detach()[2 * 4 + 1]  # token (row 2, column 1)
    assert torch.allclose(inputs["query layer 1"][0, :, 2, 1], model.output_proj(q).detach(), atol=1e-6)

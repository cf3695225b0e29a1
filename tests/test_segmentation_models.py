"""Segmentor networks and the shared training loop (tiny random-init ResNet-18, 32×32 inputs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ad_pipeline.backbones import build_backbone
from ad_pipeline.segmentation.models import CoordSegmenter, FrozenEncoderSegmentor, coordinate_maps
from ad_pipeline.segmentation.train import PSAD_FEWSHOT, SegTrainConfig, predict_labels, train_segmentation
from test_segmentation_fakes import TinyEncoder


@pytest.fixture(scope="module")
def encoder():
    return build_backbone("resnet18", pretrained="false", seed=0)


def toy_set(n=6, size=32):
    """Left half red = class 1, right half blue = class 2, a black top band = background."""
    x = torch.zeros(n, 3, size, size)
    y = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        top = 4 + i % 3
        x[i, 0, top:, : size // 2] = 2.0
        x[i, 2, top:, size // 2:] = 2.0
        y[i, top:, : size // 2] = 1
        y[i, top:, size // 2:] = 2
    return x, y


def test_coordinate_maps():
    c = coordinate_maps(2, 3, 5, scale=30.0)
    assert c.shape == (2, 2, 3, 5)
    assert c[0, 0, 0].tolist() == pytest.approx([0, 7.5, 15, 22.5, 30])
    assert c[1, 1, :, 4].tolist() == pytest.approx([0, 15, 30])


def test_frozen_segmentor_shapes_and_frozen_encoder(encoder):
    model = FrozenEncoderSegmentor(encoder, num_classes=3, channels=16, low_out=8)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert not any(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.encoder.training and model.head.training
    assert model.head.aspp.branches[0][1].momentum == 0.999


def test_coord_segmenter_trains_encoder():
    bb = build_backbone("resnet18", pretrained="false", seed=0, trainable=True)
    model = CoordSegmenter(bb, num_classes=4, coord_scale=30.0)
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 4, 32, 32)
    assert model.head[0].in_channels == 64 + 128 + 256 + 2
    assert all(p.requires_grad for p in model.encoder.parameters())


def test_training_learns_toy_segmentation_and_is_deterministic():
    x, y = toy_set()
    cfg = SegTrainConfig(epochs=30, sup_only_epochs=15, batch_size=2, lr=0.01, ce_on_probs=False)

    def run():
        torch.manual_seed(0)
        model = FrozenEncoderSegmentor(TinyEncoder(), num_classes=3, channels=16, low_out=8, bn_momentum=0.1)
        hist = train_segmentation(model, x, y, np.array([0, 1, 2, 3]), cfg, num_classes=3, seed=1, progress=False)
        return model, hist

    model, hist = run()
    assert set(hist[0]) == {"epoch", "ce", "focal", "dice"}  # supervised-only epochs
    assert {"hist", "entropy_sup", "entropy_unsup"} <= set(hist[-1])
    assert hist[14]["dice"] < hist[0]["dice"]
    pred = predict_labels(model, x)
    assert pred.dtype == torch.uint8 and pred.shape == (6, 32, 32)
    assert (pred.long() == y).float().mean() > 0.8
    model2, hist2 = run()
    assert hist == hist2
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))


def test_psad_recipe_runs_with_few_shots():
    x, y = toy_set(n=5)
    cfg = SegTrainConfig(**(PSAD_FEWSHOT | {"epochs": 2, "sup_only_epochs": 1, "batch_size": 2}))
    model = CoordSegmenter(TinyEncoder(trainable=True), num_classes=3)
    hist = train_segmentation(model, x, y, np.array([0]), cfg, num_classes=3, progress=False)
    assert len(hist) == 2 and "focal" not in hist[0] and "entropy_sup" not in hist[1]
    assert {"hist", "entropy_unsup"} <= set(hist[1])


def test_no_supervised_images_is_an_error():
    x, y = toy_set(n=2)
    with pytest.raises(ValueError, match="no supervised"):
        train_segmentation(FrozenEncoderSegmentor(TinyEncoder(), 3, channels=8, low_out=4), x, y, np.array([], int), SegTrainConfig(epochs=1),
                           num_classes=3, progress=False)

"""Segmentation losses on hand-made probability maps with exact values."""

from __future__ import annotations

import math

import pytest
import torch

from ad_pipeline.segmentation.losses import (
    cross_entropy,
    dice_loss,
    entropy_loss,
    focal_loss,
    histogram_loss,
    one_hot,
)


def probs_2x1x3():
    """One image, 2 classes, 1×3 pixels: labels [0, 0, 1]."""
    p = torch.tensor([[[[0.8, 0.6, 0.3]], [[0.2, 0.4, 0.7]]]])
    y = torch.tensor([[[0, 0, 1]]])
    return p, y


def test_one_hot_layout():
    _, y = probs_2x1x3()
    assert one_hot(y, 2).tolist() == [[[[1.0, 1.0, 0.0]], [[0.0, 0.0, 1.0]]]]


def test_cross_entropy_standard_and_on_probs():
    logits = torch.tensor([[[[math.log(4.0)]], [[0.0]]]])  # softmax → (0.8, 0.2)
    y = torch.tensor([[[0]]])
    assert cross_entropy(logits, y).item() == pytest.approx(-math.log(0.8), rel=1e-6)
    # softmax applied twice: CE of (0.8, 0.2) treated as logits
    assert cross_entropy(logits, y, on_probs=True).item() == pytest.approx(math.log(1 + math.exp(-0.6)), rel=1e-6)


def test_focal_loss_exact():
    p = torch.tensor([[[[0.8]], [[0.2]]]])
    y = one_hot(torch.tensor([[[0]]]), 2)
    p_t = (1 - 1e-5) * 0.8 + 1e-5 * 0.2 + 1e-5
    expected = -((1 - p_t) ** 2) * math.log(p_t)
    assert focal_loss(p, y).item() == pytest.approx(expected, rel=1e-5)


def test_dice_plain_exact():
    p, y = probs_2x1x3()
    d0 = 2 * 1.4 / (1.7 + 2 + 1e-4)
    d1 = 2 * 0.7 / (1.3 + 1 + 1e-4)
    got = dice_loss(p, one_hot(y, 2), class_balanced=False, eps_num=0.0, eps_den=1e-4)
    assert got.item() == pytest.approx(1 - (d0 + d1) / 2, rel=1e-6)


def test_dice_class_balanced_exact():
    p, y = probs_2x1x3()
    d0 = (2 * 1.4 + 1e-5) / (1.7 + 2 + 2e-5)
    d1 = (2 * 0.7 + 1e-5) / (1.3 + 1 + 2e-5)
    w0, w1 = 1 / (2 + 1e-5), 1 / (1 + 1e-5)
    w0, w1 = w0 / (w0 + w1), w1 / (w0 + w1)  # ≈ 1/3, 2/3: the rarer class weighs more
    expected = (w0 * (1 - d0) + w1 * (1 - d1)) / 2
    got = dice_loss(p, one_hot(y, 2), class_balanced=True, eps_num=1e-5, eps_den=2e-5)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_perfect_prediction_has_zero_dice_loss():
    y = torch.tensor([[[0, 1, 2, 2]]])
    oh = one_hot(y, 3)
    assert dice_loss(oh, oh, class_balanced=False, eps_den=0.0).item() == pytest.approx(0.0, abs=1e-7)


def test_histogram_loss_mean_sum_and_class_subset():
    # two unlabelled predictions over 3 classes, 1×2 pixels
    p = torch.tensor([[[[0.5, 0.5]], [[0.5, 0.0]], [[0.0, 0.5]]],
                      [[[0.0, 0.0]], [[1.0, 1.0]], [[0.0, 0.0]]]])
    ref = one_hot(torch.tensor([[[1, 2]], [[1, 2]]]), 3)  # histograms (0, 0.5, 0.5)
    # sample 0: |0.5-0.25| + |0.5-0.25| = 0.5 ; sample 1: |0.5-1| + |0.5-0| = 1.0 ; background ignored
    assert histogram_loss(p, ref).item() == pytest.approx(0.75)
    assert histogram_loss(p, ref, batch_reduction="sum").item() == pytest.approx(1.5)
    assert histogram_loss(p, ref, classes=[2]).item() == pytest.approx((0.25 + 0.5) / 2)


def test_entropy_loss_exact():
    p = torch.full((1, 2, 1, 1), 0.5)
    assert entropy_loss(p).item() == pytest.approx(-0.5 * math.log(0.5 + 1e-5), rel=1e-6)
    assert entropy_loss(one_hot(torch.tensor([[[1]]]), 2)).item() == pytest.approx(-0.5 * math.log(1 + 1e-5), abs=1e-7)  # float32

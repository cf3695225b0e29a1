"""CSAD's segmentor augmentation: LSA copy-paste, ShiftScaleRotate, brightness/contrast, the
training hook, and the proposal images it needs from the pseudo-label directory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ad_pipeline.errors import ArtifactError
from ad_pipeline.segmentation.augment import (
    AugmentConfig,
    SourcePool,
    SupervisedAugment,
    brightness_contrast,
    lsa,
    lsa_candidates,
    move_mask,
    place_copy,
    sample_destination,
    scene_background,
    shift_scale_rotate,
)
from ad_pipeline.segmentation.proposers import overlap_ratio
from ad_pipeline.segmentation.pseudo_labels import PseudoLabels
from test_segmentation_fakes import TinyEncoder

SIZE = 64


def scene():
    """64×64 image whose colour encodes the pixel position (R = x/63, G = y/63), a class-1 square
    (proposal 1) and a class-2 bar (proposal 2)."""
    yy, xx = np.mgrid[:SIZE, :SIZE].astype(np.float32) / (SIZE - 1)
    image = np.stack([xx, yy, np.full_like(xx, 0.5)], -1)
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[10:22, 10:22] = 1
    label[44:50, 30:54] = 2
    proposal = label.copy()
    return image, label, proposal


def source_of(image, y, x):
    """Source pixel (row, col) a pasted pixel came from, decoded from its colour."""
    return int(round(image[y, x, 1] * (SIZE - 1))), int(round(image[y, x, 0] * (SIZE - 1)))


def test_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="min_aug_num"):
        AugmentConfig(min_aug_num=3, max_aug_num=2)
    with pytest.raises(ValueError, match="min_distance"):
        AugmentConfig(min_distance=0.6, boundary=0.1)  # > sqrt(2)·0.4: no reachable destination
    with pytest.raises(ValueError, match="lsa_extra"):
        AugmentConfig(lsa_extra=1)


def test_candidates_need_label_overlap_and_few_background_pixels():
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[0:3, 0:3] = 1  # 9 px
    label[30:40, 30:40] = 2  # 100 px
    proposal = np.zeros_like(label)
    proposal[25:45, 25:45] = 1  # all of class 2: ratio 100 / min(400, 109) > 0.9, but 300 background px
    proposal[0:3, 0:3] = 2  # exact class-1 square
    proposal[50:60, 50:60] = 3  # on background only (ratio 0)
    proposal[0:10, 10:14] = 4  # touches nothing labelled
    values, areas = lsa_candidates(label, proposal, AugmentConfig())
    assert values.tolist() == [2] and areas.tolist() == [9]
    values, _ = lsa_candidates(label, proposal, AugmentConfig(max_background_px=300))
    assert values.tolist() == [1, 2]
    tiny = np.zeros((SIZE, SIZE), np.uint8)
    tiny[20, 20:24] = 1  # 4 px ≤ 0.1 % of the image
    assert lsa_candidates(tiny, tiny, AugmentConfig())[0].tolist() == []
    tiny[21, 20] = 1
    assert lsa_candidates(tiny, tiny, AugmentConfig())[0].tolist() == [1]


def test_scene_background_is_outside_the_foreground_hull():
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[10, 10] = 1
    label[10, 50] = 2
    proposal = np.zeros_like(label)
    proposal[50, 30] = 1
    bg = scene_background(label, proposal)
    assert not bg[20, 30] and not bg[10, 30]  # inside the triangle
    assert bg[0, 0] and bg[60, 10] and bg[10, 55]
    assert scene_background(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.uint8)).all()


def test_pasted_pixels_carry_their_source_label_and_colour():
    image, label, proposal = scene()
    out_img, out_lab, placements = lsa(image, label, proposal, AugmentConfig(), np.random.default_rng(0),
                                       background=np.zeros((SIZE, SIZE), bool))
    assert len(placements) == 2 and {p.source for p in placements} == {1, 2}
    changed = np.argwhere((out_lab != label) | (out_img != image).any(-1))
    assert len(changed) > 50
    for y, x in changed:
        sy, sx = source_of(out_img, y, x)
        assert proposal[sy, sx] in (1, 2)  # came from a component
        assert out_lab[y, x] == label[sy, sx]
        np.testing.assert_array_equal(out_img[y, x], image[sy, sx])
    moved = [move_mask(proposal == p.source, p.matrix) for p in placements]
    assert (out_lab[moved[-1]] == placements[-1].source).all()  # proposal value = class here
    assert (moved[0] | moved[1])[tuple(changed.T)].all()  # nothing changed outside the pasted masks


def test_copies_respect_background_limits_and_min_distance():
    image, label, proposal = scene()
    background = np.zeros((SIZE, SIZE), bool)
    background[:, 40:] = True  # right third: mandatory copies may overlap it < 50 %, extra ones < 90 %
    cfg = AugmentConfig(min_distance=0.35)
    tries = []
    for seed in range(15):
        _, _, placements = lsa(image, label, proposal, cfg, np.random.default_rng(seed), background=background)
        assert placements and placements[0].mandatory
        for p in placements:
            moved = move_mask(proposal == p.source, p.matrix)
            assert overlap_ratio(moved, background) < (0.5 if p.mandatory else 0.9)
            assert np.hypot(*np.subtract(p.destination, p.source_centre)) >= 0.35
            assert 0.1 <= min(p.destination) and max(p.destination) <= 0.9
            tries.append(p.tries)
    assert max(tries) > 1  # the limit did reject placements


def test_destinations_are_far_and_inside_the_boundary():
    rng = np.random.default_rng(0)
    cfg = AugmentConfig(min_distance=0.3, boundary=0.2)
    points = np.array([sample_destination((0.5, 0.5), cfg, rng) for _ in range(100)])
    assert (np.hypot(*(points - 0.5).T) >= 0.3).all()
    assert points.min() >= 0.2 and points.max() <= 0.8


def test_no_candidate_leaves_the_image_unchanged():
    image, label, _ = scene()
    proposal = np.zeros_like(label)
    proposal[30:40, 0:8] = 1  # lies on background only
    out_img, out_lab, placements = lsa(image, label, proposal, AugmentConfig(), np.random.default_rng(0))
    assert placements == []
    np.testing.assert_array_equal(out_img, image)
    np.testing.assert_array_equal(out_lab, label)


def test_failed_copies_are_skipped_after_max_tries_with_resampling():
    image, label, proposal = scene()
    everywhere = np.ones((SIZE, SIZE), bool)  # every placement overlaps the background fully
    out_img, out_lab, placements = lsa(image, label, proposal, AugmentConfig(), np.random.default_rng(0),
                                       background=everywhere)
    assert placements == []
    np.testing.assert_array_equal(out_img, image)
    np.testing.assert_array_equal(out_lab, label)
    pool = SourcePool(np.array([1, 2, 3]), np.array([10, 10, 10]), 0.0)
    cfg = AugmentConfig(max_tries=25, resample_every=10)
    proposal3 = proposal.copy()
    proposal3[30:36, 5:11] = 3
    assert place_copy(proposal3, everywhere, pool, True, cfg, np.random.default_rng(0)) is None
    assert not pool  # re-drawn at tries 10 and 20: all three sources used up


def test_source_pool_draws_without_replacement_and_by_area():
    rng = np.random.default_rng(0)
    pool = SourcePool(np.array([5, 6, 7]), np.array([1, 2, 3]), 0.0)
    assert sorted(pool.draw(rng) for _ in range(3)) == [5, 6, 7] and not pool
    firsts = [SourcePool(np.array([1, 2]), np.array([1, 1_000_000]), 1.0).draw(rng) for _ in range(50)]
    assert firsts.count(2) >= 48  # ∝ area


def test_shift_scale_rotate_keeps_the_label_set():
    image, label, _ = scene()
    label = np.where(label == 2, 7, label * 3).astype(np.uint8)  # classes {0, 3, 7}
    wild = AugmentConfig(shift_limit=0.1, scale_limit=0.3, rotate_limit=30)
    rng = np.random.default_rng(0)
    for _ in range(5):
        out_img, out_lab = shift_scale_rotate(image, label, wild, rng)
        assert set(np.unique(out_lab).tolist()) <= {0, 3, 7} and out_img.dtype == np.float32
        assert not np.array_equal(out_lab, label)
    still = AugmentConfig(shift_limit=0, scale_limit=0, rotate_limit=0)
    out_img, out_lab = shift_scale_rotate(image, label, still, rng)
    np.testing.assert_array_equal(out_lab, label)
    np.testing.assert_allclose(out_img, image, atol=1e-6)


def test_brightness_contrast_is_a_clipped_affine_map():
    image = np.linspace(0, 1, 300, dtype=np.float32).reshape(10, 10, 3)
    out = brightness_contrast(image, AugmentConfig(contrast_limit=0.0), np.random.default_rng(0))
    shift = out - image
    inside = (out > 0) & (out < 1)
    assert np.ptp(shift[inside]) < 1e-6 and 0 < abs(shift[inside][0]) <= 0.05
    assert out.min() >= 0 and out.max() <= 1


def batch():
    image, label, proposal = scene()
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(((image - mean) / std).astype(np.float32)).permute(2, 0, 1)
    flipped = torch.flip(x, dims=(2,))
    return (torch.stack([x, flipped]), torch.from_numpy(np.stack([label, label[:, ::-1]])).long(),
            np.stack([proposal, proposal[:, ::-1]]))


def test_hook_is_deterministic_and_applies_lsa_per_row():
    x, y, proposals = batch()
    aug = SupervisedAugment(AugmentConfig(), proposals)
    rows = torch.tensor([0, 1])
    a = aug(x, y, rows, torch.Generator().manual_seed(3))
    b = aug(x, y, rows, torch.Generator().manual_seed(3))
    c = aug(x, y, rows, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])
    assert a[0].shape == x.shape and a[1].dtype == torch.int64
    # LSA alone: each image gets copies of its own components
    off = SupervisedAugment(AugmentConfig(shift_scale_rotate_p=0, brightness_contrast_p=0), proposals)
    out_x, out_y = off(x, y, rows, torch.Generator().manual_seed(0))
    assert ((out_y != y).sum((1, 2)) > 0).all()
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        aug(x, y + 300, rows, torch.Generator())


def test_hook_without_lsa_keeps_pixels_when_nothing_fires():
    x, y, _ = batch()
    quiet = SupervisedAugment(AugmentConfig(lsa_ratio=0, shift_scale_rotate_p=0, brightness_contrast_p=0), None)
    out_x, out_y = quiet(x, y, torch.tensor([0, 1]), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out_x, x, atol=1e-5, rtol=0)
    assert torch.equal(out_y, y)
    with pytest.raises(ValueError, match="proposal"):
        SupervisedAugment(AugmentConfig(), None)


def test_train_segmentation_passes_supervised_rows_to_the_hook():
    from ad_pipeline.segmentation.models import FrozenEncoderSegmentor
    from ad_pipeline.segmentation.train import SegTrainConfig, train_segmentation

    x, y, _ = batch()
    images, labels = torch.cat([x, x, x]), torch.cat([y, y, y])
    seen = []

    def spy(bx, by, rows, gen):
        seen.append(rows.clone())
        assert torch.equal(bx, images[rows]) and torch.equal(by, labels[rows])
        return bx, by

    model = FrozenEncoderSegmentor(TinyEncoder(), 3, channels=8, low_out=4)
    train_segmentation(model, images, labels, np.array([1, 4]), SegTrainConfig(epochs=2, batch_size=2), num_classes=3,
                       augment=spy, progress=False)
    assert len(seen) == 2 and all(sorted(r.tolist()) == [1, 4] for r in seen)


def pseudo(n=3, with_proposals=True):
    rng = np.random.default_rng(0)
    maps = [rng.integers(0, 3, (8, 10), dtype=np.uint8) for _ in range(n)]
    props = [rng.integers(0, 9, (8, 10), dtype=np.uint8) for _ in range(n)] if with_proposals else None
    return PseudoLabels([f"img{i}.png" for i in range(n)], maps, np.zeros((n, 2), np.float32), np.arange(n),
                        {"n_good": n}, props)


def test_pseudo_labels_round_trip_with_proposals(tmp_path):
    labels = pseudo()
    labels.save(tmp_path / "p")
    assert sorted(f.name for f in (tmp_path / "p" / "proposals").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    back = PseudoLabels.load(tmp_path / "p")
    assert back.info == {"n_good": 3}
    assert all(np.array_equal(a, b) for a, b in zip(back.proposals, labels.proposals))
    assert all(np.array_equal(a, b) for a, b in zip(back.label_maps, labels.label_maps))
    (tmp_path / "p" / "proposals" / "0001.png").unlink()
    with pytest.raises(ArtifactError, match="0001.png is missing") as err:
        PseudoLabels.load(tmp_path / "p")
    assert "re-run the pseudo_labels stage" in str(err.value)


def test_old_pseudo_labels_load_without_proposals_and_lsa_asks_for_a_rerun(tmp_path):
    from ad_pipeline.methods.csad.config import CSADConfig
    from ad_pipeline.methods.csad.segmentor import build_augment

    pseudo(with_proposals=False).save(tmp_path / "old")
    old = PseudoLabels.load(tmp_path / "old")
    assert old.proposals is None
    with pytest.raises(ArtifactError, match="no proposal images") as err:
        build_augment(old, CSADConfig(image_size=16))
    assert "lsa_ratio: 0" in str(err.value)
    assert build_augment(old, CSADConfig(image_size=16, augment=AugmentConfig(enabled=False))) is None
    assert build_augment(old, CSADConfig(image_size=16, augment=AugmentConfig(lsa_ratio=0))).proposals is None
    aug = build_augment(pseudo(), CSADConfig(image_size=16))
    assert aug.proposals.shape == (3, 16, 16) and aug.proposals.dtype == np.uint8

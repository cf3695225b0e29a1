"""Mask proposers, component descriptors, clustering, histogram filtering and pseudo-labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ad_pipeline.errors import LayoutError
from ad_pipeline.segmentation.clustering import (
    ComponentDescriptor,
    area_histograms,
    cluster_components,
    component_crop,
    fill_class_holes,
    filter_histograms,
    matched_miou,
    relabel,
    rotate_batch,
)
from ad_pipeline.segmentation.config import PseudoLabelConfig
from ad_pipeline.segmentation.proposers import (
    ColorComponentsProposer,
    PartLabelProposer,
    filter_by_combine,
    overlap_ratio,
    paint_largest_first,
    split_components,
)
from ad_pipeline.segmentation.pseudo_labels import PseudoLabels, generate_pseudo_labels


def box(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_overlap_ratio_hand_case():
    a, b = box((10, 10), 0, 4, 0, 4), box((10, 10), 2, 4, 0, 10)  # |a|=16, |b|=20, |a∩b|=8
    assert overlap_ratio(a, b) == 0.5
    assert overlap_ratio(a, np.zeros((10, 10), bool)) == 0.0


def test_split_components_filters_small_and_image_sized():
    m = box((40, 40), 0, 8, 0, 8) | box((40, 40), 20, 30, 20, 30) | box((40, 40), 35, 37, 0, 3)
    comps = split_components([m, np.ones((40, 40), bool)], min_area=50)
    assert sorted(int(c.sum()) for c in comps) == [64, 100]  # 6-px blob and the whole image dropped


def test_split_components_is_4_connected():
    m = np.zeros((20, 20), bool)
    m[0:8, 0:8] = True
    m[8:16, 8:16] = True  # touches the first only diagonally
    assert len(split_components([m], min_area=10)) == 2


def test_paint_largest_first_keeps_small_on_top():
    big, small = box((10, 10), 0, 10, 0, 10), box((10, 10), 2, 4, 2, 4)
    out = paint_largest_first([small, big], (10, 10))
    assert out[0, 0] == 1 and out[3, 3] == 2 and out.dtype == np.uint8


def test_filter_by_combine_drops_duplicates():
    a = box((100, 100), 0, 10, 0, 10)
    b = box((100, 100), 50, 60, 50, 60)
    union_ab = a | b  # covered by a ∪ b → deferred and then rejected
    kept = filter_by_combine([a, b, union_ab, a.copy()])
    assert len(kept) == 2


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_category(root, n=6, missing_blue=()):
    """48×48 black images with a red 12×12 square and a blue 8×8 square; part maps 1=red, 2=blue."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = np.zeros((48, 48, 3), np.uint8)
        parts = np.zeros((48, 48), np.uint8)
        y, x = rng.integers(0, 10, 2)
        img[y:y + 12, x:x + 12] = (220, 30, 30)
        parts[y:y + 12, x:x + 12] = 1
        if i not in missing_blue:
            y, x = rng.integers(28, 38, 2)
            img[y:y + 8, x:x + 8] = (30, 30, 220)
            parts[y:y + 8, x:x + 8] = 2
        p = root / "cat" / "train" / "good" / f"{i:03d}.png"
        write_png(p, img)
        write_png(root / "cat" / "aux" / "part_labels" / "train" / "good" / f"{i:03d}.png", parts)
        paths.append(p)
    return paths


def test_part_label_proposer_reads_generator_maps(tmp_path):
    paths = make_category(tmp_path, n=1)
    prop = PartLabelProposer(min_area=20).propose(paths[0])
    assert prop.shape == (48, 48)
    assert sorted(np.bincount(prop.ravel()).tolist()) == sorted([48 * 48 - 144 - 64, 144, 64])
    assert (prop == 1).sum() == 144  # largest first


def test_part_label_proposer_missing_map_is_layout_error(tmp_path):
    p = tmp_path / "cat" / "train" / "good" / "000.png"
    write_png(p, np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(LayoutError, match="part label map not found"):
        PartLabelProposer().propose(p)


def test_color_components_proposer_finds_coloured_parts(tmp_path):
    paths = make_category(tmp_path, n=1)
    prop = ColorComponentsProposer(levels=4, min_area=20).propose(paths[0])
    assert sorted(np.bincount(prop.ravel())[1:].tolist()) == [64, 144]


def test_component_crop_centres_and_scales():
    img = np.full((50, 50, 3), 200, np.uint8)
    crop = component_crop(img, box((50, 50), 10, 20, 10, 40))  # 10×30 rectangle
    assert crop.shape == (65, 65, 3)
    rows = np.flatnonzero(crop[..., 0].any(1))
    cols = np.flatnonzero(crop[..., 0].any(0))
    # diagonal of the min-area rectangle (≈ 9×29 for a 10×30 pixel blob) maps to 65 px
    assert 59 <= cols.size <= 65 and 18 <= rows.size <= 23
    assert abs((rows[0] + rows[-1]) / 2 - 32) <= 1 and abs((cols[0] + cols[-1]) / 2 - 32) <= 1


def test_rotate_batch_identity_and_quarter_turn():
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6)
    out = rotate_batch(x, torch.tensor([0.0, 90.0]))
    assert out.shape == (4, 3, 6, 6)
    torch.testing.assert_close(out[0], x[0])
    torch.testing.assert_close(out[3], torch.rot90(x[1], k=1, dims=(1, 2)), atol=1e-3, rtol=0)


class MeanColour(nn.Module):
    def forward(self, x):
        return x


def test_component_descriptor_seeded_projection_and_shape():
    d1 = ComponentDescriptor(MeanColour(), 3, proj_dim=4, n_rotations=6, seed=1)
    d2 = ComponentDescriptor(MeanColour(), 3, proj_dim=4, n_rotations=6, seed=1)
    assert torch.equal(d1.proj_weight, d2.proj_weight)
    crops = torch.rand(5, 3, 65, 65)
    out = d1(crops)
    assert out.shape == (5, 4)
    assert torch.equal(out, d2(crops))
    big = ComponentDescriptor(MeanColour(), 3, proj_dim=2000, seed=0)
    assert abs(big.proj_weight.std().item() - 0.01) < 0.001


def test_cluster_components_discards_small_clusters():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.01, (10, 2))
    b = rng.normal(5, 0.01, (10, 2))
    c = rng.normal(-5, 0.01, (2, 2))  # 2 members < 0.5 · 10 images
    labels = cluster_components(np.concatenate([a, b, c]), np.zeros(22, int), 10, bandwidth=1.0)
    assert len(set(labels[:10])) == 1 and len(set(labels[10:20])) == 1 and labels[0] != labels[10]
    assert (labels[20:] == -1).all() and (labels[:20] >= 0).all()


def test_area_histograms_exact():
    cmap = np.array([[0, 1], [2, 2]], np.uint8)
    np.testing.assert_allclose(area_histograms([cmap], 3), [[0.25, 0.5, 0.0]])


def test_filter_histograms_drops_rare_classes_and_picks_nearest_half():
    rng = np.random.default_rng(0)
    normal = np.array([0.2, 0.1, 0.0005]) + rng.normal(0, 0.002, (18, 3)) * [1, 1, 0]
    outliers = np.array([[0.6, 0.0, 0.0005], [0.0, 0.5, 0.0005]])
    hists = np.concatenate([normal, outliers])
    res = filter_histograms(hists, min_cluster_frac=0.2)
    assert res.kept_classes.tolist() == [1, 2]
    assert len(res.good_indices) == 10 and (res.good_indices < 18).all()
    mean = hists[res.hist_labels == res.largest][:, :2].mean(0)
    dist = np.abs(hists[:, :2] - mean).max(1)
    assert set(res.good_indices) == set(np.argsort(dist, kind="stable")[:10])


def test_filter_histograms_without_any_cluster_keeps_nothing_and_all_images():
    res = filter_histograms(np.zeros((5, 0)))
    assert res.kept_classes.tolist() == [] and res.good_indices.tolist() == [0, 1, 2, 3, 4]


def test_fill_class_holes_fills_drops_small_classes_and_keeps_inner_parts():
    label = np.zeros((30, 30), np.uint8)
    label[2:22, 2:22] = 1
    label[5:19, 5:19] = 0  # a 14x14 hole in a ring of 204 px
    label[7:18, 7:18] = 3  # a 121 px part inside the hole
    label[25:28, 25:28] = 2  # 9 px <= 100: dropped
    expected = np.zeros((30, 30), np.uint8)
    expected[2:22, 2:22] = 1
    expected[7:18, 7:18] = 3
    np.testing.assert_array_equal(fill_class_holes(label), expected)


def test_relabel_maps_kept_clusters():
    cmap = np.array([[0, 1, 2, 3]], np.uint8)
    assert relabel(cmap, np.array([3, 1])).tolist() == [[0, 2, 0, 1]]


def test_matched_miou_invariant_to_permutation_and_exact():
    t = np.array([[0, 1, 1, 2]], np.uint8)
    assert matched_miou([np.array([[0, 2, 2, 1]], np.uint8)], [t]) == 1.0
    # class 1 predicted on 1 of 2 pixels (IoU 0.5), class 2 right (IoU 1) → 0.75
    assert matched_miou([np.array([[0, 1, 0, 2]], np.uint8)], [t]) == 0.75


def test_generate_pseudo_labels_recovers_parts(tmp_path):
    paths = make_category(tmp_path, n=8, missing_blue=(7,))
    cfg = PseudoLabelConfig(proposer="part_labels", min_component_px=20, n_rotations=4, proj_dim=3,
                            bandwidth=0.01, min_cluster_frac=0.25)
    desc = ComponentDescriptor(MeanColour(), 3, proj_dim=3, n_rotations=4, seed=0)
    labels = generate_pseudo_labels(paths, PartLabelProposer(min_area=20), desc, cfg, progress=False)
    assert labels.num_classes == 3
    truth = [np.asarray(Image.open(tmp_path / "cat/aux/part_labels/train/good" / f"{i:03d}.png")) for i in range(8)]
    assert matched_miou(labels.label_maps, truth) == 1.0
    assert 7 not in labels.good_indices.tolist()  # the image missing a part is not "confidently labelled"
    labels.save(tmp_path / "out")
    back = PseudoLabels.load(tmp_path / "out")
    assert back.paths == labels.paths and back.info == labels.info
    assert all(np.array_equal(a, b) for a, b in zip(back.label_maps, labels.label_maps))


def test_build_proposer_and_descriptor_from_config():
    from ad_pipeline.segmentation.pseudo_labels import build_descriptor, build_proposer

    assert isinstance(build_proposer(PseudoLabelConfig(proposer="part_labels")), PartLabelProposer)
    assert isinstance(build_proposer(PseudoLabelConfig(proposer="color")), ColorComponentsProposer)
    cfg = PseudoLabelConfig(descriptor_backbone="resnet18", n_rotations=2, proj_dim=16)
    desc = build_descriptor(cfg, pretrained="false")
    assert desc.proj_weight.shape == (16, 512)  # resnet18 layer4
    assert desc(torch.rand(1, 3, 65, 65)).shape == (1, 16)


def test_grounded_sam_without_weights_is_a_clear_user_error(tmp_path):
    from ad_pipeline.errors import UserError
    from ad_pipeline.segmentation.grounded_sam import caption_of, required_files

    assert caption_of("  Almond. Apple ") == "almond. apple."
    with pytest.raises(UserError, match="groundingdino_swint_ogc.pth.*bert-base-uncased.*sam_hq_vit_h.pth"):
        required_files(tmp_path, "vit_h")
    with pytest.raises(UserError, match="unknown SAM-HQ variant"):
        required_files(tmp_path, "vit_x")
    with pytest.raises(UserError, match="Grounded-SAM weights not found"):
        build_proposer_grounded(tmp_path)


def build_proposer_grounded(weights_dir):
    from ad_pipeline.segmentation.pseudo_labels import build_proposer

    return build_proposer(PseudoLabelConfig(proposer="grounded_sam"), weights_dir=weights_dir)

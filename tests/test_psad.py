"""PSAD: bank features, adaptive scaling, PatchCore dump checks, composition anomaly, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.io import write_scores
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.psad.banks import composition_features, histogram_features
from ad_pipeline.methods.psad.method import (
    PSAD,
    PSADConfig,
    fit_part_segmenter,
    load_patch_scores,
    save_part_segmenter,
)
from ad_pipeline.methods.psad.scaling import Standardizer, adaptive_scale, nearest_distances, nearest_other_distances
from ad_pipeline.methods.psad.seed_bank import image_score, knn_distances
from ad_pipeline.segmentation.train import PSAD_FEWSHOT, SegTrainConfig


def test_histogram_features_are_raw_counts():
    maps = torch.tensor([[[0, 1], [2, 2]]])
    assert histogram_features(maps, 4).tolist() == [[1.0, 1.0, 2.0, 0.0]]


def test_composition_equals_explicit_upsampling():
    torch.manual_seed(0)
    feats = [torch.randn(2, 3, 4, 4), torch.randn(2, 5, 2, 2)]
    maps = torch.randint(0, 3, (2, 8, 8))
    got = composition_features(feats, maps, 3)
    up = torch.cat([F.interpolate(f, size=(8, 8), mode="bilinear", align_corners=True) for f in feats], 1)
    masks = F.one_hot(maps, 3).permute(0, 3, 1, 2)[:, 1:].float()
    expected = torch.einsum("ndhw,nkhw->nkd", up, masks) / (masks.sum((2, 3))[..., None] + 1)
    torch.testing.assert_close(got, expected.reshape(2, -1), atol=1e-5, rtol=1e-5)
    assert got.shape == (2, 2 * 8)


def test_nearest_other_distance_rules_and_adaptive_scaling():
    bank = torch.tensor([[0.0], [10.0], [11.0]])
    assert nearest_other_distances(bank).tolist() == [10.0, 1.0, 1.0]
    # reference code: unsorted row value at the position where argsort == 1
    assert nearest_other_distances(bank, "repo_bug").tolist() == [10.0, 10.0, 1.0]
    ref = torch.tensor([1.0, 1.0, 2.0, 4.0])
    assert adaptive_scale(torch.tensor([2.0]), ref).item() == pytest.approx(0.5)
    assert adaptive_scale(torch.tensor([2.0]), ref, "std").item() == pytest.approx((2 - 2) / ref.std().item())
    assert adaptive_scale(torch.tensor([2.0]), ref, "none").item() == 2.0
    assert nearest_distances(torch.tensor([[4.0], [10.4]]), bank).tolist() == pytest.approx([4.0, 0.4])


def test_standardizer_uses_unbiased_std():
    bank = torch.tensor([[1.0, 5.0], [3.0, 5.0]])
    st = Standardizer.fit(bank)
    assert st.std.tolist() == pytest.approx([np.sqrt(2.0), 0.0])
    assert st(torch.tensor([[3.0, 5.0]]))[0].tolist() == pytest.approx([1 / np.sqrt(2.0), 0.0])


def test_patchcore_dump_missing_or_stale_is_artifact_error(tmp_path):
    paths = ["a.png", "b.png"]
    with pytest.raises(ArtifactError, match="no train_loo score dump"):
        load_patch_scores(tmp_path, "train_loo", "fp-1", paths)
    write_scores(tmp_path, "train_loo", "fp-old", np.array([1.0, 2.0]), None)
    with pytest.raises(ArtifactError, match="another manifest"):
        load_patch_scores(tmp_path, "train_loo", "fp-1", paths)
    write_scores(tmp_path, "train_loo", "fp-1", np.array([1.0, 2.0, 3.0]), None)
    with pytest.raises(ArtifactError, match="3 rows for 2 images"):
        load_patch_scores(tmp_path, "train_loo", "fp-1", paths)
    write_scores(tmp_path, "train_loo", "fp-1", np.array([1.0, 2.0]), None)
    assert load_patch_scores(tmp_path, "train_loo", "fp-1", paths) == {"a.png": 1.0, "b.png": 2.0}


class RGB(torch.nn.Module):
    """Per-pixel 'features' = the image itself (1 layer, 3 channels)."""

    def forward(self, x):
        return [x]


def coloured(part_colours, n=1, jitter=0.0, seed=0):
    """[n,3,8,8] images + the fixed part map: class 1 = left half, class 2 = right half (rows 2..)."""
    g = torch.Generator().manual_seed(seed)
    maps = torch.zeros(n, 8, 8, dtype=torch.long)
    maps[:, 2:, :4], maps[:, 2:, 4:] = 1, 2
    x = torch.zeros(n, 3, 8, 8)
    for k, colour in part_colours.items():
        region = (maps == k).unsqueeze(1).float()
        x = x + region * (torch.tensor(colour).view(1, 3, 1, 1) + jitter * torch.randn(n, 3, 1, 1, generator=g))
    return x, maps


@pytest.fixture(scope="module")
def psad_hc():
    cfg = PSADConfig(num_classes=3, feature_encoder="resnet18", memory_type="hc")
    m = PSAD(cfg, RunContext(pretrained="false", progress=False))
    m.features = RGB()
    return m


def test_composition_bank_detects_swapped_part_colour(psad_hc):
    red, blue = (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)
    x, maps = coloured({1: red, 2: blue}, n=8, jitter=0.05)

    def feats(x, maps):
        return {"h": histogram_features(maps, 3), "c": composition_features(psad_hc.features(x), maps, 3)}

    psad_hc.fit_banks(feats(x, maps), None)
    good, gmaps = coloured({1: red, 2: blue}, jitter=0.05, seed=1)
    swapped, smaps = coloured({1: blue, 2: red}, seed=2)
    out = psad_hc.score_banks(feats(torch.cat([good, swapped]), torch.cat([gmaps, smaps])), None)
    assert out["h"].tolist() == pytest.approx([0.0, 0.0])  # same part areas: histogram is blind
    assert out["c"][1] > 5 * out["c"][0]


def test_psad_end_to_end_with_patch_dumps(tmp_path):
    paths, masks = [], []
    for i in range(5):
        img = np.zeros((32, 32, 3), np.uint8)
        m = np.zeros((32, 32), np.uint8)
        img[4:16, 2 + i:14 + i] = (220, 40, 40)
        m[4:16, 2 + i:14 + i] = 1
        p = tmp_path / f"{i}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
        masks.append(m)
    cfg = PSADConfig(image_size=32, num_classes=2, segmenter_encoder="resnet18", feature_encoder="resnet18",
                     second_stage=False,
                     segmenter=SegTrainConfig(**(PSAD_FEWSHOT | {"epochs": 2, "sup_only_epochs": 1, "batch_size": 2})))
    ctx = RunContext(pretrained="false", progress=False, upstream_dirs={"part_segmenter": tmp_path / "seg"})
    seg, _ = fit_part_segmenter(paths[:1], masks[:1], paths[1:], cfg, ctx)
    save_part_segmenter(seg, tmp_path / "seg", cfg)
    method = PSAD(cfg, ctx)
    with pytest.raises(ArtifactError, match="leave-one-out"):
        method.fit(paths[:4], [])
    method.patch_scores.update({str(p): float(i) for i, p in enumerate(paths)})
    method.fit(paths[:4], [])
    out = method.score(paths[4:])
    assert set(out.extras) == {"h", "c", "p"}
    assert out.extras["p"][0] == pytest.approx(4.0 / 3.0)  # 4 / max(LOO train scores 0..3)
    assert np.isfinite(out.scores).all()
    method.save(tmp_path / "psad")
    again = PSAD.load(tmp_path / "psad", cfg, ctx)
    again.patch_scores = method.patch_scores
    np.testing.assert_allclose(again.score(paths[4:]).scores, out.scores)


def test_histogram_classes_beyond_num_classes_are_a_user_error(tmp_path):
    p = tmp_path / "0.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(p)
    cfg = PSADConfig(image_size=16, num_classes=4, segmenter={"hist_classes": [1, 2, 3, 6]})
    with pytest.raises(UserError, match=r"hist_classes \[1, 2, 3, 6\] name classes ≥ num_classes 4"):
        fit_part_segmenter([p], [np.zeros((16, 16), np.uint8)], [], cfg, RunContext(pretrained="false"))


def test_seed_bank_image_score_is_the_reweighted_worst_patch():
    knn = torch.tensor([[1.0, 2.0], [3.0, 5.0]])  # 2 patches × 2 nearest distances; the seed divides by 10
    expected = (1 - np.exp(0.5) / (np.exp(0.3) + np.exp(0.5))) * 0.3
    assert image_score(knn) == pytest.approx(expected, rel=1e-6)
    assert image_score(knn[:, :1]) == pytest.approx(0.3)  # k = 1: the max patch score
    bank = torch.tensor([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    d = knn_distances(torch.tensor([[0.0, 0.0]]), bank, 2, chunk=1, hidden=slice(0, 1))
    assert torch.allclose(d, torch.tensor([[5.0, 10.0]]))  # row 0 hidden (leave-one-out)

"""PSAD's recipe: preprocessing, second-stage segmenter, normal-data subset, full patch bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ad_pipeline.backbones import build_backbone
from ad_pipeline.data.synthetic import loco
from ad_pipeline.data.synthetic.canvas import image_rng
from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore.method import PatchCoreConfig
from ad_pipeline.methods.psad.method import (
    PSAD,
    RETRAINED,
    PSADConfig,
    fit_part_segmenter,
    fit_second_stage,
    normal_subset,
    save_part_segmenter,
)
from ad_pipeline.methods.psad.preprocess import PreprocessConfig, polygons_to_mask, preprocess, preprocess_label
from ad_pipeline.segmentation.models import ResidualCoordSegmenter
from ad_pipeline.segmentation.train import PSAD_FEWSHOT, PSAD_RETRAIN, SegTrainConfig, train_segmentation
from stages.psad import full_bank_scores


def test_crop_resize_pad_is_identical_for_image_and_label():
    # 8 wide × 6 high, crop 1 → 6×4 (longer side = target 6: no resampling), zero-padded to 6×6 top-left
    label = np.zeros((6, 8), np.uint8)
    label[1, 1:4], label[4, 4:7], label[0, :] = 1, 2, 3  # row 0 (class 3) is cropped away
    image = np.stack([label * 50, label * 10, label], -1).astype(np.uint8)
    cfg = PreprocessConfig(crop=1)
    out_label = preprocess_label(label, 6, cfg)
    out_image = np.asarray(preprocess(Image.fromarray(image), 6, cfg))
    expected = [[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 2, 2, 2]] + [[0] * 6] * 2
    assert out_label.tolist() == expected
    assert out_image.shape == (6, 6, 3)
    assert out_image.tolist() == [[[50 * v, 10 * v, v] for v in row] for row in expected]
    # downscaling 6×4 → 3×2 (nearest: source columns 1, 3, 5 and rows 1, 3), padded to 3×3
    assert preprocess_label(label, 3, cfg).tolist() == [[0, 0, 0], [0, 2, 2], [0, 0, 0]]


def test_seed_preprocessing_per_category_and_bad_crop():
    from ad_pipeline.recipes import category_defaults

    assert PSADConfig().preprocess == PreprocessConfig(crop=0, pad_square=True, resample="bicubic")
    assert category_defaults("mvtec_loco", "psad", "screw_bag")["preprocess"] == {"crop": 150}
    assert "preprocess" not in category_defaults("mvtec_loco", "psad", "pushpins")
    with pytest.raises(UserError, match="leaves nothing"):
        preprocess(Image.new("RGB", (300, 200)), 64, PreprocessConfig(crop=100))


def test_polygons_to_mask_paints_earlier_regions_on_top():
    regions = [{"shape_attributes": {"all_points_x": [0, 2, 2, 0], "all_points_y": [0, 0, 2, 2]},
                "region_attributes": {"label": "1"}},
               {"shape_attributes": {"all_points_x": [1, 4, 4, 1], "all_points_y": [1, 1, 3, 3]},
                "region_attributes": {"label": "2"}}]
    assert polygons_to_mask(regions, 4, 5).tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 2, 2], [1, 1, 1, 2, 2],
                                                         [0, 2, 2, 2, 2]]


def test_normal_subset_is_seeded():
    paths = [f"{i:03d}.png" for i in range(16)]
    a, b, other = normal_subset(paths, 0.25, 0), normal_subset(paths, 0.25, 0), normal_subset(paths, 0.25, 1)
    assert a == b and len(a) == 4 and a == sorted(a) and set(a) <= set(paths)
    assert a != other
    assert normal_subset(paths, 1.0, 0) == paths
    assert len(normal_subset(paths, 0.01, 0)) == 2  # adaptive scaling needs two
    # the seed's --less_data k: the first N // k names in sorted order
    assert normal_subset(paths[::-1], 0.125, 0, "first") == ["000.png", "001.png"]
    assert normal_subset(paths[:15], 0.25, 0, "first") == paths[:3]


def _tray(n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """n synthetic LOCO tray images (normalised [n,3,S,S]) and their part labels int64 [n,S,S]."""
    from ad_pipeline.data.images import normalized_batch

    cat = next(c for c in loco.CATEGORIES if c.name == "tray")
    cfg = PreprocessConfig()
    ims, labs = [], []
    for i in range(n):
        im, lab, _ = loco.render_image(cat, image_rng(0, "test", "tray", i), "good", i, None)
        ims.append(preprocess(Image.fromarray(im), size, cfg))
        labs.append(torch.from_numpy(preprocess_label(lab, size, cfg).astype(np.int64)))
    return normalized_batch(ims), torch.stack(labs)


def test_second_stage_segmenter_lowers_its_loss_on_synthetic_loco_labels():
    x, y = _tray(4)
    enc = build_backbone("resnet18", pretrained="false", seed=0, trainable=True)
    model = ResidualCoordSegmenter(enc, 4, coord_scale=30.0)
    assert model(x[:1]).shape == (1, 4, 32, 32)
    cfg = SegTrainConfig(**(PSAD_RETRAIN | {"epochs": 8, "batch_size": 4}))
    history = train_segmentation(model, x, y, np.arange(4), cfg, num_classes=4, seed=0, progress=False)
    first, last = (h["ce"] + h["dice"] for h in (history[0], history[-1]))
    assert set(history[0]) == {"epoch", "ce", "dice"}  # hist / entropy are off in the second stage
    assert last < 0.7 * first


def test_psad_second_stage_and_full_patch_bank_end_to_end(tmp_path):
    x_paths = []
    cat = next(c for c in loco.CATEGORIES if c.name == "tray")
    labels = []
    for i in range(6):
        im, lab, _ = loco.render_image(cat, image_rng(0, "e2e", "tray", i), "good", i, None)
        p = tmp_path / f"{i:03d}.png"
        Image.fromarray(im).save(p)
        x_paths.append(p)
        labels.append(lab)
    tiny = {"epochs": 1, "sup_only_epochs": 1, "batch_size": 2}
    cfg = PSADConfig(image_size=32, num_classes=4, segmenter_encoder="resnet18", feature_encoder="resnet18",
                     retrain_encoder="resnet18", normal_fraction=0.5,
                     segmenter=SegTrainConfig(**(PSAD_FEWSHOT | tiny)), retrain=SegTrainConfig(**(PSAD_RETRAIN | tiny)))
    ctx = RunContext(pretrained="false", progress=False,
                     upstream_dirs={"part_segmenter": tmp_path / "fs", RETRAINED: tmp_path / "rt"})
    fewshot, _ = fit_part_segmenter(x_paths[:1], labels[:1], x_paths[1:5], cfg, ctx)
    save_part_segmenter(fewshot, tmp_path / "fs", cfg)
    second, history = fit_second_stage(fewshot, x_paths[:5], cfg, ctx)
    save_part_segmenter(second, tmp_path / "rt", cfg, RETRAINED)
    assert len(history) == 1
    pc = PatchCoreConfig(backbone="resnet18", resize=32, image_size=32, pretrain_embed_dim=16, target_embed_dim=16,
                         coreset_ratio=0.1)
    scores, facts = full_bank_scores(pc, ctx, x_paths[:5], [x_paths[5:]])
    assert facts["coreset_ratio"] == 1.0 and facts["memory_bank_size"] == 5 * 4 * 4
    method = PSAD(cfg, ctx)
    method.patch_scores, method.patch_bank = scores, facts
    method.fit(x_paths[:5], [])
    out = method.score(x_paths[5:])
    assert np.isfinite(out.scores).all()
    meta = method.meta()
    assert meta["segmenter"] == RETRAINED and meta["patch_bank"]["coreset_ratio"] == 1.0
    assert meta["normal_subset"]["n"] == 2 and meta["normal_subset"]["images"] == [
        str(p) for p in normal_subset(x_paths[:5], 0.5, 0)]
    assert isinstance(method.segmenter, ResidualCoordSegmenter)
    assert meta["weights_per_part"] == {"feature_encoder": "random-init", "segmenter_encoder": "random-init",
                                        "retrain_encoder": "random-init"}

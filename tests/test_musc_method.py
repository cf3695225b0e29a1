"""MuSc end to end with seeded random-init ViTs at tiny sizes: shapes, determinism, fidelity, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import ValidationError

from ad_pipeline.backbones import EMBEDDING, build_backbone
from ad_pipeline.backbones.features import load_images
from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.musc import method as musc_method
from ad_pipeline.methods.musc.method import MuSc, MuScConfig
from musc_reference import musc_reference

SIZE = 48  # ViT-B-16 -> 3x3 token grid


def _images(root: Path, counts: dict[str, int], seed: int = 0) -> list[Path]:
    g = np.random.default_rng(seed)
    paths = []
    for defect, count in counts.items():
        (root / defect).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            path = root / defect / f"{i:03d}.png"
            Image.fromarray(g.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def _ctx(backbone: str, **kw) -> RunContext:
    return RunContext(backbone=backbone, pretrained="false", progress=False, **kw)


@pytest.fixture(scope="module")
def clip_bb():
    return build_backbone("ViT-B-16", pretrained="false", seed=0)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    return _images(tmp_path_factory.mktemp("musc"), {"good": 5, "crack": 3})


@pytest.fixture(scope="module")
def dino_bb():
    return build_backbone("dinov2_vits14", pretrained="false", seed=0)


def _musc(bb, **cfg) -> MuSc:
    """MuSc on a shared backbone; a 3x3 token grid for both ViT-B-16 (48 px) and dinov2_vits14 (42 px)."""
    cfg = {"image_size": 3 * bb.spec.patch_size, "r_list": [1, 3], "batch_size": 8} | cfg
    return MuSc(MuScConfig(**cfg), _ctx(bb.spec.name), backbone=bb)


@pytest.fixture(scope="module")
def clip_run(clip_bb, images):
    musc = _musc(clip_bb)
    return musc, musc.score(images)


def test_scores_maps_shapes_determinism_and_reference(clip_bb, images, clip_run):
    musc, first = clip_run
    second = musc.score(images)
    assert first.scores.shape == (8,) and first.scores.dtype == np.float32
    assert first.maps.shape == (8, SIZE, SIZE) and first.maps.dtype == np.float32
    np.testing.assert_array_equal(first.scores, second.scores)
    np.testing.assert_array_equal(first.maps, second.maps)
    assert np.isfinite(first.maps).all()
    # raw image score = max of the upsampled map, as the official code (not the max of the grid)
    np.testing.assert_allclose(first.extras["raw_scores"], first.maps.reshape(8, -1).max(1), rtol=1e-6)
    # the literal reference on the same tokens (a zero class token prepended, as for DINOv2)
    with torch.inference_mode():
        x = load_images(clip_bb, images, SIZE, resample="bicubic")
        tokens = clip_bb(x, [2, 5, 8, 11])
    with_cls = [torch.cat([torch.zeros_like(t[:, :1]), t], dim=1) for t in tokens.values()]
    grid = musc_reference(with_cls, [1, 3], 0.3).view(8, 1, 3, 3)
    reference = F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=True)
    np.testing.assert_allclose(first.maps, reference[:, 0].numpy(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(first.extras["raw_scores"], reference.flatten(1).amax(1).numpy(), rtol=0, atol=1e-5)
    assert (first.extras["raw_scores"] <= grid.flatten(1).amax(1).numpy() + 1e-6).all()
    meta = musc.meta()
    assert meta["weights"] == "random-init" and meta["grid"] == [3, 3] and meta["k"] == [2]
    assert meta["rscin_k_list"] == [1, 2, 3] and meta["warnings"] == []


def test_classification_only_same_scores_no_maps(dino_bb, images):
    full = _musc(dino_bb).score(images)
    cls_only = _musc(dino_bb, classification_only=True).score(images)
    assert cls_only.maps is None
    np.testing.assert_array_equal(cls_only.scores, full.scores)


def test_feature_cache_skips_the_vit_on_a_rerun_with_other_scoring_settings(dino_bb, images, tmp_path,
                                                                           monkeypatch):
    def run(**cfg):
        cfg = {"image_size": 42, "batch_size": 8, "cache_features": True} | cfg
        return MuSc(MuScConfig(**cfg), _ctx("dinov2_vits14", cache_dir=tmp_path), backbone=dino_bb).score(images)

    run(r_list=[1, 3], cache_features=False)
    assert not any(tmp_path.iterdir())
    first = run(r_list=[1, 3])
    assert len(list(tmp_path.glob("dinov2_vits14_42_*.safetensors"))) == 1

    def no_forward(*_a, **_k):
        raise AssertionError("the ViT ran although its features were cached")

    monkeypatch.setattr(type(dino_bb), "forward", no_forward)
    np.testing.assert_array_equal(run(r_list=[1, 3]).maps, first.maps)
    assert not np.array_equal(run(r_list=[1]).maps, first.maps)  # a scoring change, same cached tokens
    monkeypatch.undo()
    run(r_list=[1, 3], precision="bf16")  # autocast features are cached under their own key
    assert len(list(tmp_path.glob("dinov2_vits14_42_*.safetensors"))) == 2


def test_divide_num_scores_subsets_independently(dino_bb, images):
    musc = _musc(dino_bb, divide_num=2, rscin_k_list=[0])
    out = musc.score(images)
    # good: 5 images -> 3 + 2, crack: 3 -> 2 + 1; k = int(0.3·4) = 1 and int(0.3·2) = 0 -> 1
    assert musc.meta()["subset_sizes"] == [5, 3] and musc.meta()["k"] == [1, 1]
    assert np.isfinite(out.scores).all()
    np.testing.assert_array_equal(out.scores, out.extras["raw_scores"])  # RsCIN disabled by the 0


def test_too_few_images(dino_bb, images):
    with pytest.raises(UserError, match="at least 2"):
        _musc(dino_bb).score(images[:1])
    musc = _musc(dino_bb)
    out = musc.score(images[:3])  # k = int(0.3·2) = 0 -> fallback 1, recorded
    assert np.isfinite(out.scores).all() and np.isfinite(out.maps).all()
    assert musc.meta()["k"] == [1] and "using k = 1" in musc.meta()["warnings"][0]
    with pytest.raises(UserError, match="divide_num"):
        _musc(dino_bb, divide_num=4).score(images[:6])


def test_non_finite_features_name_the_image(dino_bb, images, monkeypatch):
    extract = musc_method.extract_features

    def poisoned(bb, paths, *, layers, **kw):
        feats = extract(bb, paths, layers=layers, **kw)
        feats[layers[0]][1, 0, 0] = float("nan")
        return feats

    monkeypatch.setattr(musc_method, "extract_features", poisoned)
    with pytest.raises(UserError, match="non-finite") as err:
        _musc(dino_bb, batch_size=8).score(images)
    assert err.value.path == str(images[1])


@pytest.mark.parametrize("fixture", ["clip_bb", "dino_bb"])
def test_one_pass_tokens_and_embedding_equal_separate_calls(fixture, request):
    bb = request.getfixturevalue(fixture)
    size = 3 * bb.spec.patch_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        both = bb(x, [5, EMBEDDING, 2])
        assert list(both) == [5, EMBEDDING, 2]
        for layer, t in bb(x, [2, 5]).items():
            assert torch.equal(both[layer], t)
        torch.testing.assert_close(both[EMBEDDING], bb.embed(x), rtol=0, atol=0)


def test_fresh_instances_bit_identical(dino_bb, images):
    """A shared and a freshly built (seeded) backbone give bit-identical results; VisA windows."""
    cfg = MuScConfig(image_size=42, r_list=[1, 3], layers=[1, 3], batch_size=8)
    shared = MuSc(cfg, _ctx("dinov2_vits14", dataset_format="visa"), backbone=dino_bb)
    fresh = MuSc(cfg, _ctx("dinov2_vits14", dataset_format="visa"))
    a, b = shared.score(images), fresh.score(images)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.maps, b.maps)
    assert a.maps.shape == (8, 42, 42)
    assert fresh.meta()["rscin_k_list"] == [1, 8, 9] and "clamped" in fresh.meta()["warnings"][0]


def test_cnn_backbone_rejected_with_vit_names():
    with pytest.raises(UserError, match="ViT-L-14-336") as err:
        MuSc(MuScConfig(), _ctx("wide_resnet50_2"))
    assert "dinov2_vitb14" in str(err.value)


@pytest.mark.parametrize("bad", [{"r_list": [2]}, {"r_list": []}, {"k_fraction": 0}, {"rscin_k_list": [-1]},
                                 {"precision": "fp8"}, {"unknown": 1}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        MuScConfig(**bad)


def test_smoothing_changes_maps_and_scores_follow_the_smoothed_max(dino_bb, images):
    out = _musc(dino_bb, smoothing_sigma=2.0).score(images)
    np.testing.assert_allclose(out.extras["raw_scores"], out.maps.reshape(8, -1).max(1), rtol=1e-6)
    plain = _musc(dino_bb, classification_only=True).score(images)
    assert (out.extras["raw_scores"] < plain.extras["raw_scores"]).all()  # blurring lowers every peak


def test_clip_activation_official_follows_the_image_size_and_meta_records_it(clip_bb, images):
    """The official code builds GELU whenever the image size is not the weights' native one."""
    at_48 = MuSc(MuScConfig(image_size=48, clip_activation="official"), _ctx("ViT-B-16"))
    assert at_48._activation() == "gelu"
    assert MuSc(MuScConfig(image_size=224, clip_activation="official"), _ctx("ViT-B-16"))._activation() == "auto"
    with pytest.raises(ValueError, match="quick_gelu, clip_activation asks for gelu"):
        MuSc(MuScConfig(image_size=48, clip_activation="gelu"), _ctx("ViT-B-16"), backbone=clip_bb)
    musc = _musc(clip_bb)
    musc.score(images[:3])
    assert musc.meta()["activation"] == "quick_gelu" and musc.meta()["activation_reason"] == "tag openai"

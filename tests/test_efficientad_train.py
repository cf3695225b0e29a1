"""EfficientAD training paths on tiny models: teacher distillation, student/AE fit, save/load, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from efficientad_tiny import TINY, fit_tiny, make_images, tiny_dataset, tiny_teacher_dir

from ad_pipeline.components.student_teacher.pdn import PDN
from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.efficientad.config import TeacherConfig
from ad_pipeline.methods.efficientad.distill import PatchDescriptorTarget, distill_teacher
from ad_pipeline.methods.efficientad.method import EfficientAD, EfficientADConfig
from ad_pipeline.methods.efficientad.teacher_files import load_teacher, obtain_teacher, save_teacher

TEACHER_TINY = {"image_size": 32, "target_image_size": 64, "batch_size": 4, "channels": 8, "width_divisor": 16,
                "target_layer_dim": 16}


def _toy_features(x, layers):
    """A fixed 'backbone': stride-8 and stride-16 average pools of the image and its square."""
    return {"a": torch.nn.functional.avg_pool2d(x, 8), "b": torch.nn.functional.avg_pool2d(x.pow(2), 16)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return tiny_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, data):
    return fit_tiny(tmp_path_factory.mktemp("fit"), data, steps=12, lr=1e-3)


def test_distillation_lowers_the_loss_and_round_trips(tmp_path):
    images = make_images(tmp_path / "imgs", 4, seed=5)
    cfg = TeacherConfig(steps=12, lr=3e-3, **TEACHER_TINY)
    state = distill_teacher(images, cfg, RunContext(seed=0), target=PatchDescriptorTarget(_toy_features, ("a", "b"), 16, 8))
    assert np.mean(state.losses[-3:]) < np.mean(state.losses[:3])
    save_teacher(state, tmp_path / "t")
    loaded = load_teacher(tmp_path / "t", "small")
    assert not loaded.pdn.padding and loaded.meta["source"] == "distilled"
    for k, v in state.pdn.state_dict().items():
        assert torch.equal(v, loaded.pdn.state_dict()[k])


def test_distillation_with_registry_backbone(tmp_path):
    pytest.importorskip("ad_pipeline.backbones")
    images = make_images(tmp_path / "imgs", 2, seed=6)
    cfg = TeacherConfig(steps=1, target_backbone="resnet18", **TEACHER_TINY)
    state = distill_teacher(images, cfg, RunContext(seed=0, pretrained="false"))
    assert state.meta["target_weights"] == "random-init" and np.isfinite(state.losses[0])


def test_distillation_grid_mismatch_is_a_user_error(tmp_path):
    images = make_images(tmp_path / "imgs", 2, seed=6)
    cfg = TeacherConfig(steps=1, **(TEACHER_TINY | {"target_image_size": 128}))
    with pytest.raises(UserError, match="target grid"):
        distill_teacher(images, cfg, RunContext(seed=0), target=PatchDescriptorTarget(_toy_features, ("a",), 16, 8))


def test_obtain_teacher_prefers_weights_dir_file_and_rejects_bad_files(tmp_path):
    torch.manual_seed(0)
    torch.save(PDN("small", 8, width_divisor=16).state_dict(), tmp_path / "teacher_small.pth")
    cfg = TeacherConfig(**TEACHER_TINY)
    state = obtain_teacher(cfg, RunContext(weights_dir=tmp_path), fallback_images=[])
    assert state.meta["source"] == "file"
    torch.save({"nonsense": torch.zeros(1)}, tmp_path / "teacher_medium.pth")
    with pytest.raises(UserError, match="teacher state dict"):
        obtain_teacher(TeacherConfig(**(TEACHER_TINY | {"model_size": "medium"})), RunContext(weights_dir=tmp_path), [])
    with pytest.raises(UserError, match="no image files"):
        obtain_teacher(TeacherConfig(**(TEACHER_TINY | {"pretrain_images": str(tmp_path)})), RunContext(), [])


def test_fit_lowers_loss_and_scores_have_right_shapes(fitted, data):
    assert np.mean(fitted.losses[-3:]) < np.mean(fitted.losses[:3])
    assert fitted.info["pretrain_images_fallback"] is True
    out = fitted.score(data["good"] + data["bad"])
    assert out.scores.shape == (4,) and out.scores.dtype == np.float32
    assert out.maps.shape == (4, TINY["image_size"], TINY["image_size"])
    assert np.all(np.isfinite(out.maps)) and np.allclose(out.scores, out.maps.max(axis=(1, 2)))
    q = fitted.info["quantiles"]
    assert q["st_b"] > q["st_a"] and q["ae_b"] > q["ae_a"]


def test_save_load_round_trip_gives_identical_scores(fitted, data, tmp_path):
    fitted.save(tmp_path)
    again = EfficientAD.load(tmp_path, fitted.cfg, fitted.ctx)
    paths = data["good"] + data["bad"]
    a, b = fitted.score(paths), again.score(paths)
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.maps, b.maps)
    with pytest.raises(ArtifactError, match="params ask"):
        EfficientAD.load(tmp_path, fitted.cfg.model_copy(update={"model_size": "medium"}), fitted.ctx)


def test_same_seed_gives_identical_tensors_and_scores(tmp_path, data):
    torch.manual_seed(123)  # the caller's global RNG state must not matter
    a = fit_tiny(tmp_path / "a", data, steps=3)
    torch.manual_seed(456)
    b = fit_tiny(tmp_path / "b", data, steps=3)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert np.array_equal(a.score(data["bad"]).scores, b.score(data["bad"]).scores)
    c = fit_tiny(tmp_path / "c", data, steps=3, seed=1)
    assert not torch.equal(a.model.student[0].weight, c.model.student[0].weight)


def test_missing_inputs_are_user_errors(tmp_path, data):
    cfg = EfficientADConfig(steps=1, **TINY)
    with pytest.raises(UserError, match="efficientad_teacher"):
        EfficientAD(cfg, RunContext()).fit(data["train"], data["validation"])
    ctx = RunContext(upstream_dirs={"efficientad_teacher": tiny_teacher_dir(tmp_path / "t")})
    with pytest.raises(UserError, match="validation"):
        EfficientAD(cfg, ctx).fit(data["train"], [])
    with pytest.raises(UserError, match="channels"):
        EfficientAD(cfg.model_copy(update={"channels": 32}), ctx).fit(data["train"], data["validation"])
    with pytest.raises(UserError, match="multiple of 32"):
        EfficientAD(EfficientADConfig(image_size=100), ctx)

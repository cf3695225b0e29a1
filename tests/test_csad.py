"""CSAD: patch histograms, trimmed z-score, LGST shapes, end-to-end fit/score/save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ad_pipeline.errors import ArtifactError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.fusion import trimmed_zscore
from ad_pipeline.methods.csad.method import trimmed
from ad_pipeline.methods.csad.lgst import LGST, LGSTTeacher, fit_map_quantiles, lgst_scores
from ad_pipeline.methods.csad.config import CSADConfig
from ad_pipeline.methods.csad.method import CSAD
from ad_pipeline.methods.csad.segmentor import fit_segmentor, save_segmentor
from ad_pipeline.methods.csad.patch_hist import PatchHistogramModel, class_histograms
from ad_pipeline.segmentation.pseudo_labels import PseudoLabels
from ad_pipeline.segmentation.train import SegTrainConfig
from test_segmentation_fakes import TinyEncoder


def test_class_histograms_exact_and_quadrant_order():
    seg = torch.tensor([[[1, 1, 0, 2],
                         [1, 1, 0, 0],
                         [0, 0, 0, 0],
                         [2, 2, 0, 0]]])
    h_g, h_p = class_histograms(seg, 3)
    assert h_g.tolist() == [[0.0, 4 / 16, 3 / 16]]  # background bin zeroed
    # order TL, BL, TR, BR (the official's): TL all class 1, BL half class 2, TR a quarter, BR none
    assert h_p.tolist() == [[0, 1, 0, 0, 0, 0.5, 0, 0, 0.25, 0, 0, 0]]


def part_map(dy=0, dx=0, with_b=True):
    """Part 1 (4+dy)×4 in the top-left quadrant, part 2 3×(4+dx) in the bottom-right one."""
    seg = torch.zeros(16, 16, dtype=torch.long)
    seg[2:6 + dy, 2:6] = 1
    if with_b:
        seg[10:13, 10:14 + dx] = 2
    return seg


def test_patch_histogram_detects_missing_part():
    train = torch.stack([part_map(dy, dx) for dy in (0, 1, 2) for dx in (0, 1, 2)])
    model = PatchHistogramModel.fit(train, 3)
    d_g, d_p = model.distances(torch.stack([part_map(1, 1), part_map(1, 1, with_b=False)]))
    assert d_g[0] < 0.5 and d_g[1] > 5.0
    assert d_p[0] < 0.5 and d_p[1] > 5.0
    back = PatchHistogramModel.from_arrays(model.to_arrays())
    np.testing.assert_allclose(back.distances(train)[1], model.distances(train)[1])


def test_trimmed_zscore_formula():
    v = np.arange(1.0, 11.0)  # q20 = 2.8, q80 = 8.2 → kept 3..8
    kept = np.arange(3.0, 9.0)
    st = trimmed(v, 0.0)
    assert st.mean == pytest.approx(5.5) and st.std == pytest.approx(kept.std(ddof=0))
    np.testing.assert_allclose(trimmed_zscore(np.array([5.5, 7.2]), v), [0.0, 1.7 / kept.std()])
    assert trimmed(np.full(5, 3.0), 0.0).std == 1.0  # ties: all kept, std 0 → 1
    assert trimmed(np.array([1.0, 1.0005, 1.001, 1.0015, 1.002]), 1e-3).std == 1.0
    with pytest.raises(ValueError, match="finite"):
        trimmed(np.array([1.0, np.nan]), 0.0)


def tiny_lgst(seed=0):
    enc = TinyEncoder()
    teacher = LGSTTeacher(enc, 12 + 16, channels=8, out_size=32, seed=seed)
    return LGST(teacher, image_size=128, channels=8, width_divisor=32)


def test_lgst_shapes_seeded_frozen_projection_and_quantiles():
    model = tiny_lgst().eval()
    x = torch.randn(2, 3, 128, 128)
    assert model.teacher(x).shape == (2, 8, 32, 32)
    assert model.student(x).shape == (2, 16, 32, 32)
    assert model.autoencoder(x).shape == (2, 8, 32, 32)
    m, s = model(x)
    up = torch.nn.functional.interpolate(m, size=(128, 128), mode="bilinear", align_corners=False)
    assert m.shape == (2, 1, 32, 32) and torch.equal(s, up.amax((1, 2, 3)))  # official CSAD.py: max at 128²
    assert (s <= m.amax((1, 2, 3))).all()  # bilinear (align_corners=False) never exceeds the grid max
    model.upsample_score = False  # lgst_score: grid (the official ONNX graph)
    assert torch.equal(model(x)[1], m.amax((1, 2, 3)))
    model.upsample_score = True
    assert torch.equal(tiny_lgst().teacher.proj.weight, model.teacher.proj.weight)
    assert not torch.equal(tiny_lgst(seed=1).teacher.proj.weight, model.teacher.proj.weight)
    assert not any(p.requires_grad for p in model.teacher.parameters())
    images = torch.randint(0, 255, (3, 3, 128, 128), dtype=torch.uint8)
    q = fit_map_quantiles(model, images)
    assert q.st_a < q.st_b and model.quantiles.tolist() == pytest.approx([q.st_a, q.st_b, q.ae_a, q.ae_b])
    scores, maps = lgst_scores(model, images)
    assert scores.shape == (3,) and maps.shape == (3, 32, 32) and np.isfinite(scores).all()


def make_images(root, n, prefix, missing_part=()):
    paths, labels = [], []
    rng = np.random.default_rng(len(prefix))
    for i in range(n):
        img = np.zeros((64, 64, 3), np.uint8)
        lab = np.zeros((64, 64), np.uint8)
        y, x = rng.integers(4, 10, 2)
        img[y:y + 16, x:x + 16] = (230, 40, 40)
        lab[y:y + 16, x:x + 16] = 1
        if i not in missing_part:
            img[40:56, 36:56] = (40, 40, 230)
            lab[40:56, 36:56] = 2
        p = root / f"{prefix}{i:03d}.png"
        Image.fromarray(img).save(p)
        paths.append(p)
        labels.append(lab)
    return paths, labels


def test_csad_end_to_end_fit_score_save_load(tmp_path):
    train, labels = make_images(tmp_path, 6, "train")
    val, _ = make_images(tmp_path, 4, "val")
    test, _ = make_images(tmp_path, 2, "test", missing_part=(1,))
    pseudo = PseudoLabels([str(p) for p in train], labels, np.zeros((6, 2), np.float32), np.arange(6),
                          proposals=labels)  # one component per part: LSA copy-pastes them
    cfg = CSADConfig(image_size=128, encoder="resnet18", head_channels=8, head_low_channels=4, bn_momentum=0.1,
                     segmentor=SegTrainConfig(epochs=25, sup_only_epochs=20, batch_size=2, ce_on_probs=False),
                     lgst_channels=8, lgst_width_divisor=32, lgst_steps=2, batch_size=4)
    ctx = RunContext(seed=0, pretrained="false", progress=False, upstream_dirs={"segmentor": tmp_path / "seg"})
    seg, hist = fit_segmentor(train, pseudo, cfg, ctx)
    save_segmentor(seg, tmp_path / "seg", cfg)
    method = CSAD(cfg, ctx)
    method.fit(train, val)
    out = method.score(test)
    assert out.scores.shape == (2,) and out.maps.shape == (2, 32, 32) and np.isfinite(out.scores).all()
    assert out.extras["patch_hist"][1] > out.extras["patch_hist"][0]  # missing blue part
    method.save(tmp_path / "csad")
    again = CSAD.load(tmp_path / "csad", cfg, ctx).score(test)
    np.testing.assert_array_equal(again.scores, out.scores)
    for branch in ("patch_hist", "lgst"):  # the branch ablation switch: one branch's z-score alone
        method.cfg = cfg.model_copy(update={"branches": branch})
        np.testing.assert_allclose(method.score(test).scores, out.extras[branch], rtol=1e-6)


def test_csad_export_matches_library_scores_and_onnx(tmp_path):
    from ad_pipeline.export.compare import check_parity, run_images, torch_runner
    from ad_pipeline.export.formats import export_formats, load_runner
    from ad_pipeline.export.inference import load_inputs
    from ad_pipeline.methods.csad.inference import CSADInference

    train, labels = make_images(tmp_path, 4, "train")
    val, _ = make_images(tmp_path, 3, "val")
    pseudo = PseudoLabels([str(p) for p in train], labels, np.zeros((4, 2), np.float32), np.arange(4), proposals=labels)
    cfg = CSADConfig(image_size=128, encoder="resnet18", head_channels=8, head_low_channels=4, bn_momentum=0.1,
                     segmentor=SegTrainConfig(epochs=2, sup_only_epochs=2, batch_size=2),
                     lgst_channels=8, lgst_width_divisor=32, lgst_steps=1, batch_size=4)
    ctx = RunContext(seed=0, pretrained="false", progress=False, upstream_dirs={"segmentor": tmp_path / "seg"})
    save_segmentor(fit_segmentor(train, pseudo, cfg, ctx)[0], tmp_path / "seg", cfg)
    method = CSAD(cfg, ctx)
    method.fit(train, val)
    module = CSADInference(method)
    want = method.score(val)
    maps, scores = run_images(torch_runner(module), val, 128)
    np.testing.assert_allclose(scores, want.scores, atol=1e-3)
    np.testing.assert_allclose(maps, want.maps, atol=1e-3)  # the library path feeds LGST a uint8-rounded image
    onnx = export_formats(module, load_inputs(val[:1], 128), tmp_path / "x", ["onnx"])["onnx"]
    assert check_parity(load_runner(onnx), torch_runner(module), load_inputs(val, 128).numpy(), atol=1e-4) <= 1e-4
    method.cfg = cfg.model_copy(update={"branches": "lgst"})  # the branch switch reaches the exported module
    _, scores = run_images(torch_runner(CSADInference(method)), val, 128)
    np.testing.assert_allclose(scores, method.score(val).scores, atol=1e-3)


def test_fit_segmentor_refuses_labels_without_a_part_class(tmp_path):
    train = [tmp_path / f"{i}.png" for i in range(2)]
    background = [np.zeros((8, 8), np.uint8)] * 2
    pseudo = PseudoLabels([str(p) for p in train], background, np.zeros((2, 0), np.float32), np.arange(2))
    with pytest.raises(ArtifactError, match="no part class"):
        fit_segmentor(train, pseudo, CSADConfig(), RunContext(progress=False))

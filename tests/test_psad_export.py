"""PSAD's inference graph: equal to ``PSAD.score`` (all three banks, patchcore@'s model or the
seed's PatchCore as the patch bank, non-square images through the pad geometry), exported to
ONNX/OpenVINO and run by ``predict --model``; the full patch bank and an unsaved seed bank are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ad_pipeline.export.compare import max_abs_diff, max_rel_diff, run_images, torch_runner
from ad_pipeline.export.formats import export_formats, installed_formats, load_runner
from ad_pipeline.export.inference import Geometry, NotExportable, geometries, inference_module
from ad_pipeline.io import write_json
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore import PatchCore, PatchCoreConfig
from ad_pipeline.methods.psad.inference import patchcore_inference
from ad_pipeline.methods.psad.method import PSAD, PSADConfig, fit_part_segmenter, save_part_segmenter
from ad_pipeline.methods.psad.seed_bank import BANK_FILE, SeedBankConfig, seed_bank_scores
from ad_pipeline.segmentation.train import PSAD_FEWSHOT, SegTrainConfig


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny PSAD (hcp, coreset patch bank = a saved tiny PatchCore) on 40×30 images: 4 train, 3 test."""
    tmp = tmp_path_factory.mktemp("psad")
    rng = np.random.default_rng(0)
    paths, masks = [], []
    for i in range(7):
        img = rng.integers(0, 40, (30, 40, 3), dtype=np.uint8)
        m = np.zeros((30, 40), np.uint8)
        w = 12 + (4 if i == 6 else 0)  # the last test image has a longer part
        img[6:18, 3 + i:3 + i + w] = (220 - 8 * i, 40, 40 + 8 * i)
        m[6:18, 3 + i:3 + i + w] = 1
        img[20:26, 26 - i:36 - i], m[20:26, 26 - i:36 - i] = (40, 200 - 10 * i, 40), 2
        paths.append(tmp / f"{i}.png")
        Image.fromarray(img).save(paths[-1])
        masks.append(m)
    train, test = paths[:4], paths[4:]
    pc_cfg = PatchCoreConfig(backbone="resnet18", resize=40, image_size=32, pretrain_embed_dim=48,
                             target_embed_dim=40, coreset_ratio=0.5, num_neighbors=2, gaussian_sigma=1.0)
    ctx = RunContext(seed=0, pretrained="false", progress=False,
                     upstream_dirs={"part_segmenter": tmp / "seg", "patchcore": tmp / "pc"})
    pc = PatchCore(pc_cfg, ctx)
    pc.fit(train, [])
    pc.save(tmp / "pc")
    write_json(tmp / "pc" / "meta.json", {"params": pc_cfg.model_dump()})  # as run_method writes it
    cfg = PSADConfig(image_size=32, num_classes=3, segmenter_encoder="resnet18", feature_encoder="resnet18",
                     second_stage=False, patch_bank="coreset",
                     segmenter=SegTrainConfig(**(PSAD_FEWSHOT | {"epochs": 30, "sup_only_epochs": 30, "batch_size": 4,
                                                                 "epoch_length": "supervised"})))
    seg, _ = fit_part_segmenter(train, masks[:4], [], cfg, ctx)  # enough to segment: h and c see parts
    save_part_segmenter(seg, tmp / "seg", cfg)
    method = PSAD(cfg, ctx)
    method.patch_scores = {str(p): float(s) for p, s in zip(train, pc.train_loo_scores())}
    method.patch_scores |= {str(p): float(s) for p, s in zip(test, pc.score(test).scores)}
    method.fit(train, [])
    method.save(tmp / "psad")
    return {"tmp": tmp, "cfg": cfg, "ctx": ctx, "method": method, "train": train, "test": test,
            "pc_maps": pc.score(test).maps}


def test_graph_equals_psad_score(fitted):
    want = fitted["method"].score(fitted["test"])
    assert min(v.min() for v in want.extras.values()) > 0.1  # every bank scores: each check below can fail
    inference = inference_module("psad", fitted["tmp"] / "psad", fitted["cfg"], fitted["ctx"])
    assert inference.inputs == (Geometry(32, pad_square=True, resample="bicubic"), Geometry(40, 32))
    maps, scores = run_images(torch_runner(inference.module), fitted["test"], inputs=inference.inputs)
    np.testing.assert_allclose(scores, want.scores, rtol=1e-5, atol=0)  # h + c + p (c dominates two images)
    assert max_abs_diff(maps, fitted["pc_maps"]) <= 1e-5  # PSAD's map is its patch bank's PatchCore map
    for k in "hcp":  # each bank's scaled distance alone (the total above is dominated by c)
        one = inference_module("psad", fitted["tmp"] / "psad", fitted["cfg"].model_copy(update={"memory_type": k}),
                               fitted["ctx"])
        assert len(one.inputs) == (2 if k == "p" else 1)
        maps, term = run_images(torch_runner(one.module), fitted["test"], inputs=one.inputs)
        if k != "p":  # no patch bank: one input, an all-zero map at the segmenter's size
            np.testing.assert_allclose(term, want.extras[k], rtol=1e-5, atol=0)
            assert maps.shape == (3, 32, 32) and not maps.any()
    # p: patchcore@'s own graph, adaptively scaled. That graph's float32 kNN block (‖q‖² + ‖m‖² − 2qᵀm,
    # faiss's formula) is PatchCore's, within 2e-5 relative of PatchCore.score on this tiny random bank
    _, pc_scores = run_images(torch_runner(patchcore_inference(fitted["ctx"]).module), fitted["test"], 40, 32)
    p_max = fitted["method"].state["p_ref"].max().item()
    np.testing.assert_allclose(term, pc_scores / (p_max + 1e-10), rtol=1e-6, atol=0)
    np.testing.assert_allclose(term, want.extras["p"], rtol=5e-5, atol=0)


def test_graph_exports_and_predict_runs_it(fitted, tmp_path):
    from stages.predict import run_exported

    inference = inference_module("psad", fitted["tmp"] / "psad", fitted["cfg"], fitted["ctx"])
    test = fitted["test"]
    files = export_formats(inference.module, inference.load(test[:1]), tmp_path, installed_formats())
    x = tuple(t.numpy() for t in inference.load(test))
    want_map, want_score = torch_runner(inference.module)(*x)
    for path in files.values():  # the export stage's tolerance, per image
        got_map, got_score = load_runner(path, threads=1)(*x)
        np.testing.assert_allclose(got_score, want_score, rtol=1e-4, atol=1e-4)
        assert max_rel_diff(got_map, want_map) <= 1e-4
    info = {"method": "psad", **inference.geometry(), "decision": {}}
    (tmp_path / "model.json").write_text(json.dumps(info))
    assert geometries(info) == inference.inputs
    summary = run_exported(files["onnx"], test, tmp_path / "out")
    assert summary["images"] == 3
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([r["score"] for r in lines], want_score, rtol=1e-4)


def test_full_patch_bank_is_not_exportable(fitted):
    cfg = fitted["cfg"].model_copy(update={"patch_bank": "full"})
    with pytest.raises(NotExportable, match=r"patch_bank: full\) is fitted inside psad@(.|\n)*fix: .*patch_bank: seed"):
        inference_module("psad", fitted["tmp"] / "psad", cfg, fitted["ctx"])


def test_export_stage_lists_a_configuration_without_graph(tmp_path, monkeypatch):
    """export@ on mvtec_loco (psad's patch_bank: full): no row, no folder, the reason under ``unsupported``."""
    from types import SimpleNamespace

    import stages.export as stage

    def refuse(*_):
        raise NotExportable("PSAD's full patch bank is not saved", fix="use patch_bank: coreset")

    monkeypatch.setattr(stage, "load_inference", refuse)
    rows, reason = stage.export_category(None, "psad", "mvtec_loco", SimpleNamespace(category="tray"),
                                         tmp_path / "psad" / "tray", ["onnx"])
    assert (rows, reason) == ([], "NotExportable: PSAD's full patch bank is not saved")
    assert not (tmp_path / "psad").exists()


@pytest.fixture(scope="module")
def seed_fitted(fitted):
    """The same PSAD with the seed's PatchCore as its patch bank (kept by psad@ with save_bank)."""
    cfg = fitted["cfg"].model_copy(update={"patch_bank": "seed", "seed_bank": SeedBankConfig(
        backbone="resnet18", image_size=24, num_neighbors=3, save_bank=True)})
    method = PSAD(cfg, fitted["ctx"])
    method.patch_scores, _, method.seed_bank = seed_bank_scores(cfg.seed_bank, cfg.image_size, cfg.preprocess,
                                                                fitted["ctx"], fitted["train"], [fitted["test"]])
    method.fit(fitted["train"], [])
    method.save(fitted["tmp"] / "psad_seed")
    return cfg, method


def test_seed_patch_bank_graph_equals_psad_score_and_exports(seed_fitted, fitted, tmp_path):
    cfg, method = seed_fitted
    want = method.score(fitted["test"])
    inference = inference_module("psad", fitted["tmp"] / "psad_seed", cfg, fitted["ctx"])
    assert inference.inputs[1] == Geometry(32, pad_square=True, resample="bicubic", then_resize=24)
    x = inference.load(fitted["test"])
    assert x[1].shape == (3, 3, 24, 24)
    maps, scores = run_images(torch_runner(inference.module), fitted["test"], inputs=inference.inputs)
    # The p term's float32 distances: both the graph and the seed's cdist form ‖q‖² + ‖m‖² − 2qᵀm, and
    # on these random-init features ‖q‖² is ~3000× the nearest d², so their different matmul shapes
    # leave ~1e-4 relative cancellation noise (the graph's and cdist's own, not a formula difference)
    np.testing.assert_allclose(scores, want.scores, rtol=2e-4, atol=0)
    assert maps.shape == (3, 3, 3) and maps.min() > 0  # the seed's patch map: nearest distance / 10 per patch
    p_only = inference_module("psad", fitted["tmp"] / "psad_seed", cfg.model_copy(update={"memory_type": "p"}),
                              fitted["ctx"])
    _, term = run_images(torch_runner(p_only.module), fitted["test"], inputs=p_only.inputs)
    assert want.extras["p"].min() > 0.1  # the patch term scores: the check can fail
    np.testing.assert_allclose(term, want.extras["p"], rtol=2e-4, atol=0)
    files = export_formats(inference.module, inference.load(fitted["test"][:1]), tmp_path, installed_formats())
    want_map, want_score = torch_runner(inference.module)(*(t.numpy() for t in x))
    for path in files.values():
        got_map, got_score = load_runner(path, threads=1)(*(t.numpy() for t in x))
        np.testing.assert_allclose(got_score, want_score, rtol=1e-4, atol=1e-4)
        assert max_rel_diff(got_map, want_map) <= 1e-4


def test_seed_patch_bank_without_the_saved_bank_is_not_exportable(seed_fitted, fitted, tmp_path):
    cfg, method = seed_fitted
    method.save(tmp_path / "psad")
    (tmp_path / "psad" / BANK_FILE).unlink()
    with pytest.raises(NotExportable, match=r"did not keep its seed patch bank(.|\n)*fix: set psad.seed_bank.save_bank"):
        inference_module("psad", tmp_path / "psad", cfg, fitted["ctx"])

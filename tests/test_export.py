"""Exports: the format round trip, parity checks, the method inference graphs against their
methods (EfficientAD, PUAD, PatchCore, UniAD) and the PatchCore blur against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from efficientad_tiny import fit_tiny, tiny_dataset
from scipy.ndimage import gaussian_filter
from torch import nn

from ad_pipeline.errors import UserError
from ad_pipeline.export.compare import ParityError, check_parity, max_abs_diff, run_images, torch_runner
from ad_pipeline.export.formats import export_formats, installed_formats, load_runner, onnx_session
from ad_pipeline.export.inference import NotExportable, inference_module, load_inputs
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.registry import INFERENCE, METHODS, NOT_EXPORTABLE

FORMATS = installed_formats()


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv(x)).mean(1)
        return y, y.amax(dim=(1, 2))


def test_every_format_round_trips_with_a_dynamic_batch(tmp_path):
    assert FORMATS == ["onnx", "openvino"]  # both are pinned in requirements.txt
    torch.manual_seed(0)
    module = _TwoHeads().eval()
    files = export_formats(module, torch.rand(1, 3, 16, 16), tmp_path, FORMATS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin", "model.onnx", "model.xml"]
    x = torch.rand(5, 3, 16, 16).numpy()
    for path in files.values():
        assert check_parity(load_runner(path, threads=1), torch_runner(module), x) <= 1e-5
    assert [i.shape[0] for i in onnx_session(files["onnx"]).get_inputs()] == ["batch"]


def test_parity_failure_raises(tmp_path):
    torch.manual_seed(0)
    files = export_formats(_TwoHeads(), torch.rand(1, 3, 8, 8), tmp_path, ["onnx"])
    with pytest.raises(ParityError, match="differ"):
        check_parity(load_runner(files["onnx"]), torch_runner(_TwoHeads()), torch.rand(2, 3, 8, 8).numpy())


def test_load_runner_refuses_unknown_files(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"model.pt: not an exported model file(.|\n)*\.onnx, \.xml"):
        load_runner(tmp_path / "model.pt")
    with pytest.raises(UserError, match="no such exported model"):
        load_runner(tmp_path / "missing.onnx")


def test_registry_says_why_a_method_has_no_export(tmp_path):
    assert set(INFERENCE) | set(NOT_EXPORTABLE) == set(METHODS) and not set(INFERENCE) & set(NOT_EXPORTABLE)
    with pytest.raises(NotExportable, match="musc has no export: transductive"):
        inference_module("musc", tmp_path, None, RunContext())


def test_efficientad_and_puad_graphs_match_their_methods_and_exports(tmp_path):
    from ad_pipeline.methods.puad import PUAD, PUADConfig

    data = tiny_dataset(tmp_path)
    method = fit_tiny(tmp_path, data, steps=1)
    method.save(tmp_path / "effad")
    images = data["good"] + data["bad"]
    want = method.score(images)
    inference = inference_module("efficientad", tmp_path / "effad", method.cfg, method.ctx)
    maps, scores = run_images(torch_runner(inference.module), images, inference.resize)
    assert max_abs_diff(maps, want.maps) <= 1e-5 and max_abs_diff(scores, want.scores) <= 1e-5

    ctx = RunContext(seed=0, progress=False, upstream_dirs={"efficientad": tmp_path / "effad"})
    puad = PUAD(PUADConfig(), ctx)
    puad.fit(data["train"], data["validation"])
    puad.save(tmp_path / "puad")
    p_inf = inference_module("puad", tmp_path / "puad", PUADConfig(), ctx)
    p_maps, p_scores = run_images(torch_runner(p_inf.module), images, p_inf.resize)
    np.testing.assert_allclose(p_scores, puad.score(images).scores, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(p_maps, maps)  # PUAD's map is EfficientAD's

    files = export_formats(inference.module, load_inputs(images[:1], inference.resize), tmp_path / "x", FORMATS)
    x = load_inputs(images, inference.resize).numpy()
    for path in files.values():
        assert check_parity(load_runner(path, threads=1), torch_runner(inference.module), x) <= 1e-4


def test_patchcore_blur_is_scipys_gaussian_filter():
    from ad_pipeline.methods.patchcore.inference import GaussianBlur

    maps = np.random.default_rng(0).random((2, 40, 40), dtype=np.float32)
    got = GaussianBlur(4.0, 40)(torch.from_numpy(maps)[:, None])[:, 0].numpy()
    np.testing.assert_allclose(got, gaussian_filter(maps, sigma=(0, 4.0, 4.0)), atol=1e-6)
    with pytest.raises(NotExportable, match="radius 17 exceeds the map size 16"):
        GaussianBlur(4.2, 16)


def test_patchcore_graph_matches_the_method_and_refuses_reweight(tmp_path):
    from PIL import Image

    from ad_pipeline.methods.patchcore import PatchCore, PatchCoreConfig

    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 255, (72, 72, 3), dtype=np.uint8)).save(paths[-1])
    cfg = PatchCoreConfig(backbone="resnet18", resize=72, image_size=64, pretrain_embed_dim=48, target_embed_dim=40,
                          coreset_ratio=0.25, num_neighbors=3, gaussian_sigma=2.0)
    ctx = RunContext(seed=0, pretrained="false", progress=False)
    method = PatchCore(cfg, ctx)
    method.fit(paths[:5], [])
    method.save(tmp_path / "pc")
    want = method.score(paths[5:])
    inference = inference_module("patchcore", tmp_path / "pc", cfg, ctx)
    assert (inference.resize, inference.crop) == (72, 64)
    maps, scores = run_images(torch_runner(inference.module), paths[5:], inference.resize, inference.crop)
    np.testing.assert_allclose(maps, want.maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, want.scores, rtol=1e-5, atol=1e-6)
    with pytest.raises(NotExportable, match="re-weighted"):
        inference_module("patchcore", tmp_path / "pc", cfg.model_copy(update={"reweight": True}), ctx)


@pytest.mark.slow  # trains a tiny UniAD and exports it twice: ~45 s on the loaded 2-core machine
def test_uniad_graph_matches_the_method_and_exports(tmp_path):
    from PIL import Image

    from ad_pipeline.methods.uniad.config import Config
    from ad_pipeline.methods.uniad.method import UniAD

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"{i}.png")
        img = np.clip(120 + rng.normal(0, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(paths[-1])
    cfg = Config(image_size=64, hidden=16, heads=2, ffn=32, enc_layers=1, dec_layers=1, neighbor_size=3,
                 batch_size=4, epochs=1, checkpoint_every=1, num_workers=0)
    ctx = RunContext(seed=3, pretrained="false", progress=False)
    method = UniAD(cfg, ctx)
    method.fit(paths[:4], [])
    method.save(tmp_path / "uniad")
    want = method.score(paths[4:])
    inference = inference_module("uniad", tmp_path / "uniad", cfg, ctx)
    maps, scores = run_images(torch_runner(inference.module), paths[4:], inference.resize)
    assert max_abs_diff(maps, want.maps) <= 1e-5 and max_abs_diff(scores, want.scores) <= 1e-5
    files = export_formats(inference.module, load_inputs(paths[:1], 64), tmp_path / "x", FORMATS)
    x = load_inputs(paths[4:], 64).numpy()
    for path in files.values():
        assert check_parity(load_runner(path, threads=1), torch_runner(inference.module), x) <= 1e-4


def test_export_stage_refuses_rows_outside_the_tolerances():
    from stages.export import check_rows

    auroc = {"image_auroc_logical": 80.0, "image_auroc_mean": 75.0}
    ok = {"method": "csad", "category": "tray", "format": "onnx", "auroc": auroc, "pytorch_auroc": auroc,
          "max_rel_diff_map": 1e-5, "max_rel_diff_score": 1e-5}
    check_rows([ok, ok | {"format": "pytorch", "max_rel_diff_map": None, "max_rel_diff_score": 1.0}])
    for bad in ({"max_rel_diff_map": 2e-4}, {"max_rel_diff_score": 2e-4},
                {"auroc": auroc | {"image_auroc_mean": 75.2}}):
        with pytest.raises(ParityError, match="csad/tray/openvino"):
            check_rows([ok, ok | {"format": "openvino"} | bad])


class _AntialiasedResize(nn.Module):
    """A ViT's position-embedding resampling: bicubic with antialias has no ONNX form (opset 17)."""

    def forward(self, x):
        small = nn.functional.interpolate(x, scale_factor=0.5, mode="bicubic", antialias=True)
        return small, small.flatten(1).amax(1)


def test_an_unconvertible_graph_is_the_error_the_export_stage_records(tmp_path):
    """export@ keeps such a model's PyTorch row and lists the exporter's reason (stages/export.py):
    this is the exception class it catches."""
    from ad_pipeline.report.render import export_notes

    with pytest.raises(torch.onnx.errors.OnnxExporterError, match="bicubic"):
        export_formats(_AntialiasedResize(), torch.rand(1, 3, 32, 32), tmp_path, ["onnx"])
    table = {"rows": [], "unsupported": {"patchcore/disc": "UnsupportedOperatorError: aten::_upsample_bicubic2d_aa"}}
    assert export_notes({"synthetic_ad": table}) == [
        "synthetic_ad: patchcore/disc has no exportable graph (UnsupportedOperatorError: aten::_upsample_bicubic2d_aa)"]


def test_a_runtime_that_refuses_a_file_on_this_cpu_is_listed_not_fatal(tmp_path, monkeypatch):
    """OpenVINO's CPU plugin under the SSE4 numerics level raises "bad combination": export@ keeps
    the other formats' rows and records the reason (stages/export.py load_runners)."""
    import stages.export as stage

    def load(path, threads):
        if path.suffix == ".xml":
            raise RuntimeError("Exception from src/inference/src/dev/plugin.cpp:59:\nbad combination")
        return f"runner of {path.name}"

    monkeypatch.setattr(stage, "load_runner", load)
    runners, refused = stage.load_runners({"onnx": tmp_path / "model.onnx", "openvino": tmp_path / "model.xml"})
    assert runners == {"onnx": "runner of model.onnx"}
    assert len(refused) == 1 and refused[0].startswith("openvino runtime cannot load it on this CPU")
    assert refused[0].endswith("bad combination")

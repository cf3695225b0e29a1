"""ONNX export and onnxruntime parity (generic helper and the EfficientAD graph)."""

from __future__ import annotations

import pytest
import torch
from efficientad_tiny import fit_tiny, tiny_dataset
from torch import nn

from ad_pipeline.export import ParityError, check_parity, export_efficientad, export_onnx, onnx_session



class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        return y, y.amax(dim=(1, 2, 3))


def test_export_with_dynamic_batch_has_parity(tmp_path):
    torch.manual_seed(0)
    module = _TwoHeads()
    path = export_onnx(module, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx", input_names=["x"],
                       output_names=["y", "s"])
    assert check_parity(module, path, torch.randn(5, 3, 16, 16)) <= 1e-5
    assert [i.shape[0] for i in onnx_session(path).get_inputs()] == ["batch"]


def test_parity_failure_raises(tmp_path):
    torch.manual_seed(0)
    path = export_onnx(_TwoHeads(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", input_names=["x"],
                       output_names=["y", "s"])
    with pytest.raises(ParityError, match="differ"):
        check_parity(_TwoHeads(), path, torch.randn(2, 3, 8, 8))


def test_export_efficientad_parity(tmp_path):
    data = tiny_dataset(tmp_path)
    method = fit_tiny(tmp_path, data, steps=1)
    method.save(tmp_path / "model")
    report = export_efficientad(tmp_path / "model", tmp_path / "effad.onnx", data["good"] + data["bad"])
    assert report["max_abs_diff"] <= 1e-4 and report["n_images"] == 4
    session = onnx_session(report["onnx_path"])
    assert [o.name for o in session.get_outputs()] == ["anomaly_map", "score"]

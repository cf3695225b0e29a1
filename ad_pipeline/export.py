"""ONNX export and onnxruntime parity checks, shared by every method that exports a graph.

Uses torch's TorchScript-based exporter (``dynamo=False``): the torch.export-based default
needs the ``onnxscript`` package, which the project does not depend on.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ad_pipeline.io import atomic_path


class ParityError(RuntimeError):
    """The ONNX graph's outputs differ from the torch module's by more than the tolerance."""


def _as_tuple(x: torch.Tensor | Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return (x,) if isinstance(x, torch.Tensor) else tuple(x)


def export_onnx(module: nn.Module, example: torch.Tensor | Sequence[torch.Tensor], path: str | Path, *,
                input_names: Sequence[str], output_names: Sequence[str], dynamic_batch: bool = True,
                opset: int = 17) -> Path:
    """Export ``module`` (put in eval mode) traced on ``example`` to ``path`` (atomic write).

    ``dynamic_batch``: axis 0 of every input and output is symbolic ("batch").
    """
    module = module.eval()
    axes = {name: {0: "batch"} for name in (*input_names, *output_names)} if dynamic_batch else None
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announces its deprecation
        warnings.filterwarnings("ignore", message="Constant folding")  # harmless notes on un-foldable slices
        torch.onnx.export(module, _as_tuple(example), str(tmp), dynamo=False, input_names=list(input_names),
                          output_names=list(output_names), dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
    return path


def onnx_session(onnx_path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU InferenceSession (``threads``: intra-op threads, None = runtime default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_parity(module: nn.Module, onnx_path: str | Path, inputs: torch.Tensor | Sequence[torch.Tensor],
                 atol: float = 1e-4) -> float:
    """Max |torch − onnxruntime| over all outputs for ``inputs``; ParityError if it exceeds ``atol``."""
    inputs = _as_tuple(inputs)
    session = onnx_session(onnx_path)
    feeds = {meta.name: x.cpu().numpy() for meta, x in zip(session.get_inputs(), inputs)}
    got = session.run(None, feeds)
    want = [t.cpu().numpy() for t in _as_tuple(module.eval()(*inputs))]
    if len(got) != len(want):
        raise ParityError(f"ONNX graph has {len(got)} outputs, the module {len(want)}")
    diff = 0.0
    for g, w in zip(got, want):
        if g.shape != w.shape:
            raise ParityError(f"output shape mismatch: onnx {g.shape} vs torch {w.shape}")
        diff = max(diff, float(np.max(np.abs(g.astype(np.float64) - w.astype(np.float64)), initial=0.0)))
    if not diff <= atol:
        raise ParityError(f"ONNX outputs differ from torch by {diff:.3g} > atol {atol:g} ({onnx_path})")
    return diff


def export_efficientad(model_dir: str | Path, out_path: str | Path, images: Sequence[Path], *,
                       atol: float = 1e-4, opset: int = 17, batch_size: int = 8) -> dict[str, Any]:
    """Export a trained EfficientAD (normalised image [B,3,S,S] → map [B,1,S,S], score [B]) and
    check parity on ``images`` in batches of ``batch_size``.

    Returns {onnx_path, max_abs_diff, n_images, model_size, image_size, opset}.
    """
    from ad_pipeline.methods.efficientad.data import load_unit, normalize
    from ad_pipeline.methods.efficientad.method import load_model

    if not images:
        raise ValueError("export_efficientad needs at least one image for the parity check")
    model, info = load_model(Path(model_dir))
    images = list(images)
    batches = (normalize(load_unit(images[i:i + batch_size], info["image_size"]))
               for i in range(0, len(images), batch_size))
    first = next(batches)
    path = export_onnx(model, first[:1], out_path, input_names=["image"], output_names=["anomaly_map", "score"],
                       opset=opset)
    diff = max(check_parity(model, path, x, atol=atol) for x in itertools.chain([first], batches))
    return {"onnx_path": str(path), "max_abs_diff": diff, "n_images": len(images), "model_size": info["model_size"],
            "image_size": info["image_size"], "opset": opset}

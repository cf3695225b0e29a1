"""Runtime formats: write an ``Inference`` module as a file, and run such a file on CPU.

ONNX is written by torch's TorchScript-based exporter (``dynamo=False``: the torch.export-based
default needs ``onnxscript``, which the project does not depend on), opset 17, dynamic batch.
OpenVINO IR (``.xml`` + ``.bin``) is read from that ONNX file and compiled for CPU in f32
(OpenVINO's CPU default may run bf16 on CPUs that have it, which breaks parity).
TFLite/LiteRT and TensorRT are not available here (see README "Exports").
Every runner maps image float32 [B,3,S,S] (one array per graph input) → (map [B,h,w], score [B])
as numpy arrays.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ad_pipeline.errors import UserError
from ad_pipeline.export.inference import INPUT_NAMES, OUTPUT_NAMES
from ad_pipeline.io import atomic_path

Runner = Callable[..., tuple[np.ndarray, np.ndarray]]  # (*inputs) -> (map, score)
OPSET = 17


def graph_input_names(n: int) -> tuple[str, ...]:
    """Names of a graph's ``n`` inputs: "image", then "image_1", "image_2", …"""
    return INPUT_NAMES + tuple(f"{INPUT_NAMES[0]}_{i}" for i in range(1, n))


def export_onnx(module: nn.Module, example: torch.Tensor | tuple[torch.Tensor, ...], path: str | Path, *,
                input_names=None, output_names=OUTPUT_NAMES, dynamic_batch: bool = True,
                opset: int = OPSET) -> Path:
    """Export ``module`` (put in eval mode) traced on ``example`` (one tensor per input) to ``path``
    (atomic write). ``input_names``: default ``graph_input_names(len(example))``.

    ``dynamic_batch``: axis 0 of every input and output is symbolic ("batch")."""
    module = module.eval()
    example = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    input_names = input_names or graph_input_names(len(example))
    axes = {name: {0: "batch"} for name in (*input_names, *output_names)} if dynamic_batch else None
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter announces its deprecation
        warnings.filterwarnings("ignore", message="Constant folding")  # harmless notes on un-foldable slices
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(module, example, str(tmp), dynamo=False, input_names=list(input_names),
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


def _onnx_runner(path: Path, threads: int | None) -> Runner:
    session = onnx_session(path, threads)
    names = [i.name for i in session.get_inputs()]

    def run(*xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amap, score = session.run(None, {n: np.ascontiguousarray(x, dtype=np.float32) for n, x in zip(names, xs)})
        return amap, score

    return run


def _to_openvino(onnx_path: Path, path: Path) -> Path:
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))  # the C++ ONNX frontend (convert_model would add telemetry)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        ov.save_model(model, str(Path(tmp) / path.name), compress_to_fp16=False)  # writes <stem>.xml + <stem>.bin
        os.replace(Path(tmp) / path.with_suffix(".bin").name, path.with_suffix(".bin"))
        os.replace(Path(tmp) / path.name, path)
    return path


def _openvino_runner(path: Path, threads: int | None) -> Runner:
    import openvino as ov

    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    compiled = ov.Core().compile_model(str(path), "CPU", config)
    outputs = [compiled.output(name) for name in OUTPUT_NAMES]

    def run(*xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = compiled([np.ascontiguousarray(x, dtype=np.float32) for x in xs])
        return result[outputs[0]], result[outputs[1]]

    return run


@dataclass(frozen=True)
class Format:
    """One runtime: file ``suffix``, the Python package that runs it, how to write it from the
    ONNX file (None: the ONNX file itself) and how to load it as a ``Runner``."""

    name: str
    suffix: str
    package: str
    convert: Callable[[Path, Path], Path] | None
    load: Callable[[Path, int | None], Runner]

    def available(self) -> bool:
        return importlib.util.find_spec(self.package) is not None


FORMATS: dict[str, Format] = {
    "onnx": Format("onnx", ".onnx", "onnxruntime", None, _onnx_runner),
    "openvino": Format("openvino", ".xml", "openvino", _to_openvino, _openvino_runner),
}


def installed_formats() -> list[str]:
    return [name for name, fmt in FORMATS.items() if fmt.available()]


def export_formats(module: nn.Module, example: torch.Tensor, out_dir: Path, formats: list[str],
                   stem: str = "model") -> dict[str, Path]:
    """Write ``module`` as ``out_dir/<stem><suffix>`` in each of ``formats``. The ONNX file is always
    written (first: the others are converted from it). Returns {format: path} for ``formats``."""
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise UserError(f"unknown export format(s) {unknown}", fix=f"use one of {', '.join(FORMATS)}")
    onnx_path = export_onnx(module, example, Path(out_dir) / f"{stem}.onnx")
    paths = {"onnx": onnx_path}
    for name in formats:
        fmt = FORMATS[name]
        if fmt.convert is not None:
            paths[name] = fmt.convert(onnx_path, Path(out_dir) / f"{stem}{fmt.suffix}")
    return {name: paths[name] for name in formats}


def format_of(path: Path) -> Format:
    """The format of an exported file, by suffix; UserError for anything else or a missing runtime."""
    by_suffix = {fmt.suffix: fmt for fmt in FORMATS.values()}
    fmt = by_suffix.get(Path(path).suffix.lower())
    if fmt is None:
        raise UserError("not an exported model file", path=path,
                        fix=f"pass a file ending in {', '.join(by_suffix)} written by the export stage")
    if not fmt.available():
        raise UserError(f"{fmt.name} models need the {fmt.package!r} package, which is not installed", path=path,
                        fix=f"pip install {fmt.package} (see requirements.txt for the pinned version)")
    return fmt


def load_runner(path: str | Path, threads: int | None = None) -> Runner:
    """A CPU runner of the exported file ``path`` (format from its suffix)."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such exported model", path=path, fix="run the export stage (dvc repro export@<dataset>)")
    return format_of(path).load(path, threads)

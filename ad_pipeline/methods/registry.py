"""The one explicit registry of methods: name -> implementing class (imported lazily)."""

from __future__ import annotations

import difflib
import importlib

from pathlib import Path

from ad_pipeline.errors import UserError
from ad_pipeline.export.inference import Inference, NotExportable
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext

# name -> "module:Class". Methods with their own multi-stage recipe (UniAD, CSAD, PSAD) are
# listed too: their stages drive them, but the names are validated here.
METHODS: dict[str, str] = {
    "patchcore": "ad_pipeline.methods.patchcore.method:PatchCore",
    "musc": "ad_pipeline.methods.musc.method:MuSc",
    "efficientad": "ad_pipeline.methods.efficientad.method:EfficientAD",
    "puad": "ad_pipeline.methods.puad:PUAD",
    "uniad": "ad_pipeline.methods.uniad.method:UniAD",
    "csad": "ad_pipeline.methods.csad.method:CSAD",
    "psad": "ad_pipeline.methods.psad.method:PSAD",
}


# name -> "module:function" building the method's single-image inference graph
# (``build(model_dir, cfg, ctx) -> ad_pipeline.export.inference.Inference``), used by every exporter.
INFERENCE: dict[str, str] = {
    "patchcore": "ad_pipeline.methods.patchcore.inference:build",
    "efficientad": "ad_pipeline.methods.efficientad.inference:build",
    "puad": "ad_pipeline.methods.puad_inference:build",
    "csad": "ad_pipeline.methods.csad.inference:build",
    "uniad": "ad_pipeline.methods.uniad.inference:build",
}
# Why the other methods have no such graph.
NOT_EXPORTABLE: dict[str, str] = {
    "musc": "transductive: it scores each test image against the other test images of its batch, "
            "so there is no single-image model to export",
    "psad": "not yet: its inference graph (part segmenter, three banks, adaptive scaling) is not written",
}


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> type[AnomalyMethod]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(method_names())}")
    return _resolve(METHODS[name])


def exportable_methods() -> list[str]:
    return sorted(INFERENCE)


def inference_module(name: str, model_dir: Path, cfg: MethodConfig, ctx: RunContext) -> Inference:
    """The inference graph of the model fitted in ``model_dir`` (see ``INFERENCE``); UserError
    naming the reason for a method that has none."""
    get_method(name)
    if name not in INFERENCE:
        raise NotExportable(f"{name} has no export: {NOT_EXPORTABLE[name]}",
                            fix=f"exportable methods: {', '.join(exportable_methods())}")
    return _resolve(INFERENCE[name])(Path(model_dir), cfg, ctx)


def _resolve(target: str):
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)

"""The one explicit registry of methods: name -> implementing class (imported lazily)."""

from __future__ import annotations

import difflib
import importlib

from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import AnomalyMethod

# name -> "module:Class". Methods with their own multi-stage recipe (UniAD, CSAD, PSAD) are
# listed too: their stages drive them, but the names are validated here.
METHODS: dict[str, str] = {
    "patchcore": "ad_pipeline.methods.patchcore.method:PatchCore",
    "musc": "ad_pipeline.methods.musc.method:MuSc",
    "efficientad": "ad_pipeline.methods.efficientad.method:EfficientAD",
    "efficientad_m": "ad_pipeline.methods.efficientad.method:EfficientADM",  # EfficientAD-M: the medium PDN
    "puad": "ad_pipeline.methods.puad:PUAD",
    "puad_m": "ad_pipeline.methods.puad:PUADM",  # PUAD on EfficientAD-M
    "uniad": "ad_pipeline.methods.uniad.method:UniAD",
    "csad": "ad_pipeline.methods.csad.method:CSAD",
    "psad": "ad_pipeline.methods.psad.method:PSAD",
}


# name -> "module:function" building the method's single-image inference graph
# (``build(model_dir, cfg, ctx) -> ad_pipeline.export.inference.Inference``), used by every exporter
# through ``ad_pipeline.export.inference.inference_module``.
INFERENCE: dict[str, str] = {
    "patchcore": "ad_pipeline.methods.patchcore.inference:build",
    "efficientad": "ad_pipeline.methods.efficientad.inference:build",
    "efficientad_m": "ad_pipeline.methods.efficientad.inference:build",
    "puad": "ad_pipeline.methods.puad_inference:build",
    "puad_m": "ad_pipeline.methods.puad_inference:build_m",
    "csad": "ad_pipeline.methods.csad.inference:build",
    "uniad": "ad_pipeline.methods.uniad.inference:build",
    "psad": "ad_pipeline.methods.psad.inference:build",
}
# Why the other methods have no such graph.
NOT_EXPORTABLE: dict[str, str] = {
    "musc": "transductive: it scores each test image against the other test images of its batch, "
            "so there is no single-image model to export",
}


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> type[AnomalyMethod]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(method_names())}")
    return resolve(METHODS[name])


def exportable_methods() -> list[str]:
    return sorted(INFERENCE)


def resolve(target: str):
    """The object named by ``"module:attribute"`` (imported on demand)."""
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)

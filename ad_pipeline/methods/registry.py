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
    "puad": "ad_pipeline.methods.puad:PUAD",
    "uniad": "ad_pipeline.methods.uniad.method:UniAD",
    "csad": "ad_pipeline.methods.csad.method:CSAD",
    "psad": "ad_pipeline.methods.psad.method:PSAD",
}


def method_names() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> type[AnomalyMethod]:
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(method_names())}")
    module, cls = METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)

"""EfficientAD's saved model, written by EfficientAD and read by it and by PUAD (which scores
with a fitted EfficientAD, never retraining it): ``efficientad.pth``, the
:class:`EfficientADModel` state dict (networks, teacher statistics, map quantiles), and
``efficientad.json``, its geometry (model_size, image_size, channels, width_divisor, map_rule)
plus how it was fitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ad_pipeline.components.student_teacher.maps import MAP_BORDERS
from ad_pipeline.components.student_teacher.model import EfficientADModel
from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import atomic_path, file_digest, read_json, write_json

CHECKPOINT = "efficientad.pth"
CHECKPOINT_META = "efficientad.json"


def save_model(model: EfficientADModel, info: dict[str, Any], model_dir: Path) -> None:
    """Write both files atomically; ``info`` must hold the geometry keys (see the module docstring)."""
    model_dir = Path(model_dir)
    with atomic_path(model_dir / CHECKPOINT) as tmp:
        torch.save(model.state_dict(), tmp)
    write_json(model_dir / CHECKPOINT_META, info)


def load_model(model_dir: Path) -> tuple[EfficientADModel, dict[str, Any]]:
    """(model in eval mode, its json info) from a directory written by :func:`save_model`."""
    model_dir = Path(model_dir)
    info = read_json(model_dir / CHECKPOINT_META)
    model = EfficientADModel(info["model_size"], info["image_size"], info["channels"], info["width_divisor"],
                             map_border=MAP_BORDERS[info.get("map_rule", "nelson")])
    model.load_state_dict(torch.load(_checkpoint(model_dir), map_location="cpu", weights_only=True))
    return model.eval(), info


def checkpoint_digest(model_dir: Path) -> str:
    """sha256 of the state dict file: identifies the fitted model a dependent (PUAD) was fitted on."""
    return file_digest(_checkpoint(Path(model_dir)))


def _checkpoint(model_dir: Path) -> Path:
    path = model_dir / CHECKPOINT
    if not path.is_file():
        raise ArtifactError("EfficientAD checkpoint missing", path=path, fix="re-run the efficientad stage")
    return path

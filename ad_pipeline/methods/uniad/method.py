"""UniAD behind the per-category ``AnomalyMethod`` interface (the "separate" setting), plus the
model file format shared with the unified ``uniad@<dataset>`` stage."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import atomic_path
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext, Scores
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.score import score_uniad
from ad_pipeline.methods.uniad.train import train_unified

MODEL_FILE = "model.pth"


def save_model_state(path: Path, state: dict[str, Tensor]) -> None:
    """Write a trained model's state dict atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_model_state(path: Path) -> dict[str, Tensor]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ArtifactError("UniAD model file not found", path=path, fix="run the uniad stage first") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ArtifactError(f"unreadable UniAD model file ({e})", path=path, fix="re-run the uniad stage") from None


class UniAD(AnomalyMethod):
    """One UniAD model per category: ``fit`` trains on that category alone (no resume: checkpoints
    go to a temporary directory; the unified stage calls ``train_unified`` with a persistent one)."""

    name = "uniad"
    Config = Config

    def __init__(self, cfg: MethodConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        self.model_state: dict[str, Tensor] | None = None
        self.train_meta: dict[str, Any] = {}

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        val_sets = {"category": list(validation)} if validation else None
        with tempfile.TemporaryDirectory(prefix="uniad-ckpt-") as tmp:
            result = train_unified({"category": list(train)}, self.cfg, self.ctx, Path(tmp), validation_sets=val_sets)
        self.model_state, self.train_meta = result.model_state, result.meta

    def score(self, images: Sequence[Path]) -> Scores:
        if self.model_state is None:
            raise RuntimeError("UniAD.score called before fit/load")
        return score_uniad(self.model_state, images, self.cfg, self.ctx)

    def save(self, model_dir: Path) -> None:
        if self.model_state is None:
            raise RuntimeError("UniAD.save called before fit")
        save_model_state(Path(model_dir) / MODEL_FILE, self.model_state)

    @classmethod
    def load(cls, model_dir: Path, cfg: MethodConfig, ctx: RunContext) -> UniAD:
        method = cls(cfg, ctx)
        method.model_state = load_model_state(Path(model_dir) / MODEL_FILE)
        return method

    def meta(self) -> dict[str, Any]:
        return {"backbone": self.cfg.backbone, **{k: v for k, v in self.train_meta.items() if k != "loss_history"}}

"""The interface every per-category method implements, and the run context handed to it.

Model code is ``torch.nn.Module``s with no I/O; a method object wraps fitting and scoring,
and ``save``/``load`` its state to a model directory. Stages do all other I/O.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict


class MethodConfig(BaseModel):
    """Base of every method's params section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


@dataclass(frozen=True)
class RunContext:
    """What a method needs to know about the run besides its own params section.

    ``backbone``: the top-level pluggable backbone name (methods with a fixed backbone ignore it).
    ``pretrained``: "auto" | "true" | "false" (see ``ad_pipeline.backbones.weights``).
    ``cache_dir``: where shared feature caches may be written (None = no cache).
    ``upstream_dirs``: model directories of the stages this method builds on, by name
    (e.g. ``{"efficientad": artifacts/<ds>/efficientad/<category>}`` for PUAD).
    """

    seed: int = 0
    device: str = "cpu"
    backbone: str = "efficientnet_lite0"
    pretrained: str = "auto"
    weights_dir: Path | None = None
    cache_dir: Path | None = None
    progress: bool = True
    dataset_format: str = "mvtec_ad"
    upstream_dirs: Mapping[str, Path] = field(default_factory=dict)


@dataclass
class Scores:
    """Image scores float32 [N] (higher = more anomalous) and maps float32 [N,h,w] or None."""

    scores: np.ndarray
    maps: np.ndarray | None
    extras: dict[str, Any] = field(default_factory=dict)


class AnomalyMethod(abc.ABC):
    """One method for one dataset category."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]
    zero_shot: ClassVar[bool] = False
    requires: ClassVar[tuple[str, ...]] = ()  # upstream stages whose model dirs it reads
    pluggable_backbone: ClassVar[bool] = False  # follows the top-level `backbone` param
    paper_backbone: ClassVar[str | None] = None  # a pluggable method's backbone in its paper
    # False: the top-level `backbone` never applies (MuSc needs a ViT; its section's `backbone` does)
    follows_top_level_backbone: ClassVar[bool] = True
    map_dtype: ClassVar[str] = "float16"  # storage dtype of its map dumps (io.write_scores)

    def __init__(self, cfg: MethodConfig, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    @abc.abstractmethod
    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        """Fit on normal images (``validation`` may be used for calibration only)."""

    @abc.abstractmethod
    def score(self, images: Sequence[Path]) -> Scores:
        """Score images; rows follow the order of ``images``."""

    def save(self, model_dir: Path) -> None:
        """Persist the fitted state so that ``load`` + ``score`` need nothing else."""

    @classmethod
    def load(cls, model_dir: Path, cfg: MethodConfig, ctx: RunContext) -> AnomalyMethod:
        raise NotImplementedError(f"{cls.__name__} cannot be loaded from a model directory")

    def meta(self) -> dict[str, Any]:
        """Extra facts for meta.json (backbone, weights mode, …)."""
        return {}

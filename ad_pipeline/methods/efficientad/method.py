"""EfficientAD as an :class:`AnomalyMethod` (name "efficientad").

Needs the ``efficientad_teacher`` stage's directory in ``ctx.upstream_dirs``. ``fit`` computes
the teacher channel statistics on the training images, trains student + autoencoder,
and takes the map quantiles on the validation images; ``save`` writes everything into the
saved model of ``components.student_teacher.checkpoint`` (one state dict + its json), so
``load`` + ``score`` need nothing else. Maps are kept at image_size × image_size (the
evaluator resizes to GT size).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from tqdm import tqdm

from ad_pipeline.components.student_teacher.autoencoder import check_image_size
from ad_pipeline.components.student_teacher.checkpoint import load_model, save_model
from ad_pipeline.components.student_teacher.data import (PenaltyImages, load_uint8, load_unit, normalize,
                                                          resolve_pretrain_images)
from ad_pipeline.components.student_teacher.maps import MAP_BORDERS, MapQuantiles, fit_quantiles, to_working_resolution
from ad_pipeline.components.student_teacher.model import EfficientADModel
from ad_pipeline.components.student_teacher.pdn import ModelSize
from ad_pipeline.components.student_teacher.train import (TORCH_QUANTILE_LIMIT, teacher_statistics,
                                                           train_student_autoencoder)
from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext, Scores
from ad_pipeline.methods.efficientad.teacher_files import load_teacher
from ad_pipeline.seed import seeded

log = logging.getLogger(__name__)

PENALTY_GRAYSCALE_P = 0.3


class EfficientADConfig(MethodConfig):
    """Defaults are the paper's settings; use tiny ``steps`` for smoke runs.

    ``map_rule``: ``"nelson"`` (default; the paper's alignment as in nelson1425/EfficientAD: the
    56² maps padded with a 4-px zero border before the resize, quantiles on the raw maps) or
    ``"puad"`` (LeapMind/PUAD's code: resized without padding, quantiles on the resized maps).
    See docs/parity.md for the effect on scores.
    """

    model_size: ModelSize = "small"
    steps: int = Field(70_000, ge=1)
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    batch_size: int = Field(1, ge=1)  # the paper's value is 1
    pretrain_images: str | None = None  # generic images for the penalty loss; null → training images (flagged)
    image_size: int = 256
    device: str | None = None  # null → the run context's device
    quantile_subsample: int = Field(TORCH_QUANTILE_LIMIT, ge=1000)  # cap on elements a quantile is taken over
    score_batch_size: int = Field(8, ge=1)
    channels: int = Field(384, ge=1)  # must match the teacher; < 384 / width_divisor > 1 only for smoke tests
    width_divisor: int = Field(1, ge=1)
    map_rule: Literal["nelson", "puad"] = "nelson"


class EfficientAD(AnomalyMethod):
    name = "efficientad"
    Config = EfficientADConfig
    requires = ("efficientad_teacher",)

    def __init__(self, cfg: EfficientADConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        check_image_size(cfg.image_size)
        self.model: EfficientADModel | None = None
        self.info: dict[str, Any] = {}
        self.losses: list[float] = []

    @property
    def device(self) -> str:
        return self.cfg.device or self.ctx.device

    @property
    def progress(self) -> bool:
        return self.ctx.progress

    def _teacher_dir(self) -> Path:
        stage = self.requires[0]
        d = self.ctx.upstream_dirs.get(stage)
        if d is None:
            raise UserError(f"EfficientAD needs the {stage} stage's output directory",
                            fix=f"run the {stage} stage and pass its dir as upstream_dirs['{stage}']")
        return Path(d)

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        cfg = self.cfg
        if not train:
            raise UserError("EfficientAD needs training images", fix="check the dataset's train/good folder")
        if not validation:
            raise UserError("EfficientAD needs validation images for map normalisation",
                            fix="use a dataset with a validation split or a train/good hold-out (prepare stage)")
        teacher = load_teacher(self._teacher_dir(), cfg.model_size)
        shape = (teacher.pdn.out_channels, teacher.pdn.width_divisor)
        if shape != (cfg.channels, cfg.width_divisor):
            raise UserError(f"the teacher has channels={shape[0]}, width_divisor={shape[1]} but the efficientad params "
                            f"ask for {cfg.channels}, {cfg.width_divisor}", path=self._teacher_dir(),
                            fix="use the same channels / width_divisor for the teacher and efficientad stages")
        penalty_paths, fallback = resolve_pretrain_images(cfg.pretrain_images, train)
        gen = torch.Generator().manual_seed(self.ctx.seed)
        with seeded(self.ctx.seed):
            model = EfficientADModel(cfg.model_size, cfg.image_size, cfg.channels, cfg.width_divisor,
                                     map_border=MAP_BORDERS[cfg.map_rule])
            model.teacher.load_state_dict(teacher.pdn.state_dict())
            model.to(self.device).eval()
            images = load_uint8(train, cfg.image_size)
            mean, std = teacher_statistics(model, images, cfg.score_batch_size, self.progress)
            dead = int((std < 1e-12).sum())
            if dead:
                log.warning("%d teacher channels are constant on the training set; their std is clamped to 1e-12", dead)
            model.teacher_mean.copy_(mean)
            model.teacher_std.copy_(std.clamp_min(1e-12))
            self.losses = train_student_autoencoder(
                model, images, PenaltyImages(penalty_paths, cfg.image_size, PENALTY_GRAYSCALE_P),
                label=f"EfficientAD-{cfg.model_size[0].upper()}", steps=cfg.steps, lr=cfg.lr,
                weight_decay=cfg.weight_decay, batch_size=cfg.batch_size, gen=gen,
                quantile_cap=cfg.quantile_subsample, progress=self.progress)
        quantiles, degenerate = self._validation_quantiles(model, validation)
        model.quantiles.copy_(quantiles.as_tensor())
        self.model = model.cpu().eval()
        self.info = {
            "model_size": cfg.model_size, "image_size": cfg.image_size, "channels": cfg.channels,
            "width_divisor": cfg.width_divisor, "map_rule": cfg.map_rule, "steps": cfg.steps, "seed": self.ctx.seed,
            "quantiles": quantiles.to_dict(), "quantiles_degenerate": degenerate,
            "pretrain_images_fallback": fallback, "n_train": len(train), "n_validation": len(validation),
            "first_loss": self.losses[0], "final_loss": self.losses[-1], "teacher": teacher.meta,
        }

    @torch.no_grad()
    def _validation_quantiles(self, model: EfficientADModel, paths: Sequence[Path]) -> tuple[MapQuantiles, dict[str, bool]]:
        def maps() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for x in self._batches(paths, "validation maps"):
                m_st, m_ae = model.raw_maps(x.to(self.device))
                if self.cfg.map_rule == "puad":  # quantiles of the resized maps
                    m_st, m_ae = (to_working_resolution(m, self.cfg.image_size, border=0) for m in (m_st, m_ae))
                yield m_st, m_ae

        return fit_quantiles(maps(), self.cfg.quantile_subsample, self.ctx.seed)

    def _batches(self, paths: Sequence[Path], desc: str) -> Iterator[torch.Tensor]:
        """Normalised image batches [b,3,S,S] of at most score_batch_size images."""
        step = self.cfg.score_batch_size
        for i in tqdm(range(0, len(paths), step), desc=desc, disable=not self.progress):
            yield normalize(load_unit(paths[i:i + step], self.cfg.image_size))

    def _require_model(self) -> EfficientADModel:
        if self.model is None:
            raise RuntimeError("EfficientAD is not fitted: call fit() or load() first")
        return self.model

    @torch.no_grad()
    def score(self, images: Sequence[Path]) -> Scores:
        """Scores float32 [N] (max of the map) and maps float32 [N,S,S] at image_size S.

        Memory: the returned maps (4·N·S² bytes) plus one batch of score_batch_size images.
        """
        model = self._require_model().to(self.device)
        maps, scores = [], []
        for x in self._batches(images, "EfficientAD score"):
            m, s = model(x.to(self.device))
            maps.append(m[:, 0].cpu())
            scores.append(s.cpu())
        model.cpu()
        size = self.cfg.image_size
        all_maps = torch.cat(maps).numpy() if maps else np.zeros((0, size, size), np.float32)
        all_scores = torch.cat(scores).numpy() if scores else np.zeros(0, np.float32)
        if not np.all(np.isfinite(all_scores)):
            raise FloatingPointError("EfficientAD produced non-finite scores (diverged training?)")
        return Scores(all_scores.astype(np.float32), all_maps.astype(np.float32))

    def save(self, model_dir: Path) -> None:
        save_model(self._require_model(), self.info, model_dir)

    @classmethod
    def load(cls, model_dir: Path, cfg: EfficientADConfig, ctx: RunContext) -> EfficientAD:
        model, info = load_model(model_dir)
        keys = ("model_size", "image_size", "channels", "width_divisor", "map_rule")
        saved = {"map_rule": "nelson"} | info  # checkpoints from before the switch used the nelson rule
        if [saved[k] for k in keys] != [getattr(cfg, k) for k in keys]:
            raise ArtifactError(f"checkpoint has {[saved[k] for k in keys]} but params ask for "
                                f"{[getattr(cfg, k) for k in keys]} ({', '.join(keys)})", path=model_dir,
                                fix="re-run the efficientad stage with the current params")
        method = cls(cfg, ctx)
        method.model, method.info = model, info
        return method

    def meta(self) -> dict[str, Any]:
        teacher = self.info.get("teacher", {})
        weights = "pretrained" if teacher.get("source") == "file" else teacher.get("target_weights", "unknown")
        return {"weights": weights, **{k: v for k, v in self.info.items() if k != "teacher"}, "teacher": teacher}


class EfficientADMConfig(EfficientADConfig):
    """EfficientAD-M: the paper's settings with the medium PDN."""

    model_size: ModelSize = "medium"


class EfficientADM(EfficientAD):
    """EfficientAD-M (name "efficientad_m"): its own stage, teacher (``efficientad_teacher_m``) and results."""

    name = "efficientad_m"
    Config = EfficientADMConfig
    requires = ("efficientad_teacher_m",)

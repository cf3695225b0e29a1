"""PUAD (Sugawara & Imamura, ICIP 2024): EfficientAD's picturable score + an unpicturable
Mahalanobis score on spatially pooled features, each z-normalised on the validation set.

Needs a trained EfficientAD's saved model in ``ctx.upstream_dirs["efficientad"]`` (read with
``components.student_teacher.checkpoint``; never retrained; PUAD-M, ``puad_m``: EfficientAD-M's
in ``ctx.upstream_dirs["efficientad_m"]``). Features f(x) ∈ R^384: global
average of the student's first 384 channels (``student``) or of the normalised teacher output
(``teacher``). Train split → Ledoit–Wolf Gaussian (``components.mahalanobis``; N ≈ D, so the
plain sample covariance is ill-conditioned). Score = (s_E − μ_E)/σ_E + w · (d_M − μ_M)/σ_M with
d_M the Mahalanobis distance of f.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from tqdm import tqdm

from ad_pipeline.components.mahalanobis import Mahalanobis
from ad_pipeline.components.student_teacher.checkpoint import checkpoint_digest, load_model
from ad_pipeline.components.student_teacher.data import load_unit, normalize
from ad_pipeline.components.student_teacher.model import EfficientADModel
from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.io import atomic_path, read_json, write_json
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext, Scores

log = logging.getLogger(__name__)

STATS_FILE = "puad_stats.npz"
META_FILE = "puad.json"
MIN_STD = 1e-12


class PUADConfig(MethodConfig):
    feature_extractor: Literal["student", "teacher"] = "student"
    w_unpicturable: float = Field(1.0, ge=0)
    batch_size: int = Field(8, ge=1)
    device: str | None = None  # null → the run context's device


def fit_gaussian(features: np.ndarray) -> Mahalanobis:
    """The Ledoit–Wolf Gaussian of features [N,D]; UserError for fewer than 2 images."""
    if features.shape[0] < 2:
        raise UserError(f"PUAD needs at least 2 training images, got {features.shape[0]}",
                        fix="check the dataset's train/good folder")
    return Mahalanobis.fit(features, "ledoit_wolf")


def mean_std(values: np.ndarray, what: str) -> tuple[float, float]:
    """(mean, population std) with std < 1e-12 replaced by 1.0 and a warning."""
    mu, sd = float(np.mean(values)), float(np.std(values))
    if sd < MIN_STD:
        log.warning("PUAD: the validation std of the %s score is %.3g < %g; using 1.0", what, sd, MIN_STD)
        sd = 1.0
    return mu, sd


class PUAD(AnomalyMethod):
    name = "puad"
    Config = PUADConfig
    requires = ("efficientad",)

    def __init__(self, cfg: PUADConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        self.model, self.efficientad_info = self._load_efficientad()
        self.gaussian: Mahalanobis | None = None
        self.calib: dict[str, float] = {}

    def _efficientad_dir(self) -> Path:
        stage = self.requires[0]
        d = self.ctx.upstream_dirs.get(stage)
        if d is None:
            raise UserError("PUAD needs a trained EfficientAD",
                            fix=f"run the {stage} stage and pass its dir as upstream_dirs['{stage}']")
        return Path(d)

    def _load_efficientad(self) -> tuple[EfficientADModel, dict[str, Any]]:
        model, info = load_model(self._efficientad_dir())
        return model.to(self.cfg.device or self.ctx.device), info

    @torch.no_grad()
    def _features_and_scores(self, paths: Sequence[Path], desc: str) -> tuple[np.ndarray, np.ndarray]:
        """(pooled features float64 [N,384], EfficientAD image scores float64 [N])."""
        device = self.cfg.device or self.ctx.device
        feats, scores = [], []
        step = self.cfg.batch_size
        for i in tqdm(range(0, len(paths), step), desc=desc, disable=not self.ctx.progress):
            x = normalize(load_unit(paths[i:i + step], self.model.image_size)).to(device)
            t_hat, student, ae = self.model.outputs(x)
            f = student[:, : t_hat.shape[1]] if self.cfg.feature_extractor == "student" else t_hat
            feats.append(f.mean(dim=(2, 3)).double().cpu())
            scores.append(self.model.map_and_score(t_hat, student, ae)[1].double().cpu())
        if not feats:
            return np.zeros((0, self.model.teacher_mean.shape[1])), np.zeros(0)
        return torch.cat(feats).numpy(), torch.cat(scores).numpy()

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        if not validation:
            raise UserError("PUAD needs validation images to normalise its two scores",
                            fix="use a dataset with a validation split or a train/good hold-out (prepare stage)")
        train_feats, _ = self._features_and_scores(train, "PUAD train features")
        self.gaussian = fit_gaussian(train_feats)
        val_feats, val_eff = self._features_and_scores(validation, "PUAD validation")
        mu_e, sd_e = mean_std(val_eff, "EfficientAD")
        mu_m, sd_m = mean_std(self.gaussian(val_feats), "Mahalanobis")
        self.calib = {"mu_E": mu_e, "sd_E": sd_e, "mu_M": mu_m, "sd_M": sd_m, "shrinkage": self.gaussian.shrinkage,
                      "n_train": len(train), "n_validation": len(validation)}

    def score(self, images: Sequence[Path]) -> Scores:
        """Scores float32 [N]; no maps (PUAD's map is EfficientAD's). extras: both raw scores."""
        if self.gaussian is None:
            raise RuntimeError("PUAD is not fitted: call fit() or load() first")
        feats, s_e = self._features_and_scores(images, "PUAD score")
        s_m = self.gaussian(feats)
        c = self.calib
        total = (s_e - c["mu_E"]) / c["sd_E"] + self.cfg.w_unpicturable * (s_m - c["mu_M"]) / c["sd_M"]
        if not np.all(np.isfinite(total)):
            raise FloatingPointError("PUAD produced non-finite scores")
        return Scores(total.astype(np.float32), None,
                      {"efficientad_score": s_e.astype(np.float32), "mahalanobis": s_m.astype(np.float32)})

    def save(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        with atomic_path(model_dir / STATS_FILE) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, mean=self.gaussian.mean, precision=self.gaussian.precision)
        write_json(model_dir / META_FILE, self.calib | {
            "feature_extractor": self.cfg.feature_extractor,
            "efficientad_sha256": checkpoint_digest(self._efficientad_dir())})

    @classmethod
    def load(cls, model_dir: Path, cfg: PUADConfig, ctx: RunContext) -> PUAD:
        method = cls(cfg, ctx)
        meta = read_json(Path(model_dir) / META_FILE)
        if meta["efficientad_sha256"] != checkpoint_digest(method._efficientad_dir()):
            raise ArtifactError("PUAD statistics were fitted on another EfficientAD checkpoint", path=model_dir,
                                fix="re-run the puad stage after the efficientad stage")
        if meta["feature_extractor"] != cfg.feature_extractor:
            raise ArtifactError(f"PUAD statistics use feature_extractor={meta['feature_extractor']!r}, params ask "
                                f"for {cfg.feature_extractor!r}", path=model_dir, fix="re-run the puad stage")
        method.calib = {k: v for k, v in meta.items() if k not in ("feature_extractor", "efficientad_sha256")}
        with np.load(Path(model_dir) / STATS_FILE, allow_pickle=False) as z:
            method.gaussian = Mahalanobis(z["mean"], z["precision"], method.calib["shrinkage"])
        return method

    def meta(self) -> dict[str, Any]:
        return {"feature_extractor": self.cfg.feature_extractor, "w_unpicturable": self.cfg.w_unpicturable,
                **self.calib, "efficientad_model_size": self.efficientad_info.get("model_size")}


class PUADM(PUAD):
    """PUAD-M (name "puad_m"): PUAD on EfficientAD-M (the ``efficientad_m`` stage)."""

    name = "puad_m"
    requires = ("efficientad_m",)

"""CSAD for one category, the scoring method (``csad@``).

``CSAD.fit`` loads the segmentor of ``segmentor@`` (methods/csad/segmentor.py), fits the
patch-histogram branch on train, trains LGST on train, and fits every normalisation on ``validation`` only (never on test data). Final score =
z(LGST) + z(patch-hist), both trimmed z-scores of validation scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ad_pipeline.components.student_teacher.data import PenaltyImages, list_images, load_uint8
from ad_pipeline.components.student_teacher.train import teacher_statistics, train_student_autoencoder
from ad_pipeline.errors import ArtifactError
from ad_pipeline.fusion import Normalizer, fit_normalizer
from ad_pipeline.io import read_json, write_json
from ad_pipeline.methods.base import AnomalyMethod, RunContext, Scores
from ad_pipeline.methods.csad.config import CSADConfig
from ad_pipeline.methods.csad.lgst import LGST, LGSTTeacher, fit_map_quantiles, lgst_scores
from ad_pipeline.methods.csad.patch_hist import PatchHistogramModel
from ad_pipeline.methods.csad.segmentor import build_encoder, load_segmentor, segment
from ad_pipeline.seed import seed_everything
from ad_pipeline.segmentation.models import FrozenEncoderSegmentor, probe_channels


def trimmed(val_scores: np.ndarray, guard: float) -> Normalizer:
    """CSAD's trimmed z-score (q20 < v < q80, population std ≤ guard → 1) of validation scores."""
    return fit_normalizer(val_scores, "trimmed_z", guard)


class CSAD(AnomalyMethod):
    name = "csad"
    Config = CSADConfig
    requires = ("segmentor",)

    def __init__(self, cfg: CSADConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        self.encoder = build_encoder(cfg, ctx)
        self.segmentor: FrozenEncoderSegmentor | None = None
        self.lgst: LGST | None = None
        self.hist: PatchHistogramModel | None = None
        self.stats: dict[str, Normalizer] = {}  # trimmed z-scores fitted on validation scores

    def _segment(self, paths: Sequence[Path]) -> torch.Tensor:
        return segment(self.segmentor, paths, self.cfg, self.ctx.device)

    def _patch_hist_raw(self, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        return self.hist.distances(self._segment(paths))

    def _patch_hist(self, paths: Sequence[Path]) -> np.ndarray:
        d_g, d_p = self._patch_hist_raw(paths)
        return self.stats["hist"](d_g) + self.stats["patch_hist"](d_p)

    def _build_lgst(self) -> LGST:
        cfg = self.cfg
        layers = ("layer2", "layer3")
        teacher = LGSTTeacher(self.encoder, sum(probe_channels(self.encoder, layers)), channels=cfg.lgst_channels,
                              out_size=cfg.image_size // 4, layers=layers, seed=cfg.projection_seed)
        return LGST(teacher, image_size=cfg.image_size, channels=cfg.lgst_channels,
                    width_divisor=cfg.lgst_width_divisor, upsample_score=cfg.lgst_score == "upsampled")

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        cfg, ctx = self.cfg, self.ctx
        if not validation:
            raise ArtifactError("CSAD needs validation images to fit its normalisations",
                                fix="use a dataset with a validation split or a held-out fraction of train/good")
        seg_dir = ctx.upstream_dirs.get("segmentor")
        if seg_dir is None:
            raise ArtifactError("no segmentor model directory given", fix="run the segmentor stage before csad")
        gen = seed_everything(ctx.seed)
        self.segmentor = load_segmentor(seg_dir, cfg, self.encoder)
        self.hist = PatchHistogramModel.fit(self._segment(train), self.segmentor.head.decoder[-1].out_channels)
        d_g, d_p = self._patch_hist_raw(validation)
        g = cfg.zscore_guard
        self.stats["hist"], self.stats["patch_hist"] = trimmed(d_g, g), trimmed(d_p, g)
        self.stats["ph"] = trimmed(self.stats["hist"](d_g) + self.stats["patch_hist"](d_p), g)

        self.lgst = self._build_lgst()
        images = load_uint8(list(train), cfg.image_size)
        mean, std = teacher_statistics(self.lgst, images, cfg.batch_size, progress=ctx.progress)
        self.lgst.teacher_mean.copy_(mean)
        self.lgst.teacher_std.copy_(std)
        penalty = (PenaltyImages(list_images(cfg.penalty_images), cfg.image_size) if cfg.penalty_images else None)
        train_student_autoencoder(self.lgst, images, penalty, label="LGST", steps=cfg.lgst_steps, lr=cfg.lgst_lr,
                                  weight_decay=cfg.lgst_weight_decay, batch_size=cfg.lgst_batch_size,
                                  penalty_batch_size=cfg.lgst_penalty_batch_size, gen=gen, progress=ctx.progress)
        val_images = load_uint8(list(validation), cfg.image_size)
        fit_map_quantiles(self.lgst, val_images, batch_size=cfg.batch_size, seed=ctx.seed)
        self.stats["lgst"] = trimmed(lgst_scores(self.lgst, val_images, batch_size=cfg.batch_size)[0], g)

    def score(self, images: Sequence[Path]) -> Scores:
        ph = self._patch_hist(images)
        lg, maps = lgst_scores(self.lgst, load_uint8(list(images), self.cfg.image_size), batch_size=self.cfg.batch_size)
        z_ph, z_lg = self.stats["ph"](ph), self.stats["lgst"](lg)
        total = {"both": z_ph + z_lg, "patch_hist": z_ph, "lgst": z_lg}[self.cfg.branches]
        return Scores(total.astype(np.float32), maps,
                      extras={"patch_hist": z_ph.astype(np.float32), "lgst": z_lg.astype(np.float32)})

    def save(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in self.lgst.state_dict().items() if not k.startswith("teacher.encoder.")}
        torch.save(state, model_dir / "lgst.pth")  # includes the seeded teacher projection
        np.savez(model_dir / "patchhist_params.npz", **self.hist.to_arrays())
        write_json(model_dir / "normalisation.json", {k: {"mean": s.mean, "std": s.std} for k, s in self.stats.items()})

    @classmethod
    def load(cls, model_dir: Path, cfg: CSADConfig, ctx: RunContext) -> CSAD:
        model_dir = Path(model_dir)
        m = cls(cfg, ctx)
        seg_dir = ctx.upstream_dirs.get("segmentor")
        if seg_dir is None:
            raise ArtifactError("no segmentor model directory given", fix="run the segmentor stage before csad")
        m.segmentor = load_segmentor(seg_dir, cfg, m.encoder)
        m.lgst = m._build_lgst()
        state = torch.load(model_dir / "lgst.pth", map_location="cpu", weights_only=True)
        missing, unexpected = m.lgst.load_state_dict(state, strict=False)  # the encoder comes from the registry
        if unexpected or any(not k.startswith("teacher.encoder.") for k in missing):
            raise ArtifactError("lgst.pth does not match the configured LGST", path=model_dir / "lgst.pth",
                                fix="re-run the csad stage with the current params")
        with np.load(model_dir / "patchhist_params.npz") as a:
            m.hist = PatchHistogramModel.from_arrays(dict(a))
        m.stats = {k: Normalizer("trimmed_z", **v) for k, v in read_json(model_dir / "normalisation.json").items()}
        return m

    def meta(self) -> dict[str, Any]:
        return {"encoder": self.cfg.encoder, "weights": getattr(self.encoder, "weights", "unknown"),
                "num_classes": None if self.hist is None else self.hist.num_classes}

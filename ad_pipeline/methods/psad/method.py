"""PSAD for one category: few-shot part segmenter (stage ``part_segmenter@``) and scoring (``psad@``).

Scoring needs PatchCore's dumps (never recomputed here): the ``test`` dump and a
``train_loo`` dump — ``write_scores(dir, "train_loo", manifest.fingerprint("train"), s, None)``
where s[i] is train image i scored against a memory bank WITHOUT its own patches. The stage
loads them with :func:`load_patch_scores` into ``PSAD.patch_scores`` before fit/score.
Final score = Σ over ``memory_type`` banks (h, c, p) of adaptively scaled NN distances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import field_validator

from ad_pipeline.backbones import build_backbone
from ad_pipeline.data.images import load_batch
from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.io import read_json, read_scores, write_json
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext, Scores
from ad_pipeline.methods.psad.banks import PooledFeatures, composition_features, histogram_features
from ad_pipeline.methods.psad.scaling import (
    NearestRule,
    ScaleType,
    Standardizer,
    adaptive_scale,
    nearest_distances,
    nearest_other_distances,
)
from ad_pipeline.seed import seed_everything
from ad_pipeline.segmentation.models import CoordSegmenter
from ad_pipeline.segmentation.train import PSAD_FEWSHOT, SegTrainConfig, predict_labels, train_segmentation

SEGMENTER_FILE = "part_segmenter.pth"
SEGMENTER_META = "part_segmenter.json"


class PSADConfig(MethodConfig):
    """Defaults = the paper's settings (psad.md)."""

    image_size: int = 512
    num_classes: int = 7  # incl. background; overridden per category by aux/parts.json (breakfast_box 7, pushpins 26, …)
    shots: int = 5  # labelled images for the few-shot segmenter (one per variant where variants are known)
    segmenter_encoder: str = "wide_resnet101_2"
    segmenter_layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    coord_scale: float = 1.0
    segmenter: SegTrainConfig = SegTrainConfig(**PSAD_FEWSHOT)
    feature_encoder: str = "resnet101"
    feature_layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    avgpool_size: int = 5
    memory_type: str = "hcp"  # any of h (histogram), c (composition), p (patch)
    scale_type: ScaleType = "max"
    nearest_rule: NearestRule = "second_smallest"  # "repo_bug" reproduces the reference code
    standardize: bool = True
    batch_size: int = 4

    @field_validator("segmenter", mode="before")
    @classmethod
    def _few_shot_defaults(cls, v: Any) -> Any:
        """A partial ``segmenter`` section overrides PSAD's recipe, not the CSAD defaults."""
        return {**PSAD_FEWSHOT, **v} if isinstance(v, dict) else v


def _segmenter(cfg: PSADConfig, ctx: RunContext) -> CoordSegmenter:
    enc = build_backbone(cfg.segmenter_encoder, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir, seed=ctx.seed,
                         trainable=True)
    return CoordSegmenter(enc, cfg.num_classes, layers=cfg.segmenter_layers, coord_scale=cfg.coord_scale)


def fit_part_segmenter(shots: Sequence[Path], shot_masks: Sequence[np.ndarray], unlabeled: Sequence[Path],
                       cfg: PSADConfig, ctx: RunContext) -> tuple[CoordSegmenter, list[dict[str, float]]]:
    """Few-shot part segmentation: labelled ``shots`` (uint8 masks, 0 = background) + unlabelled images."""
    if len(shots) != len(shot_masks) or not shots:
        raise UserError(f"need ≥ 1 shot and one mask per shot, got {len(shots)} images / {len(shot_masks)} masks")
    top = max(int(m.max()) for m in shot_masks)
    if top >= cfg.num_classes:
        raise UserError(f"shot masks contain class {top} but num_classes is {cfg.num_classes}",
                        fix="set psad num_classes to the number of part classes incl. background")
    seed_everything(ctx.seed)
    model = _segmenter(cfg, ctx)
    images = load_batch([*shots, *unlabeled], cfg.image_size)
    labels = torch.zeros(len(images), cfg.image_size, cfg.image_size, dtype=torch.long)
    for i, m in enumerate(shot_masks):
        t = torch.from_numpy(m)[None, None].float()
        labels[i] = torch.nn.functional.interpolate(t, size=(cfg.image_size,) * 2, mode="nearest")[0, 0].long()
    history = train_segmentation(model, images, labels, np.arange(len(shots)), cfg.segmenter,
                                 num_classes=cfg.num_classes, seed=ctx.seed, device=ctx.device, progress=ctx.progress)
    return model, history


def save_part_segmenter(model: CoordSegmenter, out_dir: Path, cfg: PSADConfig) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / SEGMENTER_FILE)
    write_json(out_dir / SEGMENTER_META, {"num_classes": cfg.num_classes, "encoder": cfg.segmenter_encoder})


def load_part_segmenter(seg_dir: Path, cfg: PSADConfig, ctx: RunContext) -> CoordSegmenter:
    seg_dir = Path(seg_dir)
    meta = read_json(seg_dir / SEGMENTER_META)
    if meta != {"num_classes": cfg.num_classes, "encoder": cfg.segmenter_encoder}:
        raise ArtifactError(f"part segmenter was trained with {meta}", path=seg_dir,
                            fix="re-run the part_segmenter stage with the current psad params")
    model = _segmenter(cfg, ctx)
    model.load_state_dict(torch.load(seg_dir / SEGMENTER_FILE, map_location="cpu", weights_only=True))
    return model.eval()


def load_patch_scores(dump_dir: Path, split: str, fingerprint: str, paths: Sequence[Path]) -> dict[str, float]:
    """PatchCore image scores of ``paths`` (manifest order) from dump ``split`` → {path: score}.

    ArtifactError if the dump is missing, stale (other manifest) or has another row count.
    """
    scores, _ = read_scores(dump_dir, split, fingerprint, with_maps=False)
    if len(scores) != len(paths):
        raise ArtifactError(f"{split} dump has {len(scores)} rows for {len(paths)} images", path=dump_dir,
                            fix="re-run the patchcore stage")
    return {str(p): float(s) for p, s in zip(paths, scores)}


class PSAD(AnomalyMethod):
    name = "psad"
    Config = PSADConfig
    requires = ("part_segmenter", "patchcore")

    def __init__(self, cfg: PSADConfig, ctx: RunContext):
        seg_meta = Path(ctx.upstream_dirs.get("part_segmenter", "")) / SEGMENTER_META
        if seg_meta.is_file():  # the class count is per category: the one the segmenter was trained with
            cfg = cfg.model_copy(update={"num_classes": int(read_json(seg_meta)["num_classes"])})
        super().__init__(cfg, ctx)
        bad = set(cfg.memory_type) - set("hcp")
        if bad or not cfg.memory_type:
            raise UserError(f"psad memory_type {cfg.memory_type!r} must be letters of 'hcp'", fix="e.g. memory_type: hcp")
        self.features = PooledFeatures(build_backbone(cfg.feature_encoder, pretrained=ctx.pretrained,
                                                      weights_dir=ctx.weights_dir, seed=ctx.seed),
                                       cfg.feature_layers, cfg.avgpool_size)
        self.segmenter: CoordSegmenter | None = None
        self.patch_scores: dict[str, float] = {}
        self.state: dict[str, torch.Tensor] = {}

    def part_maps(self, paths: Sequence[Path]) -> torch.Tensor:
        """uint8 [N,S,S] predicted part maps (S = image_size)."""
        return predict_labels(self.segmenter, load_batch(list(paths), self.cfg.image_size),
                              batch_size=self.cfg.batch_size, device=self.ctx.device).cpu()

    def bank_features(self, paths: Sequence[Path], part_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"h": [N,C], "c": [N,(C−1)·D]}; images go through the CNN ``batch_size`` at a time."""
        c = self.cfg.num_classes
        comp = []
        for i in range(0, len(paths), self.cfg.batch_size):
            x = load_batch(list(paths[i:i + self.cfg.batch_size]), self.cfg.image_size).to(self.ctx.device)
            comp.append(composition_features(self.features(x), part_maps[i:i + len(x)].to(x.device), c).cpu())
        return {"h": histogram_features(part_maps, c), "c": torch.cat(comp)}

    def _patch(self, paths: Sequence[Path], what: str) -> torch.Tensor:
        missing = [str(p) for p in paths if str(p) not in self.patch_scores]
        if missing:
            raise ArtifactError(f"no PatchCore {what} score for {len(missing)} image(s), e.g. {missing[0]}",
                                fix="run the patchcore stage (with its train_loo dump) and load it with "
                                    "load_patch_scores before fitting/scoring PSAD")
        return torch.tensor([self.patch_scores[str(p)] for p in paths], dtype=torch.float64)

    def fit_banks(self, feats: Mapping[str, torch.Tensor], patch_train: torch.Tensor | None) -> None:
        """Store (standardised) banks and the adaptive-scaling references from training features."""
        for k in "hc":
            if k not in self.cfg.memory_type:
                continue
            bank = feats[k].double()
            dim = bank.shape[1]
            std = Standardizer.fit(bank) if self.cfg.standardize else Standardizer(torch.zeros(dim), torch.ones(dim))
            bank = std(bank)
            self.state |= {f"{k}_mean": std.mean, f"{k}_std": std.std, f"{k}_bank": bank,
                           f"{k}_ref": nearest_other_distances(bank, self.cfg.nearest_rule)}
        if "p" in self.cfg.memory_type:
            self.state["p_ref"] = patch_train

    def score_banks(self, feats: Mapping[str, torch.Tensor], patch: torch.Tensor | None) -> dict[str, np.ndarray]:
        """Scaled distance per bank → {"h"|"c"|"p": [Q]}."""
        out = {}
        for k in "hc":
            if k in self.cfg.memory_type:
                q = Standardizer(self.state[f"{k}_mean"], self.state[f"{k}_std"])(feats[k].double())
                d = nearest_distances(q, self.state[f"{k}_bank"])
                out[k] = adaptive_scale(d, self.state[f"{k}_ref"], self.cfg.scale_type).numpy()
        if "p" in self.cfg.memory_type:
            out["p"] = adaptive_scale(patch, self.state["p_ref"], self.cfg.scale_type).numpy()
        return out

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        seg_dir = self.ctx.upstream_dirs.get("part_segmenter")
        if seg_dir is None:
            raise ArtifactError("no part segmenter model directory given", fix="run the part_segmenter stage first")
        patch_train = self._patch(train, "leave-one-out train") if "p" in self.cfg.memory_type else None
        self.segmenter = load_part_segmenter(seg_dir, self.cfg, self.ctx)
        self.fit_banks(self.bank_features(train, self.part_maps(train)), patch_train)

    def score(self, images: Sequence[Path]) -> Scores:
        patch = self._patch(images, "test") if "p" in self.cfg.memory_type else None
        parts = self.score_banks(self.bank_features(images, self.part_maps(images)), patch)
        total = sum(parts.values())
        return Scores(total.astype(np.float32), None, extras={k: v.astype(np.float32) for k, v in parts.items()})

    def save(self, model_dir: Path) -> None:
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        torch.save(self.state, Path(model_dir) / "psad_banks.pth")

    @classmethod
    def load(cls, model_dir: Path, cfg: PSADConfig, ctx: RunContext) -> PSAD:
        m = cls(cfg, ctx)
        m.segmenter = load_part_segmenter(ctx.upstream_dirs["part_segmenter"], cfg, ctx)
        m.state = torch.load(Path(model_dir) / "psad_banks.pth", map_location="cpu", weights_only=True)
        return m

    def meta(self) -> dict[str, Any]:
        modes = {self.features.encoder.weights, getattr(self.segmenter.encoder, "weights", "random-init")}
        return {"memory_type": self.cfg.memory_type, "scale_type": self.cfg.scale_type,
                "nearest_rule": self.cfg.nearest_rule, "num_classes": self.cfg.num_classes,
                "weights": modes.pop() if len(modes) == 1 else "random-init",  # any random part → random-init
                "weights_per_part": {"feature_encoder": self.features.encoder.weights,
                                     "segmenter_encoder": getattr(self.segmenter.encoder, "weights", "random-init")}}

"""PSAD for one category: few-shot part segmenter (stage ``part_segmenter@``), second-stage
segmenter trained on its pseudo-labels (``psad_segmenter@``) and scoring (``psad@``).

The patch bank needs PatchCore image scores in ``PSAD.patch_scores`` before fit/score: for test
images against the bank, for train images leave-one-out (against a bank WITHOUT that image's
patches). ``patch_bank: seed`` (default) computes them as the seed's PatchCore does with
:func:`~ad_pipeline.methods.psad.seed_bank.seed_bank_scores`; ``full`` with our PatchCore without
coreset (:func:`~ad_pipeline.methods.psad.patch_bank.full_bank_patch_scores`); ``coreset`` reads
``patchcore@``'s dumps with :func:`load_patch_scores` (``train_loo`` and ``test``). Every image
(and few-shot label) goes through :mod:`~ad_pipeline.methods.psad.preprocess` with the category's
settings, recorded by the part segmenter and adopted by the later stages. Final score = Σ over ``memory_type`` banks
(h, c, p) of adaptively scaled NN distances; the banks hold a seeded ``normal_fraction`` of the
train images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from ad_pipeline.backbones import build_backbone
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
from ad_pipeline.methods.psad.preprocess import PreprocessConfig, load_preprocessed, preprocess_label
from ad_pipeline.methods.psad.seed_bank import SeedBankConfig, save_bank
from ad_pipeline.seed import seed_everything
from ad_pipeline.segmentation.models import CoordSegmenter, ResidualCoordSegmenter
from ad_pipeline.segmentation.train import (
    PSAD_FEWSHOT,
    PSAD_RETRAIN,
    SegTrainConfig,
    predict_labels,
    train_segmentation,
)

FEWSHOT = "part_segmenter"  # stage / file stem of the few-shot segmenter
RETRAINED = "psad_segmenter"  # stage / file stem of the second-stage segmenter
SEGMENTER_META = f"{FEWSHOT}.json"


class PSADConfig(MethodConfig):
    """Defaults = the paper's settings (psad.md)."""

    image_size: int = 512
    num_classes: int = 7  # incl. background; overridden per category by aux/parts.json (breakfast_box 7, pushpins 26, …)
    shots: int = 5  # labelled images for the few-shot segmenter (one per variant where variants are known)
    segmenter_encoder: str = "wide_resnet101_2"
    segmenter_layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    coord_scale: float = 1.0
    coord_levels: int = Field(0, ge=0)  # both segmenters; 255 = the seed's 8-bit-truncated coordinates (docs/parity.md)
    segmenter: SegTrainConfig = SegTrainConfig(**PSAD_FEWSHOT)
    feature_encoder: str = "resnet101"
    feature_layers: tuple[str, ...] = ("layer1", "layer2", "layer3")
    avgpool_size: int = 5
    memory_type: str = "hcp"  # any of h (histogram), c (composition), p (patch)
    scale_type: ScaleType = "max"
    nearest_rule: NearestRule = "second_smallest"  # "repo_bug" reproduces the reference code
    standardize: bool = True
    batch_size: int = 4
    preprocess: PreprocessConfig = PreprocessConfig()  # psad.md §1; screw_bag's crop 150: ad_pipeline.recipes
    # second stage (psad.md §3, run_unet_v2.sh): random-init WRN-101 trunk, coordinates ×30
    second_stage: bool = True  # false: psad@ uses the few-shot segmenter's maps
    retrain_encoder: str = "wide_resnet101_2"
    retrain_pretrained: bool = False  # run_unet_v2.sh: --pretrained False
    retrain_coord_scale: float = 30.0
    retrain: SegTrainConfig = SegTrainConfig(**PSAD_RETRAIN)
    normal_fraction: float = Field(1.0, gt=0, le=1)  # seeded share of train images in the banks (seed: 1 … 1/8)
    normal_subset: Literal["seeded", "first"] = "seeded"  # first: the seed's first ⌊N·fraction⌋ by name
    # seed: the seed's anomalib PatchCore on the preprocessed images (seed_bank.py, ``seed_bank``);
    # full: our PatchCore with the ``patchcore`` params, no coreset; coreset: patchcore@'s dumps
    patch_bank: Literal["seed", "full", "coreset"] = "seed"
    seed_bank: SeedBankConfig = SeedBankConfig()

    @field_validator("segmenter", mode="before")
    @classmethod
    def _few_shot_defaults(cls, v: Any) -> Any:
        """A partial ``segmenter`` section overrides PSAD's recipe, not the CSAD defaults."""
        return {**PSAD_FEWSHOT, **v} if isinstance(v, dict) else v

    @field_validator("retrain", mode="before")
    @classmethod
    def _retrain_defaults(cls, v: Any) -> Any:
        """A partial ``retrain`` section overrides PSAD's second-stage recipe."""
        return {**PSAD_RETRAIN, **v} if isinstance(v, dict) else v


def normal_subset(paths: Sequence[Path], fraction: float, seed: int,
                  rule: Literal["seeded", "first"] = "seeded") -> list[Path]:
    """``seeded``: a seeded random ``fraction`` of ``paths`` (round(fraction·N), at least 2), in their
    original order. ``first``: the seed's ``--less_data``: the first ⌊fraction·N⌋ (at least 2) of the
    paths sorted by name."""
    n = len(paths)
    if fraction >= 1.0 or n <= 2:
        return list(paths)
    if rule == "first":
        return sorted(paths, key=str)[:max(2, int(fraction * n))]
    k = max(2, round(fraction * n))
    keep = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))
    return [paths[i] for i in keep]


def _segmenter(cfg: PSADConfig, ctx: RunContext, kind: str = FEWSHOT) -> CoordSegmenter | ResidualCoordSegmenter:
    if kind == FEWSHOT:
        enc = build_backbone(cfg.segmenter_encoder, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir,
                             seed=ctx.seed, trainable=True)
        return CoordSegmenter(enc, cfg.num_classes, layers=cfg.segmenter_layers, coord_scale=cfg.coord_scale,
                              coord_levels=cfg.coord_levels)
    enc = build_backbone(cfg.retrain_encoder, pretrained=ctx.pretrained if cfg.retrain_pretrained else "false",
                         weights_dir=ctx.weights_dir, seed=ctx.seed, trainable=True)
    return ResidualCoordSegmenter(enc, cfg.num_classes, coord_scale=cfg.retrain_coord_scale,
                                  coord_levels=cfg.coord_levels)


def fit_part_segmenter(shots: Sequence[Path], shot_masks: Sequence[np.ndarray], unlabeled: Sequence[Path],
                       cfg: PSADConfig, ctx: RunContext) -> tuple[CoordSegmenter, list[dict[str, float]]]:
    """Few-shot part segmentation: labelled ``shots`` (uint8 masks, 0 = background) + unlabelled images.

    Images and masks are preprocessed with ``cfg.preprocess`` (the category's, set by the stage)."""
    if len(shots) != len(shot_masks) or not shots:
        raise UserError(f"need ≥ 1 shot and one mask per shot, got {len(shots)} images / {len(shot_masks)} masks")
    top = max(int(m.max()) for m in shot_masks)
    if top >= cfg.num_classes:
        raise UserError(f"shot masks contain class {top} but num_classes is {cfg.num_classes}",
                        fix="set psad num_classes to the number of part classes incl. background")
    if any(c >= cfg.num_classes for c in cfg.segmenter.hist_classes or []):
        raise UserError(f"psad segmenter.hist_classes {cfg.segmenter.hist_classes} name classes ≥ num_classes "
                        f"{cfg.num_classes}", fix="set psad.segmenter.hist_classes to classes below num_classes "
                                                  "(null: every foreground class)")
    seed_everything(ctx.seed)
    model = _segmenter(cfg, ctx)
    images = load_preprocessed([*shots, *unlabeled], cfg.image_size, cfg.preprocess)
    labels = torch.zeros(len(images), cfg.image_size, cfg.image_size, dtype=torch.long)
    for i, m in enumerate(shot_masks):
        labels[i] = torch.from_numpy(preprocess_label(m, cfg.image_size, cfg.preprocess).astype(np.int64))
    history = train_segmentation(model, images, labels, np.arange(len(shots)), cfg.segmenter,
                                 num_classes=cfg.num_classes, seed=ctx.seed, device=ctx.device, progress=ctx.progress)
    return model, history


def fit_second_stage(fewshot: CoordSegmenter, train: Sequence[Path], cfg: PSADConfig,
                     ctx: RunContext) -> tuple[ResidualCoordSegmenter, list[dict[str, float]]]:
    """Second stage: pseudo-labels of every train image from ``fewshot`` → a fresh
    :class:`ResidualCoordSegmenter` trained on them (``cfg.retrain``). Memory: the train set at
    ``image_size`` (N·3·S² floats + N·S² labels)."""
    images = load_preprocessed(list(train), cfg.image_size, cfg.preprocess)
    pseudo = predict_labels(fewshot, images, batch_size=cfg.batch_size, device=ctx.device).long()
    seed_everything(ctx.seed)
    model = _segmenter(cfg, ctx, RETRAINED)
    history = train_segmentation(model, images, pseudo, np.arange(len(images)), cfg.retrain,
                                 num_classes=cfg.num_classes, seed=ctx.seed, device=ctx.device, progress=ctx.progress)
    return model, history


def _segmenter_meta(cfg: PSADConfig, kind: str) -> dict[str, Any]:
    encoder = cfg.segmenter_encoder if kind == FEWSHOT else cfg.retrain_encoder
    return {"num_classes": cfg.num_classes, "encoder": encoder,
            "preprocess": cfg.preprocess.model_dump()}


def save_part_segmenter(model: CoordSegmenter | ResidualCoordSegmenter, out_dir: Path, cfg: PSADConfig,
                        kind: str = FEWSHOT) -> None:
    """``<kind>.pth`` (state dict) + ``<kind>.json`` (classes, encoder, preprocessing)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out_dir / f"{kind}.pth")
    write_json(out_dir / f"{kind}.json", _segmenter_meta(cfg, kind))


def segmenter_settings(seg_dir: Path, cfg: PSADConfig) -> PSADConfig:
    """``cfg`` with the class count and preprocessing the few-shot segmenter in ``seg_dir`` used."""
    meta = Path(seg_dir) / SEGMENTER_META
    if not meta.is_file():
        return cfg
    m = read_json(meta)
    update: dict[str, Any] = {"num_classes": int(m["num_classes"])}
    if "preprocess" in m:
        update["preprocess"] = PreprocessConfig(**m["preprocess"])
    return cfg.model_copy(update=update)


def load_part_segmenter(seg_dir: Path, cfg: PSADConfig, ctx: RunContext,
                        kind: str = FEWSHOT) -> CoordSegmenter | ResidualCoordSegmenter:
    seg_dir = Path(seg_dir)
    meta_file = seg_dir / f"{kind}.json"
    if not meta_file.is_file():
        raise ArtifactError(f"no {kind} model", path=seg_dir, fix=f"run the {kind} stage with the current psad params")
    meta = read_json(meta_file)
    if meta != _segmenter_meta(cfg, kind):
        raise ArtifactError(f"{kind} was trained with {meta}", path=seg_dir,
                            fix=f"re-run the {kind} stage with the current psad params")
    model = _segmenter(cfg, ctx, kind)
    model.load_state_dict(torch.load(seg_dir / f"{kind}.pth", map_location="cpu", weights_only=True))
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
    requires = (FEWSHOT, RETRAINED, "patchcore")

    def __init__(self, cfg: PSADConfig, ctx: RunContext):
        # class count and preprocessing are per category: those the few-shot segmenter was trained with
        cfg = segmenter_settings(Path(ctx.upstream_dirs.get(FEWSHOT, "")), cfg)
        super().__init__(cfg, ctx)
        bad = set(cfg.memory_type) - set("hcp")
        if bad or not cfg.memory_type:
            raise UserError(f"psad memory_type {cfg.memory_type!r} must be letters of 'hcp'", fix="e.g. memory_type: hcp")
        self.features = PooledFeatures(build_backbone(cfg.feature_encoder, pretrained=ctx.pretrained,
                                                      weights_dir=ctx.weights_dir, seed=ctx.seed),
                                       cfg.feature_layers, cfg.avgpool_size)
        self.segmenter: CoordSegmenter | None = None
        self.patch_scores: dict[str, float] = {}
        self.patch_bank: dict[str, Any] = {}  # where patch_scores came from (set by the stage)
        self.seed_bank: torch.Tensor | None = None  # patch_bank: seed with save_bank: its bank [M, D], saved
        self.normal_images: list[str] = []  # the train images in the banks
        self.state: dict[str, torch.Tensor] = {}

    @property
    def segmenter_kind(self) -> str:
        return RETRAINED if self.cfg.second_stage else FEWSHOT

    def _load_segmenter(self) -> CoordSegmenter | ResidualCoordSegmenter:
        seg_dir = self.ctx.upstream_dirs.get(self.segmenter_kind)
        if seg_dir is None:
            raise ArtifactError(f"no {self.segmenter_kind} model directory given",
                                fix=f"run the {self.segmenter_kind} stage first")
        return load_part_segmenter(seg_dir, self.cfg, self.ctx, self.segmenter_kind)

    def part_maps(self, paths: Sequence[Path]) -> torch.Tensor:
        """uint8 [N,S,S] predicted part maps (S = image_size)."""
        return predict_labels(self.segmenter, load_preprocessed(list(paths), self.cfg.image_size, self.cfg.preprocess),
                              batch_size=self.cfg.batch_size, device=self.ctx.device).cpu()

    def bank_features(self, paths: Sequence[Path], part_maps: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"h": [N,C], "c": [N,(C−1)·D]}; images go through the CNN ``batch_size`` at a time."""
        c = self.cfg.num_classes
        comp = []
        for i in range(0, len(paths), self.cfg.batch_size):
            x = load_preprocessed(list(paths[i:i + self.cfg.batch_size]), self.cfg.image_size,
                                  self.cfg.preprocess).to(self.ctx.device)
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
        train = normal_subset(train, self.cfg.normal_fraction, self.ctx.seed, self.cfg.normal_subset)
        self.normal_images = [str(p) for p in train]
        patch_train = self._patch(train, "leave-one-out train") if "p" in self.cfg.memory_type else None
        self.segmenter = self._load_segmenter()
        self.fit_banks(self.bank_features(train, self.part_maps(train)), patch_train)

    def score(self, images: Sequence[Path]) -> Scores:
        patch = self._patch(images, "test") if "p" in self.cfg.memory_type else None
        parts = self.score_banks(self.bank_features(images, self.part_maps(images)), patch)
        total = sum(parts.values())
        return Scores(total.astype(np.float32), None, extras={k: v.astype(np.float32) for k, v in parts.items()})

    def save(self, model_dir: Path) -> None:
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        torch.save(self.state, Path(model_dir) / "psad_banks.pth")
        if self.seed_bank is not None:
            save_bank(model_dir, self.seed_bank)

    @classmethod
    def load(cls, model_dir: Path, cfg: PSADConfig, ctx: RunContext) -> PSAD:
        m = cls(cfg, ctx)
        m.segmenter = m._load_segmenter()
        m.state = torch.load(Path(model_dir) / "psad_banks.pth", map_location="cpu", weights_only=True)
        return m

    def weights_per_part(self) -> dict[str, str]:
        """Weights mode of each network: the feature encoder, the few-shot segmenter's encoder (from
        its stage's meta.json) and, with the second stage, the retrained trunk."""
        seg = getattr(self.segmenter.encoder, "weights", "random-init")
        parts = {"feature_encoder": self.features.encoder.weights}
        if self.cfg.second_stage:
            fewshot_meta = Path(self.ctx.upstream_dirs.get(FEWSHOT, "")) / "meta.json"
            parts["segmenter_encoder"] = (read_json(fewshot_meta).get("weights", "random-init")
                                          if fewshot_meta.is_file() else "random-init")
            parts["retrain_encoder"] = seg
        else:
            parts["segmenter_encoder"] = seg
        return parts

    def meta(self) -> dict[str, Any]:
        parts = self.weights_per_part()
        # the retrained trunk is random-init by the seed's design (retrain_pretrained: false): not judged
        judged = {v for k, v in parts.items() if k != "retrain_encoder" or self.cfg.retrain_pretrained}
        return {"memory_type": self.cfg.memory_type, "scale_type": self.cfg.scale_type,
                "nearest_rule": self.cfg.nearest_rule, "num_classes": self.cfg.num_classes,
                "segmenter": self.segmenter_kind, "preprocess": self.cfg.preprocess.model_dump(),
                "patch_bank": self.patch_bank or None,
                "normal_subset": {"fraction": self.cfg.normal_fraction, "rule": self.cfg.normal_subset,
                                  "seed": self.ctx.seed,
                                  "n": len(self.normal_images), "images": self.normal_images},
                "weights": judged.pop() if len(judged) == 1 else "random-init",  # any random part → random-init
                "weights_per_part": parts}

"""PatchCore as an ``AnomalyMethod``: memory bank of patch features + greedy coreset + exact kNN."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from scipy.ndimage import gaussian_filter

from ad_pipeline.backbones import FAMILIES, Backbone, BackboneSpec, build_backbone, require_family
from ad_pipeline.backbones.base import Layer
from ad_pipeline.components.coreset import greedy_coreset
from ad_pipeline.components.memory_bank import KnnScoring, MemoryBank
from ad_pipeline.components.patches import PatchAggregator, PatchFeatures
from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.io import read_json, save_npy, write_json
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext, Scores


class PatchCoreConfig(MethodConfig):
    """Paper / reference defaults (IM224 WRN50 baseline, spec/patchcore.md §1).

    ``layers="auto"``: for CNNs the backbone's stride-8/stride-16 pair (``layer2``/``layer3`` for
    ResNets, ``blocks.2``/``blocks.4`` for EfficientNets); for ViTs (CLIP / DINO / DINOv2) the
    patch tokens of the blocks at ~1/2 and ~3/4 depth (5, 8 of 12 blocks; 11, 17 of 24), given
    explicitly as 0-based block indices. Images are resized to ``resize`` then center-cropped to
    ``image_size`` (for ViTs a multiple of the patch size: 224 gives a 16×16 grid at patch 14,
    14×14 at 16, 28×28 at 8). Patch scores are *squared* L2 distances (mean over ``num_neighbors``),
    as faiss returns them in the reference; image score = max patch score, or the paper's
    re-weighted max with ``reweight`` (over ``reweight_neighbors`` = b neighbours). Maps: bilinear
    to ``image_size`` then Gaussian ``gaussian_sigma`` (pixels). ``knn_backend``: exact search as in
    ``components.knn`` ("pruned": ~2.3x faiss on real CNN features, bench/patchcore.py).
    ``backbone``/``device`` None → run context.

    Switches restoring the reference's behaviour (docs/parity.md): ``coreset_rng="global"`` draws
    the coreset projection and start points from the global torch / numpy RNGs (default: from the
    run seed, reproducible whatever ran before); ``bn_warmup=True`` runs the reference loader's
    one forward pass in train mode on an all-ones ``image_size`` image before scoring, which moves
    every BatchNorm's running statistics (up to the last used layer) toward that image (default:
    the weights' statistics as published, eval mode throughout).
    """

    backbone: str | None = None
    layers: Literal["auto"] | list[str | int] = "auto"
    resize: int = Field(256, gt=0)
    image_size: int = Field(224, gt=0)
    patch_size: int = Field(3, ge=1)
    pretrain_embed_dim: int = Field(1024, gt=0)
    target_embed_dim: int = Field(1024, gt=0)
    coreset_ratio: float = Field(0.1, gt=0, le=1)
    projection_dim: int = Field(128, gt=0)
    num_starting_points: int = Field(10, gt=0)
    num_neighbors: int = Field(1, gt=0)
    reweight: bool = False
    reweight_neighbors: int = Field(9, gt=0)
    gaussian_sigma: float = Field(4.0, ge=0)
    batch_size: int = Field(8, gt=0)
    knn_backend: Literal["auto", "faiss", "torch", "pruned"] = "auto"
    coreset_rng: Literal["seeded", "global"] = "seeded"
    bn_warmup: bool = False
    device: str | None = None


def auto_layers(spec: BackboneSpec) -> list[Layer]:
    """CNNs: the registry's stride-8/16 pair. ViTs: the middle two of the registry's four evenly
    spaced blocks (1/4, 1/2, 3/4, 1 of the depth), i.e. the blocks at ~1/2 and ~3/4 depth."""
    return list(spec.default_layers[1:3] if spec.is_vit else spec.default_layers)


def warm_up_batchnorm(backbone: Backbone, layers: Sequence[Layer], image_size: int) -> None:
    """The reference loader's side effect: one forward pass of an all-ones ``[1, 3, S, S]`` image in
    train mode (momentum updates of every BatchNorm's running statistics up to the last of
    ``layers``), then back to eval mode. A no-op for BatchNorm-free backbones (ViTs)."""
    if not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in backbone.modules()):
        return
    device = next(backbone.parameters()).device
    backbone.model.train()
    try:
        with torch.no_grad():
            backbone(torch.ones(1, 3, image_size, image_size, device=device), layers)
    finally:
        backbone.train(False)


class PatchCore(AnomalyMethod):
    """Fit: every train patch feature → greedy coreset memory bank. Score: kNN distance per patch."""

    name = "patchcore"
    Config = PatchCoreConfig
    pluggable_backbone = True
    paper_backbone = "wide_resnet50_2"

    def __init__(self, cfg: PatchCoreConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        spec = require_family(cfg.backbone or ctx.backbone, FAMILIES, self.name)
        if spec.is_vit and cfg.image_size % spec.patch_size:
            below = cfg.image_size // spec.patch_size * spec.patch_size
            fits = [f for f in (below, below + spec.patch_size) if f > 0]
            raise UserError(f"patchcore.image_size={cfg.image_size} is not a multiple of the patch size "
                            f"{spec.patch_size} of backbone {spec.name!r}",
                            fix=f"set patchcore.image_size to a multiple of {spec.patch_size}, e.g. "
                                f"{' or '.join(map(str, fits))}")
        self.device = torch.device(cfg.device or ctx.device)
        self.backbone = build_backbone(spec.name, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir,
                                       seed=ctx.seed).to(self.device)
        self.layers = auto_layers(spec) if cfg.layers == "auto" else list(cfg.layers)
        if cfg.bn_warmup:
            warm_up_batchnorm(self.backbone, self.layers, cfg.image_size)
        self.features = PatchFeatures(self.backbone, self.layers,
                                      PatchAggregator(cfg.patch_size, cfg.pretrain_embed_dim, cfg.target_embed_dim),
                                      resize=cfg.resize, image_size=cfg.image_size, batch_size=cfg.batch_size,
                                      cache_dir=ctx.cache_dir, progress=ctx.progress)
        self.scoring = KnnScoring(cfg.num_neighbors, cfg.reweight, cfg.reweight_neighbors, cfg.knn_backend,
                                  str(self.device))
        self.memory: MemoryBank | None = None  # bank [n_coreset, target_embed_dim] float32 (+ source ids after fit)
        self.bank_size = 0
        self._train: list[Path] | None = None  # kept by fit for train_loo_scores

    def embed(self, paths: Sequence[Path]) -> torch.Tensor:
        """Patch features [N, h, w, target_embed_dim] (see ``PatchFeatures``)."""
        return self.features(paths)

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        feats = self.embed(train)
        patches_per_image = feats.shape[1] * feats.shape[2]
        feats = feats.flatten(0, 2)
        self.bank_size = feats.shape[0]
        keep = greedy_coreset(feats, self.cfg.coreset_ratio, projection_dim=self.cfg.projection_dim,
                              num_starting_points=self.cfg.num_starting_points, seed=self.ctx.seed,
                              rng=self.cfg.coreset_rng, progress=self.ctx.progress)
        self.memory = MemoryBank(feats[keep].contiguous(), self.scoring, source=keep // patches_per_image)
        self._train = list(train)

    def score(self, images: Sequence[Path]) -> Scores:
        if self.memory is None:
            raise RuntimeError("PatchCore.score called before fit/load")
        cfg = self.cfg
        patch, scores = self.memory.scores(self.embed(images))
        maps = F.interpolate(patch[:, None], size=(cfg.image_size, cfg.image_size), mode="bilinear",
                             align_corners=False)[:, 0].numpy()
        if cfg.gaussian_sigma > 0:
            maps = gaussian_filter(maps, sigma=(0, cfg.gaussian_sigma, cfg.gaussian_sigma))
        _require_finite(scores, maps)
        return Scores(scores=scores, maps=maps.astype(np.float32))

    def train_loo_scores(self) -> np.ndarray:
        """Leave-one-image-out image scores of the train images [N_train] float32 (spec/psad.md §4).

        Score i is the usual image score of train image i against the memory bank without the
        coreset rows that came from image i. Train features are re-extracted (a feature-cache hit
        when ``cache_dir`` is set) and aggregated ``batch_size`` images at a time. Memory: the raw
        backbone maps of the train set, the bank, and one chunk's features and kNN lists.
        """
        if self._train is None:
            raise RuntimeError("PatchCore.train_loo_scores needs fit in the same process (not available after load)")
        if len(self._train) < 2:
            raise UserError(f"leave-one-out train scores need at least 2 train images, got {len(self._train)}",
                            path=self._train[0] if self._train else None, fix="add normal train images")
        maps = self.features.backbone_maps(self._train)
        scores = []
        for start in range(0, len(self._train), self.cfg.batch_size):
            feats = self.features.aggregate(maps, slice(start, start + self.cfg.batch_size))
            scores.append(self.memory.scores(feats, torch.arange(start, start + feats.shape[0]))[1])
        scores = np.concatenate(scores)
        _require_finite(scores)
        return scores

    def _state(self) -> dict[str, Any]:
        return {"backbone": self.backbone.spec.name, "weights": self.backbone.weights, "layers": self.layers,
                "seed": self.ctx.seed, "bank_size": self.bank_size, "config": self.cfg.model_dump()}

    def save(self, model_dir: Path) -> None:
        if self.memory is None:
            raise RuntimeError("PatchCore.save called before fit")
        save_npy(Path(model_dir) / "memory_bank.npy", self.memory.bank.cpu().numpy())
        write_json(Path(model_dir) / "patchcore.json", self._state())

    @classmethod
    def load(cls, model_dir: Path, cfg: PatchCoreConfig, ctx: RunContext) -> PatchCore:
        model_dir = Path(model_dir)
        method = cls(cfg, ctx)
        saved = read_json(model_dir / "patchcore.json")
        current = method._state()
        for key in ("backbone", "weights", "layers", "config"):
            if saved.get(key) != current[key]:
                raise ArtifactError(f"model was fitted with {key}={saved.get(key)!r}, now {current[key]!r}",
                                    path=model_dir, fix="re-run the patchcore stage with the current params/weights")
        bank_file = model_dir / "memory_bank.npy"
        if not bank_file.is_file():
            raise ArtifactError("memory_bank.npy missing", path=model_dir, fix="re-run the patchcore stage")
        bank = np.load(bank_file, allow_pickle=False)
        if bank.ndim != 2 or bank.shape[1] != cfg.target_embed_dim:
            raise ArtifactError(f"memory bank has shape {bank.shape}, expected [n, {cfg.target_embed_dim}]",
                                path=bank_file, fix="re-run the patchcore stage")
        method.memory = MemoryBank(torch.from_numpy(bank), method.scoring)
        method.bank_size = int(saved["bank_size"])
        return method

    def meta(self) -> dict[str, Any]:
        return {"backbone": self.backbone.spec.name, "weights": self.backbone.weights, "layers": self.layers,
                "memory_bank_size": self.bank_size,
                "coreset_size": 0 if self.memory is None else int(self.memory.bank.shape[0])}


def _require_finite(*arrays: np.ndarray) -> None:
    if not all(np.isfinite(a).all() for a in arrays):
        raise FloatingPointError("PatchCore produced non-finite scores (features overflowed?)")

"""``MuSc``: zero-shot, transductive scoring of a whole unlabeled test set (spec/musc.md).

Pipeline per ``score(paths)``: one ViT pass per batch (patch tokens of the chosen blocks + image
embedding; with ``cache_features`` kept under the run's ``cache_dir``, so re-runs with other r_list /
k_fraction / divide_num / RsCIN settings skip the ViT) -> LayerNormed maps -> per ``divide_num`` subset and per (layer, r): LNAMD + MSM ->
mean patch scores -> maps (bilinear, align_corners=True, to ``image_size``) -> image score = max of
the upsampled map (as the official code; not the grid max) -> RsCIN re-scoring with the embeddings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from scipy.ndimage import gaussian_filter

from ad_pipeline.backbones import EMBEDDING, Backbone, build_backbone, extract_features, require_family
from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext, Scores
from ad_pipeline.methods.musc.lnamd import tokens_to_normed_map
from ad_pipeline.methods.musc.msm import MATMUL_DTYPES, neighbour_count, patch_scores, plan_chunks
from ad_pipeline.methods.musc.rscin import default_k_list, rescore
from ad_pipeline.methods.musc.subsets import defect_type_of, stratified_subsets

log = logging.getLogger(__name__)

VIT_FAMILIES = ("clip", "dino", "dinov2")
_UPSAMPLE_CHUNK = 16  # maps upsampled at a time (bounds the float64 temporary)


class MuScConfig(MethodConfig):
    """Defaults are the paper's (ViT-L-14-336 at 518; the backbone itself comes from the run context).

    ``layers``: 0-based ViT blocks, "auto" = the backbone's MuSc blocks ([5,11,17,23] for ViT-L,
    [2,5,8,11] for ViT-B). ``k_fraction``: k = int(k_fraction·(N−1)) nearest images averaged.
    ``rscin_k_list``: RsCIN windows, None = per dataset format, a 0 disables RsCIN.
    ``max_memory_gb``: MSM working memory (max-similarity table + one similarity block).
    ``precision``: dtype of the MSM matmuls and (under autocast) of the ViT forward.
    ``device``: None = the run context's device. ``smoothing_sigma``: Gaussian sigma in pixels of
    the output map, 0 = none (as the paper). ``classification_only``: return no maps.
    ``cache_features``: keep the ViT outputs in the run's ``cache_dir`` (N·layers·h·w·C·4 B on disk,
    23 MB per image for ViT-L-14-336 at 518) so scoring-only changes re-run without the ViT.
    ``clip_activation`` (CLIP only): "auto" follows the weights (``vit.clip_activation``); "official"
    = what the official code builds: auto at the weights' native size, GELU at any other size (its
    default ViT-L-14-336 @ 518 runs OpenAI's weights with GELU); "quick_gelu" / "gelu" force one.
    """

    image_size: int = Field(518, ge=8)
    layers: Literal["auto"] | list[int] = "auto"
    r_list: list[int] = [1, 3, 5]
    k_fraction: float = Field(0.3, gt=0, le=1)
    divide_num: int = Field(1, ge=1)
    rscin_k_list: list[int] | None = None
    batch_size: int = Field(4, ge=1)
    max_memory_gb: float = Field(2.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    device: str | None = None
    smoothing_sigma: float = Field(0.0, ge=0)
    classification_only: bool = False
    cache_features: bool = False
    clip_activation: Literal["auto", "official", "quick_gelu", "gelu"] = "auto"

    @field_validator("r_list")
    @classmethod
    def _odd_degrees(cls, v: list[int]) -> list[int]:
        if not v or any(r < 1 or r % 2 == 0 for r in v):
            raise ValueError(f"r_list needs positive odd aggregation degrees (e.g. [1, 3, 5]), got {v}")
        return v

    @field_validator("rscin_k_list")
    @classmethod
    def _non_negative_windows(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(k < 0 for k in v)):
            raise ValueError(f"rscin_k_list needs window sizes >= 1 (or a 0 to disable RsCIN), got {v}")
        return v


class MuSc(AnomalyMethod):
    """Mutual scoring of the unlabeled test images; ``fit`` is a no-op, ``score`` scores the set."""

    name = "musc"
    Config = MuScConfig
    zero_shot = True
    pluggable_backbone = True
    paper_backbone = "ViT-L-14-336"
    follows_top_level_backbone = False  # a ViT of its own, never the top-level (CNN) backbone
    map_dtype = "float32"  # the official maps are evaluated in float32; float16 would be 2e-4 off

    def __init__(self, cfg: MuScConfig, ctx: RunContext, *, backbone: Backbone | None = None):
        """``backbone``: an already built ``ctx.backbone`` to share (tests, benchmarks); else built lazily."""
        super().__init__(cfg, ctx)
        self.spec = require_family(ctx.backbone, VIT_FAMILIES, self.name)
        if backbone is not None and backbone.spec.name != self.spec.name:
            raise ValueError(f"backbone {backbone.spec.name!r} given for ctx.backbone {self.spec.name!r}")
        wanted = self._activation()
        if backbone is not None and wanted != "auto" and backbone.activation not in (None, wanted):
            raise ValueError(f"backbone built with {backbone.activation}, clip_activation asks for {wanted}")
        self.layers = list(self.spec.default_layers) if cfg.layers == "auto" else list(cfg.layers)
        self.device = torch.device(cfg.device or ctx.device)
        self._backbone = None if backbone is None else backbone.to(self.device)
        self._facts: dict[str, Any] = {}

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        """Zero-shot: nothing to fit."""

    @classmethod
    def load(cls, model_dir: Path, cfg: MuScConfig, ctx: RunContext) -> MuSc:
        return cls(cfg, ctx)  # stateless

    def score(self, images: Sequence[Path]) -> Scores:
        """Scores float32 [N] (RsCIN) and maps float32 [N, S, S] (None if classification_only).

        Memory: normed token maps N·layers·h·w·C·4 B + one Z (subset·h·w·C·4 B) + ``max_memory_gb``
        + the output maps N·S²·4 B. ``extras``: raw max scores, warnings.
        """
        paths = [Path(p) for p in images]
        if len(paths) < 2:
            raise UserError(f"MuSc scores images against each other and needs at least 2 test images, got {len(paths)}",
                            fix="score the whole test set of a category at once")
        subsets = stratified_subsets([defect_type_of(p) for p in paths], self.cfg.divide_num, self.ctx.seed)
        warnings: list[str] = []
        ks = [self._neighbour_k(len(s), warnings) for s in subsets]
        t0 = time.perf_counter()
        with torch.inference_mode():
            fmaps, embeddings = self._features(paths)
            t_features = time.perf_counter() - t0
            patch = torch.empty(len(paths), fmaps[0].shape[-2] * fmaps[0].shape[-1], dtype=torch.float64)
            for subset, k in zip(subsets, ks):
                index = torch.tensor(subset, device=self.device)
                maps_of_subset = fmaps if len(subsets) == 1 else [m.index_select(0, index) for m in fmaps]
                patch[subset] = patch_scores(maps_of_subset, self.cfg.r_list, k,
                                             max_memory_bytes=self.cfg.max_memory_gb * 2**30,
                                             precision=self.cfg.precision, progress=self.ctx.progress)
                del maps_of_subset
            patch = patch.view(len(paths), *fmaps[0].shape[-2:])
        maps, raw = self._upsample(patch, keep=not self.cfg.classification_only)
        k_list = default_k_list(self.ctx.dataset_format) if self.cfg.rscin_k_list is None else self.cfg.rscin_k_list
        final, rscin_warnings = rescore(raw, embeddings.double().numpy(), k_list)
        warnings += rscin_warnings
        for w in warnings:
            log.warning("MuSc: %s", w)
        n_patches = patch.shape[1] * patch.shape[2]
        plan = plan_chunks(max(len(s) for s in subsets), n_patches, self.cfg.max_memory_gb * 2**30)
        self._facts = {"grid": list(patch.shape[1:]), "subset_sizes": [len(s) for s in subsets], "k": ks,
                       "rscin_k_list": list(k_list), "chunk_plan": {"block": plan.block, "band": plan.band},
                       "warnings": warnings, "features_s": round(t_features, 3),
                       "scoring_s": round(time.perf_counter() - t0 - t_features, 3)}
        return Scores(scores=final.astype(np.float32),
                      maps=None if self.cfg.classification_only else maps,
                      extras={"raw_scores": raw.astype(np.float32), "warnings": warnings})

    def meta(self) -> dict[str, Any]:
        bb = self._backbone
        return {"backbone": self.spec.name, "weights": None if bb is None else bb.weights, "layers": self.layers,
                "image_size": self.cfg.image_size, "activation": None if bb is None else bb.activation,
                "activation_reason": getattr(bb, "activation_reason", None), **self._facts}

    def _activation(self) -> str:
        """The ``clip_activation`` to build with ("official" resolved by the image size)."""
        act = self.cfg.clip_activation
        if act == "official":
            return "auto" if self.cfg.image_size == self.spec.image_size else "gelu"
        return act

    def _neighbour_k(self, n: int, warnings: list[str]) -> int:
        """k for a subset of n images; k = 0 (too few images) falls back to 1 with a warning."""
        if n < 2:
            raise UserError(f"divide_num={self.cfg.divide_num} leaves a subset of {n} image(s); MuSc needs >= 2",
                            fix="lower musc.divide_num")
        k = neighbour_count(n, self.cfg.k_fraction)
        if k == 0:
            warnings.append(f"k = int({self.cfg.k_fraction}·({n}−1)) = 0 for {n} images; using k = 1")
            k = 1
        return k

    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = build_backbone(self.spec.name, pretrained=self.ctx.pretrained,
                                            weights_dir=self.ctx.weights_dir, seed=self.ctx.seed,
                                            clip_activation=self._activation()).to(self.device)
        return self._backbone

    def _features(self, paths: list[Path]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """LayerNormed maps, one [N, C, h, w] per layer (on the device), and embeddings [N, D] (CPU).

        Memory: the tokens of all layers on the host (N·layers·h·w·C·4 B) while the maps are built
        (one layer's tokens are freed as its map is made).
        """
        bb = self.backbone()
        grid = bb.grid_size(self.cfg.image_size)
        if min(grid) < 1:
            raise UserError(f"image_size {self.cfg.image_size} is smaller than the patch size of {self.spec.name}",
                            fix=f"set musc.image_size to a multiple of {self.spec.patch_size}")
        resample = "bicubic" if self.spec.family == "clip" else "bilinear"
        low_precision = self.cfg.precision != "fp32"
        with torch.autocast(self.device.type, dtype=MATMUL_DTYPES[self.cfg.precision], enabled=low_precision):
            feats = extract_features(bb, paths, size=self.cfg.image_size, layers=[*self.layers, EMBEDDING],
                                     batch_size=self.cfg.batch_size, resample=resample,
                                     cache_dir=self.ctx.cache_dir if self.cfg.cache_features else None,
                                     progress=self.ctx.progress)
        embeddings = _finite(feats.pop(EMBEDDING), paths, "image embedding")
        fmaps = []
        for layer in self.layers:
            tokens = _finite(feats.pop(layer), paths, f"block {layer} tokens")
            fmaps.append(torch.cat([tokens_to_normed_map(t.to(self.device), grid)
                                    for t in tokens.split(self.cfg.batch_size)]))
            del tokens
        return fmaps, embeddings

    def _upsample(self, patch: torch.Tensor, *, keep: bool) -> tuple[np.ndarray | None, np.ndarray]:
        """Patch scores float64 [N, h, w] -> maps float32 [N, S, S] (bilinear, align_corners=True,
        optional blur; None unless ``keep``) and the image scores float64 [N]: the max of each
        float64 map. Only the grid corners are sampled exactly, so that max is below the grid max
        whenever the grid max is not at a corner."""
        size = self.cfg.image_size
        maps = np.empty((patch.shape[0], size, size), dtype=np.float32) if keep else None
        raw = np.empty(patch.shape[0], dtype=np.float64)
        for start in range(0, patch.shape[0], _UPSAMPLE_CHUNK):
            chunk = patch[start:start + _UPSAMPLE_CHUNK, None]
            up = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=True)[:, 0].numpy()
            if self.cfg.smoothing_sigma > 0:
                up = np.stack([gaussian_filter(m, sigma=self.cfg.smoothing_sigma, truncate=4.0) for m in up])
            raw[start:start + len(up)] = up.reshape(len(up), -1).max(axis=1)
            if keep:
                maps[start:start + len(up)] = up
        return maps, raw


def _finite(t: torch.Tensor, paths: Sequence[Path], what: str) -> torch.Tensor:
    """``t`` [N, ...] unchanged, or a UserError naming the first image with a non-finite value."""
    bad = ~torch.isfinite(t).flatten(1).all(dim=1)
    if bool(bad.any()):
        path = paths[int(bad.nonzero()[0])]
        raise UserError(f"the backbone produced non-finite {what} for this image", path=path,
                        fix="check the image and the weights file; use musc.precision: fp32")
    return t

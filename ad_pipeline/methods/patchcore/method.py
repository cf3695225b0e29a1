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

from ad_pipeline.backbones import build_backbone, extract_features, require_family
from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import read_json, save_npy, write_json
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext, Scores
from ad_pipeline.methods.patchcore.coreset import greedy_coreset
from ad_pipeline.methods.patchcore.knn import nearest_sq_distances
from ad_pipeline.methods.patchcore.model import PatchAggregator


class PatchCoreConfig(MethodConfig):
    """Paper / reference defaults (IM224 WRN50 baseline, spec/patchcore.md §1).

    ``layers="auto"``: the backbone's stride-8/stride-16 pair (``layer2``/``layer3`` for ResNets,
    ``blocks.2``/``blocks.4`` for EfficientNets). Images are resized to ``resize`` then center-cropped
    to ``image_size``. Patch scores are *squared* L2 distances (mean over ``num_neighbors``), as
    faiss returns them in the reference; image score = max patch score, or the paper's re-weighted
    max with ``reweight`` (over ``reweight_neighbors`` = b neighbours). Maps: bilinear to
    ``image_size`` then Gaussian ``gaussian_sigma`` (pixels). ``backbone``/``device`` None → run context.
    """

    backbone: str | None = None
    layers: Literal["auto"] | list[str] = "auto"
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
    device: str | None = None


class PatchCore(AnomalyMethod):
    """Fit: every train patch feature → greedy coreset memory bank. Score: kNN distance per patch."""

    name = "patchcore"
    Config = PatchCoreConfig
    pluggable_backbone = True

    def __init__(self, cfg: PatchCoreConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        spec = require_family(cfg.backbone or ctx.backbone, ["cnn"], self.name)
        self.device = torch.device(cfg.device or ctx.device)
        self.backbone = build_backbone(spec.name, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir,
                                       seed=ctx.seed).to(self.device)
        self.layers = list(spec.default_layers) if cfg.layers == "auto" else list(cfg.layers)
        self.aggregator = PatchAggregator(cfg.patch_size, cfg.pretrain_embed_dim, cfg.target_embed_dim)
        self.memory_bank: torch.Tensor | None = None  # [n_coreset, target_embed_dim] float32
        self.bank_size = 0

    def embed(self, paths: Sequence[Path]) -> torch.Tensor:
        """Patch features [N, h, w, target_embed_dim] (h = w = image_size / 8 for stride-8 layers)."""
        cfg = self.cfg
        maps = extract_features(self.backbone, paths, size=cfg.resize, crop=cfg.image_size, layers=self.layers,
                                batch_size=cfg.batch_size, cache_dir=self.ctx.cache_dir, progress=self.ctx.progress)
        n = len(paths)
        return torch.cat([self.aggregator([maps[layer][i:i + cfg.batch_size] for layer in self.layers])
                          for i in range(0, n, cfg.batch_size)])

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        feats = self.embed(train).flatten(0, 2)
        self.bank_size = feats.shape[0]
        keep = greedy_coreset(feats, self.cfg.coreset_ratio, projection_dim=self.cfg.projection_dim,
                              num_starting_points=self.cfg.num_starting_points, seed=self.ctx.seed,
                              progress=self.ctx.progress)
        self.memory_bank = feats[keep].contiguous()

    def score(self, images: Sequence[Path]) -> Scores:
        if self.memory_bank is None:
            raise RuntimeError("PatchCore.score called before fit/load")
        cfg = self.cfg
        feats = self.embed(images)
        n, h, w, d = feats.shape
        bank = self.memory_bank.to(self.device)
        k = max(cfg.num_neighbors, 1)
        sq, idx = nearest_sq_distances(feats.reshape(-1, d).to(self.device), bank, k)
        patch = sq.mean(dim=1).reshape(n, h, w).cpu()
        scores = patch.flatten(1).amax(dim=1)
        if cfg.reweight:
            scores = self._reweighted(feats.reshape(n, h * w, d), patch.reshape(n, -1), idx[:, 0].reshape(n, -1), bank)
        maps = F.interpolate(patch[:, None], size=(cfg.image_size, cfg.image_size), mode="bilinear",
                             align_corners=False)[:, 0].numpy()
        if cfg.gaussian_sigma > 0:
            maps = gaussian_filter(maps, sigma=(0, cfg.gaussian_sigma, cfg.gaussian_sigma))
        scores = scores.numpy().astype(np.float32)
        if not (np.isfinite(scores).all() and np.isfinite(maps).all()):
            raise FloatingPointError("PatchCore produced non-finite scores (features overflowed?)")
        return Scores(scores=scores, maps=maps.astype(np.float32))

    def _reweighted(self, feats: torch.Tensor, patch: torch.Tensor, nearest: torch.Tensor,
                    bank: torch.Tensor) -> torch.Tensor:
        """Paper eq. 7: s = (1 − exp‖t−m*‖ / Σ_{m∈N_b(m*)} exp‖t−m‖) · s*, t = the max-scoring test patch,
        m* its nearest bank feature, N_b(m*) the b nearest bank features of m* (m* included)."""
        worst = patch.argmax(dim=1)  # [N]
        rows = torch.arange(feats.shape[0])
        t = feats[rows, worst].to(bank.device).float()  # [N, D]
        m_star = bank[nearest[rows, worst]]  # [N, D]
        b = min(self.cfg.reweight_neighbors, bank.shape[0])
        _, neigh = nearest_sq_distances(m_star, bank, b)
        d_neigh = (t[:, None, :] - bank[neigh]).norm(dim=-1).double()  # [N, b]
        d_star = (t - m_star).norm(dim=-1).double()
        share = 1.0 / torch.exp(d_neigh - d_star[:, None]).sum(dim=1)  # exp(d*)/Σexp(d), overflow-safe
        return ((1 - share) * patch[rows, worst].double()).float().cpu()

    def _state(self) -> dict[str, Any]:
        return {"backbone": self.backbone.spec.name, "weights": self.backbone.weights, "layers": self.layers,
                "seed": self.ctx.seed, "bank_size": self.bank_size, "config": self.cfg.model_dump()}

    def save(self, model_dir: Path) -> None:
        if self.memory_bank is None:
            raise RuntimeError("PatchCore.save called before fit")
        save_npy(Path(model_dir) / "memory_bank.npy", self.memory_bank.cpu().numpy())
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
        method.memory_bank = torch.from_numpy(bank)
        method.bank_size = int(saved["bank_size"])
        return method

    def meta(self) -> dict[str, Any]:
        return {"backbone": self.backbone.spec.name, "weights": self.backbone.weights, "layers": self.layers,
                "memory_bank_size": self.bank_size,
                "coreset_size": 0 if self.memory_bank is None else int(self.memory_bank.shape[0])}

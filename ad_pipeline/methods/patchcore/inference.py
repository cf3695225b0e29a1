"""PatchCore's inference graph for export, memory bank included.

Unit RGB [B,3,S,S] → (map [B,S,S], score [B]): backbone normalisation → backbone → patch
aggregation (its adaptive pooling as fixed matrices) → exact kNN against the bank as one [B·h·w, M] squared-distance block and top-k
(``‖q‖² + ‖m‖² − 2 qᵀm``, clamped at 0, as faiss computes it) → mean over ``num_neighbors`` →
image score = max patch score → bilinear to S → Gaussian blur (σ = ``gaussian_sigma``,
scipy's truncate 4 and "reflect" borders, as ``PatchCore.score``). The block costs
4·B·h·w·M bytes, so the graph is for banks of at most ``MAX_GRAPH_BANK`` rows; the paper's
re-weighted score (``reweight``) is not in the graph.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ad_pipeline.components.patches import pool_to
from ad_pipeline.export.inference import Inference, Normalize, NotExportable
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore.method import PatchCore, PatchCoreConfig

MAX_GRAPH_BANK = 50_000
GAUSSIAN_TRUNCATE = 4.0  # scipy.ndimage.gaussian_filter's default


def gaussian_kernel(sigma: float, truncate: float = GAUSSIAN_TRUNCATE) -> torch.Tensor:
    """scipy's normalised 1-D Gaussian weights [2r+1], r = int(truncate·σ + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / sigma**2 * x**2)
    return torch.from_numpy(phi / phi.sum()).float()


def reflect_index(n: int, radius: int) -> torch.Tensor:
    """Indices [n + 2r] padding a length-n axis by r on both sides with scipy's "reflect" mode
    (d c b a | a b c d | d c b a); needs r ≤ n."""
    if radius > n:
        raise NotExportable(f"Gaussian radius {radius} exceeds the map size {n}",
                            fix="lower patchcore.gaussian_sigma or raise image_size")
    return torch.cat([torch.arange(radius - 1, -1, -1), torch.arange(n), torch.arange(n - 1, n - 1 - radius, -1)])


class GaussianBlur(nn.Module):
    """Separable Gaussian blur of maps [B,1,n,n] with scipy's borders (see ``reflect_index``)."""

    def __init__(self, sigma: float, n: int):
        super().__init__()
        kernel = gaussian_kernel(sigma)
        self.register_buffer("kx", kernel.view(1, 1, 1, -1))
        self.register_buffer("ky", kernel.view(1, 1, -1, 1))
        self.register_buffer("index", reflect_index(n, (len(kernel) - 1) // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x.index_select(3, self.index), self.kx)
        return F.conv2d(x.index_select(2, self.index), self.ky)


class MatrixPool(nn.Module):
    """``pool_to`` as a product with its fixed [L, dim] averaging matrix, one per (L, dim) in
    ``sizes`` (ONNX has no adaptive pooling to a size that does not divide the input's)."""

    def __init__(self, sizes: list[tuple[int, int]]):
        super().__init__()
        for length, dim in sizes:
            self.register_buffer(f"m_{length}_{dim}", pool_to(torch.eye(length), dim))

    def forward(self, vectors: torch.Tensor, dim: int) -> torch.Tensor:
        return vectors @ getattr(self, f"m_{vectors.shape[1]}_{dim}")


class PatchCoreInference(nn.Module):
    def __init__(self, method: PatchCore):
        super().__init__()
        cfg = method.cfg
        spec = method.backbone.spec
        self.normalize = Normalize(spec.mean, spec.std)
        self.backbone = method.backbone.cpu().eval()
        self.aggregator = method.features.aggregator
        self.layers = list(method.layers)
        self.grid = method.backbone.grid_size(cfg.image_size) if spec.is_vit else None
        with torch.no_grad():
            channels = [g.shape[1] for g in self._grids(torch.zeros(1, 3, cfg.image_size, cfg.image_size))]
        p2, agg = cfg.patch_size**2, self.aggregator
        self.pool = MatrixPool([(c * p2, agg.pretrain_embed_dim) for c in channels]
                               + [(len(channels) * agg.pretrain_embed_dim, agg.target_embed_dim)])
        self.k = cfg.num_neighbors
        self.size = cfg.image_size
        bank = method.memory.bank.float().contiguous()
        self.register_buffer("bank_t", bank.T.contiguous())  # [D, M]
        self.register_buffer("bank_sq", (bank * bank).sum(dim=1))  # [M]
        self.blur = GaussianBlur(cfg.gaussian_sigma, cfg.image_size) if cfg.gaussian_sigma > 0 else None

    def _grids(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone maps [B, C, h, w] of the configured layers (ViT tokens put on their grid)."""
        feats = self.backbone(self.normalize(x), self.layers)
        grids = [feats[layer] for layer in self.layers]
        if self.grid is not None:  # ViT tokens [B, h*w, C] -> [B, C, h, w]
            grids = [tokens.transpose(1, 2).unflatten(2, self.grid) for tokens in grids]
        return grids

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = self.aggregator(self._grids(x), pool=self.pool)  # [B, h, w, D]
        b, h, w, d = emb.shape
        q = emb.reshape(b * h * w, d)
        dist = torch.addmm(self.bank_sq[None, :], q, self.bank_t, alpha=-2).add((q * q).sum(1, keepdim=True))
        nearest = torch.topk(dist.clamp(min=0), self.k, dim=1, largest=False).values
        patch = nearest.mean(dim=1).reshape(b, 1, h, w)
        score = patch.flatten(1).amax(dim=1)
        amap = F.interpolate(patch, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.blur is not None:
            amap = self.blur(amap)
        return amap[:, 0], score


def build(model_dir: Path, cfg: PatchCoreConfig, ctx: RunContext) -> Inference:
    if cfg.reweight:
        raise NotExportable("PatchCore's re-weighted image score (reweight: true) is not in the export graph",
                            fix="export a model fitted with patchcore.reweight: false")
    method = PatchCore.load(model_dir, cfg, ctx)
    if method.memory.bank.shape[0] > MAX_GRAPH_BANK:
        raise NotExportable(f"memory bank of {method.memory.bank.shape[0]} rows is too large for the in-graph kNN "
                            f"(limit {MAX_GRAPH_BANK})", path=model_dir,
                            fix="lower patchcore.coreset_ratio for a deployable model")
    return Inference(PatchCoreInference(method), resize=cfg.resize, crop=cfg.image_size)

"""PSAD's patch bank as the seed computes it (psad.md §4; ``patch_bank: seed``, docs/parity.md).

The seed's anomalib-derived PatchCore on PSAD's preprocessed images: each ``image_size``² PSAD
input is resized to ``cfg.image_size``² (PIL Lanczos), backbone ``layers`` are each 3×3
average-pooled (stride 1, pad 1), the deeper ones nearest-upsampled to the first one's grid and
concatenated → D-dim patch features (WRN-101-2 layer2 + layer3: 1536, 32×32 patches at 256²).
Memory bank = every train patch (no coreset). Per image, with d [P, k] the L2 distances of its
P patches to their k nearest bank patches (ascending), all /10: patch score = d[:, 0]; image
score = (1 − max_j e^{d*_j} / Σ_j e^{d*_j}) · d*_1 for the patch d* with the largest d[:, 0]
(k = 1: max d[:, 0]). Train images are scored leave-one-image-out (their own patches masked).
With ``save_bank`` psad@ keeps the bank (``seed_bank.npy`` in its model folder) so that its
inference graph (methods/psad/inference.py) can hold it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

import numpy as np

from ad_pipeline.backbones import build_backbone
from ad_pipeline.backbones.base import Backbone
from ad_pipeline.data.images import load_rgb, normalized_batch
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.psad.preprocess import PreprocessConfig, preprocess


class SeedBankConfig(BaseModel):
    """The seed's ``patchcore/run.py --mode standardization`` settings."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = "wide_resnet101_2"
    layers: tuple[str, ...] = ("layer2", "layer3")
    image_size: int = Field(256, gt=0)  # run.py --size: the PSAD input (512²) resized to this
    pool: int = Field(3, ge=1)
    num_neighbors: int = Field(9, gt=0)
    batch_size: int = Field(8, gt=0)
    chunk: int = Field(256, gt=0)  # query patches per distance block (memory: chunk × bank rows floats)
    # keep the bank in psad@'s model folder (N·h·w·D float32: ~2.2 GB for 351 breakfast_box images
    # at 256², so off by default); export@ needs it to put the patch term in the graph
    save_bank: bool = False


BANK_FILE = "seed_bank.npy"


def save_bank(model_dir: Path, bank: torch.Tensor) -> None:
    """``<model_dir>/seed_bank.npy``: the memory bank [M, D] float32."""
    np.save(Path(model_dir) / BANK_FILE, bank.cpu().numpy().astype(np.float32), allow_pickle=False)


def load_bank(model_dir: Path) -> torch.Tensor | None:
    """The bank saved by :func:`save_bank`, None when psad@ did not keep it."""
    path = Path(model_dir) / BANK_FILE
    return torch.from_numpy(np.load(path, allow_pickle=False)) if path.is_file() else None


def build_seed_backbone(cfg: SeedBankConfig, ctx: RunContext) -> Backbone:
    return build_backbone(cfg.backbone, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir, seed=ctx.seed)


def load_inputs(paths: Sequence[str | Path], psad_size: int, pre: PreprocessConfig, size: int) -> torch.Tensor:
    """Normalised [B,3,size,size]: PSAD's preprocessing to ``psad_size``², then Lanczos to ``size``²."""
    return normalized_batch([preprocess(load_rgb(p), psad_size, pre).resize((size, size), Image.LANCZOS)
                             for p in paths])


def patch_embedding(backbone: Backbone, x: torch.Tensor, layers: Sequence[str], pool: int) -> torch.Tensor:
    """[B,3,H,W] → [B, D, h, w] on the first layer's h×w grid."""
    feats = backbone(x, list(layers))
    maps = [F.avg_pool2d(feats[name], pool, stride=1, padding=pool // 2) for name in layers]
    grid = maps[0].shape[-2:]
    return torch.cat([maps[0], *(F.interpolate(m, size=grid, mode="nearest") for m in maps[1:])], 1)


def patch_features(backbone: Backbone, x: torch.Tensor, layers: Sequence[str], pool: int) -> torch.Tensor:
    """[B,3,H,W] → [B, h·w, D] (row-major over the first layer's h×w grid)."""
    return patch_embedding(backbone, x, layers, pool).flatten(2).transpose(1, 2)


def knn_distances(queries: torch.Tensor, bank: torch.Tensor, k: int, chunk: int,
                  hidden: slice | None = None) -> torch.Tensor:
    """L2 distances [Q, k] (ascending) of ``queries`` [Q,D] to their k nearest rows of ``bank`` [M,D],
    ``bank[hidden]`` excluded."""
    out = []
    for i in range(0, len(queries), chunk):
        d = torch.cdist(queries[i:i + chunk], bank)
        if hidden is not None:
            d[:, hidden] = float("inf")
        out.append(d.topk(k, dim=1, largest=False).values)
    return torch.cat(out)


def image_score(knn: torch.Tensor) -> float:
    """The seed's image score of one image from its patches' kNN distances [P, k] (module docstring)."""
    d = knn / 10
    if d.shape[1] == 1:
        return float(d[:, 0].max())
    conf = d[d[:, 0].argmax()]
    return float((1 - conf.exp().max() / conf.exp().sum()) * conf[0])


def seed_bank_scores(cfg: SeedBankConfig, psad_size: int, pre: PreprocessConfig, ctx: RunContext, train: Sequence[Path],
                     others: Sequence[Sequence[Path]]) -> tuple[dict[str, float], dict[str, Any], torch.Tensor]:
    """Image scores {path: score}: ``train`` leave-one-out, every image of ``others`` against the whole
    bank; the facts for meta.json; and the bank [N·h·w, D] float32. Memory: the bank + chunk × N·h·w
    distances."""
    backbone = build_seed_backbone(cfg, ctx).to(ctx.device)

    def embed(paths: Sequence[Path]) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([patch_features(backbone, load_inputs(paths[i:i + cfg.batch_size], psad_size, pre,
                                                                   cfg.image_size).to(ctx.device), cfg.layers, cfg.pool)
                              for i in range(0, len(paths), cfg.batch_size)])

    train = list(train)
    feats = embed(train)  # [N, P, D]
    n, p = feats.shape[:2]
    if n < 2:
        raise ValueError("the leave-one-out patch bank needs at least 2 training images")
    bank = feats.flatten(0, 1)
    k = min(cfg.num_neighbors, (n - 1) * p)
    scores = {str(path): image_score(knn_distances(feats[i], bank, k, cfg.chunk, slice(i * p, (i + 1) * p)))
              for i, path in enumerate(train)}
    for paths in others:
        for i in range(0, len(paths), cfg.batch_size):
            chunk = list(paths[i:i + cfg.batch_size])
            scores |= {str(path): image_score(knn_distances(f, bank, k, cfg.chunk))
                       for path, f in zip(chunk, embed(chunk))}
    facts = {"source": "psad (the seed's PatchCore, no coreset)", "coreset_ratio": 1.0,
             "memory_bank_size": int(bank.shape[0]), "backbone": backbone.spec.name,
             "weights": backbone.weights, **cfg.model_dump(exclude={"batch_size", "chunk", "save_bank"})}
    return scores, facts, bank

"""Frozen multi-stage backbone features aligned to one grid (the reference's MFCN neck).

Every requested block's map is resized to the stride-``feature_stride`` grid (16: the reference's
``outstrides: [16]``) with bilinear ``align_corners=True`` and the maps are concatenated:
224×224 images → ``[B, 24+32+56+160 = 272, 14, 14]``. As in the reference, this *down*-samples by
point-sampling (no averaging, so it aliases); an avg-pool or antialiased resize would change the
features and the published numbers.

The backbone is frozen and there is no augmentation, so the aligned features of a training image
never change: they are extracted once (optionally cached on disk) and feature jitter is applied
afterwards, which is numerically the same as the reference's per-batch extraction.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ad_pipeline.backbones import Backbone, build_backbone
from ad_pipeline.data.images import load_batch
from ad_pipeline.errors import LayoutError
from ad_pipeline.io import save_npy
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.config import Config


def align_features(maps: Sequence[Tensor], size: tuple[int, int] | None = None) -> Tensor:
    """Resize maps ``[B, C_i, h_i, w_i]`` to ``size = (h, w)`` (default: the smallest map's; bilinear,
    align_corners=True; a coarser map, e.g. CIFAR's stride-32 block, is upsampled) and concatenate
    them: ``[B, ΣC_i, h, w]``."""
    h, w = size or (min(m.shape[-2] for m in maps), min(m.shape[-1] for m in maps))
    resized = [m if m.shape[-2:] == (h, w) else F.interpolate(m, size=(h, w), mode="bilinear", align_corners=True)
               for m in maps]
    return torch.cat(resized, dim=1)


class AlignedFeatures(nn.Module):
    """Frozen backbone + neck: normalised images ``[B, 3, S, S]`` → aligned features ``[B, C, S/s, S/s]``
    (``s = stride``; None: the grid of the coarsest block)."""

    def __init__(self, backbone: Backbone, blocks: Sequence[str], stride: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.blocks = list(blocks)
        self.stride = stride

    def forward(self, images: Tensor) -> Tensor:
        maps = self.backbone(images, self.blocks)
        size = None if self.stride is None else (images.shape[-2] // self.stride, images.shape[-1] // self.stride)
        return align_features([maps[b] for b in self.blocks], size)


def build_feature_extractor(cfg: Config, ctx: RunContext) -> AlignedFeatures:
    """The frozen backbone named in ``cfg`` with the weights mode of ``ctx`` (eval mode, no grads)."""
    bb = build_backbone(cfg.backbone, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir, seed=ctx.seed)
    return AlignedFeatures(bb, cfg.blocks, cfg.feature_stride).eval()


def extract_options(cfg: Config, ctx: RunContext, device: str | torch.device, progress: bool) -> dict:
    """The keyword arguments of :func:`extract_aligned_features` that ``cfg`` and ``ctx`` fix."""
    return dict(image_size=cfg.image_size, resample=cfg.resample, batch_size=cfg.batch_size, device=device,
                num_workers=cfg.num_workers, cache_dir=ctx.cache_dir, progress=progress)


def feature_shape(extractor: AlignedFeatures, image_size: int) -> tuple[int, int, int]:
    """``(C, h, w)`` of the aligned features for ``image_size`` (one dummy forward on the CPU)."""
    device = next(extractor.parameters()).device
    with torch.inference_mode():
        out = extractor(torch.zeros(1, 3, image_size, image_size, device=device))
    return tuple(out.shape[1:])  # type: ignore[return-value]


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path], size: int, mean: Sequence[float], std: Sequence[float], resample: str):
        self.paths, self.size, self.mean, self.std, self.resample = list(paths), size, mean, std, resample

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        return load_batch([self.paths[i]], self.size, mean=self.mean, std=self.std, resample=self.resample)[0]


def extract_aligned_features(
    extractor: AlignedFeatures,
    paths: Sequence[Path],
    *,
    image_size: int,
    resample: str = "bilinear",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> Tensor:
    """Aligned features of ``paths`` in order: float32 CPU tensor ``[N, C, h, w]``.

    Memory: the result (``N·C·h·w·4`` bytes, 213 kB per 224² image) plus one batch of backbone
    activations. With ``cache_dir`` the result is stored as ``cache_dir/uniad/<key>.npy``; the key
    covers the backbone parameters, blocks, stride, image size, resampling and every file's path,
    size and mtime.
    """
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise LayoutError(f"image file not found ({len(missing)} missing)", path=missing[0],
                          fix="check the dataset root and re-run prepare@<dataset>")
    extractor = extractor.to(device).eval()
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / "uniad" / f"{_cache_key(extractor, paths, image_size, resample)}.npy"
        if cache_file.exists():
            return torch.from_numpy(np.load(cache_file, allow_pickle=False))
    c, h, w = feature_shape(extractor, image_size)
    out = torch.empty(len(paths), c, h, w)
    spec = extractor.backbone.spec
    loader = DataLoader(_ImageFiles(paths, image_size, spec.mean, spec.std, resample), batch_size=batch_size,
                        num_workers=num_workers, shuffle=False)
    start = 0
    with torch.inference_mode():
        for images in tqdm(loader, desc="uniad features", unit="batch", disable=not progress, leave=False):
            feats = extractor(images.to(device)).float().cpu()
            out[start:start + len(feats)] = feats
            start += len(feats)
    if cache_file is not None:
        save_npy(cache_file, out.numpy())
    return out


def _cache_key(extractor: AlignedFeatures, paths: Sequence[Path], image_size: int, resample: str) -> str:
    h = hashlib.sha256()
    h.update(f"{extractor.backbone.spec.name}|{extractor.blocks}|{extractor.stride}|{image_size}|{resample}".encode())
    for name, tensor in extractor.backbone.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for p in paths:
        st = os.stat(p)
        h.update(f"{Path(p).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]

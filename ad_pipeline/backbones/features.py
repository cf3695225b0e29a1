"""Batched feature extraction over image files, with an optional on-disk cache."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.transforms.functional import center_crop
from tqdm.auto import tqdm

from ad_pipeline.backbones.base import Backbone, Layer
from ad_pipeline.data.images import load_batch
from ad_pipeline.io import atomic_path

log = logging.getLogger(__name__)


def load_images(bb: Backbone, paths: Sequence[str | Path], size: int | tuple[int, int], *,
                crop: int | None = None, resample: str = "bilinear") -> torch.Tensor:
    """Images as [B,3,H,W], squashed to ``size``, optionally center-cropped to ``crop``, normalised
    with the backbone's mean/std. (Cropping the normalised tensor equals cropping the image.)"""
    x = load_batch(paths, size, mean=bb.spec.mean, std=bb.spec.std, resample=resample)
    return x if crop is None else center_crop(x, [crop, crop])


def extract_features(bb: Backbone, paths: Sequence[str | Path], *, size: int | tuple[int, int],
                     layers: Sequence[Layer], batch_size: int = 8, resample: str = "bilinear",
                     crop: int | None = None, cache_dir: Path | None = None,
                     progress: bool = True) -> dict[Layer, torch.Tensor]:
    """Features of ``paths`` in order: ``{layer: [N, ...]}`` float32 on CPU (shapes as ``bb(x, layers)``).

    Runs under ``torch.inference_mode`` in batches of ``batch_size``. Memory: the returned
    tensors (allocated once, filled batch by batch) plus one batch of images and activations. With ``cache_dir``, results are stored in
    ``<cache_dir>/<backbone>_<size>_<hash>.safetensors``, keyed by (backbone, weights mode and
    fingerprint, activation, size, crop, layers, resample, the active autocast dtype, every path with its mtime
    and byte size); writes are atomic, and a changed image or setting gives a new key.
    """
    layers = list(layers)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{bb.spec.name}_{size}_{_cache_key(bb, paths, size, crop, layers, resample)}.safetensors"
        cached = _read_cache(cache_file, layers)
        if cached is not None:
            return cached
    device = next(bb.parameters()).device
    feats: dict[Layer, torch.Tensor] = {layer: torch.empty(0) for layer in layers}
    starts = range(0, len(paths), batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc=f"features {bb.spec.name}", disable=not progress, unit="batch"):
            x = load_images(bb, paths[start:start + batch_size], size, crop=crop, resample=resample)
            for layer, f in bb(x.to(device), layers).items():
                if start == 0:  # filled in place: no second copy of all features for a final cat
                    feats[layer] = torch.empty((len(paths), *f.shape[1:]), dtype=torch.float32)
                feats[layer][start:start + len(f)] = f
    if cache_file is not None:
        _write_cache(cache_file, feats)
    return feats


def _weights_fingerprint(bb: Backbone) -> str:
    """Cheap fingerprint of the weights: names, shapes and the first values of every tensor."""
    h = hashlib.sha256()
    for name, t in bb.model.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}".encode())
        h.update(t.detach().flatten()[:16].float().cpu().numpy().tobytes())
    return h.hexdigest()


def _cache_key(bb: Backbone, paths: Sequence[str | Path], size, crop, layers, resample) -> str:
    device_type = next(bb.parameters()).device.type
    autocast = str(torch.get_autocast_dtype(device_type)) if torch.is_autocast_enabled(device_type) else None
    files = []
    for p in paths:
        st = Path(p).stat()
        files.append([str(p), st.st_mtime_ns, st.st_size])
    blob = json.dumps({"backbone": bb.spec.name, "weights": bb.weights, "fingerprint": _weights_fingerprint(bb),
                       "activation": bb.activation,
                       "size": size, "crop": crop, "layers": layers, "resample": resample, "autocast": autocast,
                       "files": files})
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _read_cache(path: Path, layers: list[Layer]) -> dict[Layer, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {layer: f.get_tensor(str(i)) for i, layer in enumerate(layers)}
    except Exception as e:  # noqa: BLE001 - a damaged cache file is recomputed, never trusted
        log.warning("ignoring unreadable feature cache %s (%s); recomputing", path, e)
        return None


def _write_cache(path: Path, feats: dict[Layer, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tensors = {str(i): t.contiguous() for i, t in enumerate(feats.values())}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"layers": json.dumps(list(feats))})

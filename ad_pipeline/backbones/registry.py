"""The one registry of backbones: name -> ``BackboneSpec``, and ``build_backbone``.

| name | family | source | default layers | native size |
| --- | --- | --- | --- | --- |
| wide_resnet50_2, wide_resnet101_2, resnet18, resnet101 | cnn | timm ``*.tv_in1k`` (torchvision weights) | layer2, layer3 | 224 |
| efficientnet_b4 | cnn | timm ``efficientnet_b4.ra2_in1k`` | blocks.2, blocks.4 | 320 |
| efficientnet_b4_lukemelas | cnn | ``efficientnet_pytorch`` ``efficientnet-b4`` (the official UniAD's) | _blocks.9, _blocks.21 | 380 |
| efficientnet_lite0 | cnn | timm ``efficientnet_lite0`` + packaged ImageNet weights | blocks.2, blocks.4 | 224 |
| ViT-B-16, ViT-L-14, ViT-L-14-336 | clip | open_clip, tag ``openai`` (QuickGELU unless the file says otherwise) | 2,5,8,11 / 5,11,17,23 | 224 / 336 |
| ViT-B-16-plus-240 | clip | open_clip, tag ``laion400m_e31`` | 2,5,8,11 | 240 |
| dino_vitbase8, dino_vitbase16 | dino | timm ``vit_base_patch{8,16}_224.dino`` | 2,5,8,11 | 224 |
| dinov2_vits14, dinov2_vitb14, dinov2_vitl14 | dinov2 | timm ``vit_*_patch14_dinov2.lvd142m`` | 2,5,8,11 / 5,11,17,23 | 518 |

CNN default layers are the stride-8 / stride-16 pair (PatchCore's ``layer2``/``layer3``); ViT
default layers are the four blocks MuSc uses.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path

from ad_pipeline.backbones.base import Backbone, BackboneSpec
from ad_pipeline.backbones.weights import LUKEMELAS, resolve_weights
from ad_pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD
from ad_pipeline.errors import UserError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_BASE_BLOCKS = (2, 5, 8, 11)
_LARGE_BLOCKS = (5, 11, 17, 23)


def _cnn(name: str, source: str, layers: tuple[str, str], image_size: int = 224) -> BackboneSpec:
    return BackboneSpec(name, "cnn", source, IMAGENET_MEAN, IMAGENET_STD, layers, image_size, f"{name}.pth")


def _clip(name: str, tag: str, patch: int, blocks: tuple[int, ...], image_size: int) -> BackboneSpec:
    return BackboneSpec(name, "clip", name, CLIP_MEAN, CLIP_STD, blocks, image_size, f"{name}.pt",
                        patch_size=patch, pretrained_tag=tag)


def _timm_vit(name: str, family: str, source: str, patch: int, blocks: tuple[int, ...], image_size: int) -> BackboneSpec:
    return BackboneSpec(name, family, source, IMAGENET_MEAN, IMAGENET_STD, blocks, image_size, f"{name}.pth",
                        patch_size=patch)


_RESNET_LAYERS = ("layer2", "layer3")
_EFFICIENTNET_BLOCKS = ("blocks.2", "blocks.4")  # ends of the stride-8 and stride-16 stages
_LUKEMELAS_B4_BLOCKS = ("_blocks.9", "_blocks.21")  # the same stage ends, lukemelas flat block numbering

SPECS: dict[str, BackboneSpec] = {s.name: s for s in (
    _cnn("wide_resnet50_2", "wide_resnet50_2.tv_in1k", _RESNET_LAYERS),
    _cnn("wide_resnet101_2", "wide_resnet101_2.tv_in1k", _RESNET_LAYERS),
    _cnn("resnet18", "resnet18.tv_in1k", _RESNET_LAYERS),
    _cnn("resnet101", "resnet101.tv_in1k", _RESNET_LAYERS),
    _cnn("efficientnet_b4", "efficientnet_b4.ra2_in1k", _EFFICIENTNET_BLOCKS, 320),
    _cnn("efficientnet_lite0", "efficientnet_lite0", _EFFICIENTNET_BLOCKS),
    _cnn("efficientnet_b4_lukemelas", f"{LUKEMELAS}efficientnet-b4", _LUKEMELAS_B4_BLOCKS, 380),
    _clip("ViT-B-16", "openai", 16, _BASE_BLOCKS, 224),
    _clip("ViT-B-16-plus-240", "laion400m_e31", 16, _BASE_BLOCKS, 240),
    _clip("ViT-L-14", "openai", 14, _LARGE_BLOCKS, 224),
    _clip("ViT-L-14-336", "openai", 14, _LARGE_BLOCKS, 336),
    _timm_vit("dino_vitbase8", "dino", "vit_base_patch8_224.dino", 8, _BASE_BLOCKS, 224),
    _timm_vit("dino_vitbase16", "dino", "vit_base_patch16_224.dino", 16, _BASE_BLOCKS, 224),
    _timm_vit("dinov2_vits14", "dinov2", "vit_small_patch14_dinov2.lvd142m", 14, _BASE_BLOCKS, 518),
    _timm_vit("dinov2_vitb14", "dinov2", "vit_base_patch14_dinov2.lvd142m", 14, _BASE_BLOCKS, 518),
    _timm_vit("dinov2_vitl14", "dinov2", "vit_large_patch14_dinov2.lvd142m", 14, _LARGE_BLOCKS, 518),
)}


def backbone_names(families: Iterable[str] | None = None) -> list[str]:
    """Registered names (optionally only those of the given families), sorted."""
    wanted = None if families is None else set(families)
    return sorted(n for n, s in SPECS.items() if wanted is None or s.family in wanted)


def get_spec(name: str) -> BackboneSpec:
    if name not in SPECS:
        close = difflib.get_close_matches(name, SPECS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown backbone {name!r}.{hint}", fix=f"use one of: {', '.join(backbone_names())}")
    return SPECS[name]


def require_family(name: str, families: Iterable[str], method: str) -> BackboneSpec:
    """The spec of ``name`` if its family is one of ``families``; else a UserError listing valid names."""
    families = tuple(families)
    spec = get_spec(name)
    if spec.family not in families:
        raise UserError(f"method {method!r} cannot use backbone {name!r} (family {spec.family!r}); "
                        f"it needs a {' / '.join(families)} backbone",
                        fix=f"set backbone to one of: {', '.join(backbone_names(families))}")
    return spec


def build_backbone(name: str, *, pretrained: str = "auto", weights_dir: Path | None = None, seed: int = 0,
                   trainable: bool = False, clip_activation: str = "auto") -> Backbone:
    """Build a registered backbone with weights resolved per ``ad_pipeline.backbones.weights``.

    Random init (``pretrained="false"``, or ``"auto"`` without local weights) is deterministic
    from ``seed``; the global torch RNG state is left untouched. ``clip_activation`` (CLIP only):
    "auto" follows the weights, "quick_gelu" / "gelu" override (``vit.clip_activation``).
    """
    from ad_pipeline.backbones import cnn, vit  # heavy imports (timm, open_clip) only when building

    spec = get_spec(name)
    source = resolve_weights(spec, pretrained, None if weights_dir is None else Path(weights_dir))
    if spec.family == "cnn":
        return cnn.build_cnn(spec, source, seed=seed, trainable=trainable)
    if spec.family == "clip":
        return vit.build_clip(spec, source, seed=seed, trainable=trainable, activation=clip_activation)
    return vit.build_timm_vit(spec, source, seed=seed, trainable=trainable)

"""Backbones: one registry of CNN / CLIP / DINO / DINOv2 feature extractors with offline weights.

    bb = build_backbone("wide_resnet50_2", pretrained="auto", weights_dir=Path("weights"), seed=0)
    feats = bb(x, ["layer2", "layer3"])          # CNN: {name: [B,C,h,w]}
    tokens = bb(x, [5, 11, 17, 23])              # ViT: {block: [B,h*w,C]} (patch tokens only)
    both = bb(x, [5, EMBEDDING])                 # ViT: + the global image embedding [B,D], one pass

Names and layers: ``registry.py``; weight resolution and expected files: ``weights.py``;
batched, cached extraction over image files: ``features.py``.
"""

from ad_pipeline.backbones.base import EMBEDDING, FAMILIES, Backbone, BackboneSpec
from ad_pipeline.backbones.features import extract_features
from ad_pipeline.backbones.registry import backbone_names, build_backbone, get_spec, require_family

__all__ = ["EMBEDDING", "FAMILIES", "Backbone", "BackboneSpec", "backbone_names", "build_backbone", "extract_features",
           "get_spec", "require_family"]

"""CSAD's settings (``csad:`` in params.yaml), apart from the models so that the params schema
and the stages that only read settings stay light."""

from __future__ import annotations

from typing import Literal

from ad_pipeline.methods.base import MethodConfig
from ad_pipeline.segmentation.augment import AugmentConfig
from ad_pipeline.segmentation.train import SegTrainConfig


class CSADConfig(MethodConfig):
    """Defaults = the paper's settings (csad.md)."""

    image_size: int = 256
    encoder: str = "wide_resnet50_2"  # shared by segmentor (layer1, layer3) and LGST teacher (layer2, layer3)
    head_channels: int = 256
    head_low_channels: int = 48
    bn_momentum: float = 0.999  # repo value (PyTorch convention); 0.1 is PyTorch's default
    segmentor: SegTrainConfig = SegTrainConfig()
    augment: AugmentConfig = AugmentConfig()  # supervised segmentor batches: LSA + ShiftScaleRotate + brightness
    lgst_channels: int = 512
    lgst_width_divisor: int = 1  # > 1 only for tiny smoke-test students
    lgst_steps: int = 60_000
    lgst_batch_size: int = 2
    lgst_penalty_batch_size: int = 1  # penalty images per step (official: 1; set lgst_batch_size for the old rule)
    lgst_lr: float = 2e-4
    lgst_weight_decay: float = 1e-4
    projection_seed: int = 0  # seeds the frozen random 1×1 teacher projection
    penalty_images: str | None = None  # folder of generic images (Tiny-ImageNet); None = no penalty term
    # LGST image score: "upsampled" = max of the map resized to image_size (official CSAD.py, the
    # scores its benchmark fuses); "grid" = max of the 64×64 map (official ONNX export graph)
    lgst_score: Literal["upsampled", "grid"] = "upsampled"
    zscore_guard: float = 0.0  # std ≤ guard → 1 (0: benchmark path; 1e-3: export path)
    batch_size: int = 8
    branches: Literal["both", "patch_hist", "lgst"] = "both"  # which branch scores are summed (seed ablation)

"""EfficientAD's params sections that need no model code: ``TeacherConfig`` (the
``efficientad_teacher`` stage). Imported by the params schema, so it imports pydantic and the PDN's
two constants (``student_teacher/sizes.py``) only."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ad_pipeline.components.student_teacher.sizes import TEACHER_CHANNELS, ModelSize
from ad_pipeline.methods.base import MethodConfig


class TeacherConfig(MethodConfig):
    """Params of the ``efficientad_teacher`` stage (defaults: the paper's distillation)."""

    model_size: ModelSize = "small"
    source: Literal["auto", "file", "distill"] = "auto"  # auto: weights_dir/teacher_<size>.pth if present, else distil
    steps: int = Field(60_000, ge=1)
    lr: float = 1e-4
    weight_decay: float = 1e-5
    batch_size: int = Field(16, ge=1)
    pretrain_images: str | None = None  # folder of generic images (ImageNet); null → the dataset's training images
    image_size: int = 256  # PDN input (padding=True → image_size/4 output grid)
    target_backbone: str = "wide_resnet101_2"
    target_layers: tuple[str, ...] = ("layer2", "layer3")
    target_image_size: int = 512  # backbone input; its first layer's grid must equal the PDN grid
    target_layer_dim: int = 1024  # per-layer adaptive pooling size ("MeanMapper")
    norm_images: int = 10_000  # images used for the target's channel mean/std
    grayscale_p: float = 0.1
    target_cache_mb: int = 2048  # memoise normalised targets per (image, grayscale) up to this size
    channels: int = TEACHER_CHANNELS  # smaller values / width_divisor > 1: tiny smoke-test teachers only
    width_divisor: int = 1

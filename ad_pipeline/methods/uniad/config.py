"""UniAD params sections (pydantic only): ``Config`` (the method; defaults: the paper's MVTec AD unified
setting, spec ``uniad.md``) and ``VisConfig`` (its visualisation decoder, ``uniad_vis``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ad_pipeline.methods.base import MethodConfig

# The reference's flat MBConv block indices [1, 5, 9, 21] of EfficientNet-B4: channels
# [24, 32, 56, 160], strides [2, 4, 8, 16]. Default: the reference's own network (lukemelas, TF
# 'same' padding, weights efficientnet-b4-6ed6700e.pth); timm's efficientnet_b4 (symmetric padding,
# other weights) gives different features.
DEFAULT_BLOCKS = {
    "efficientnet_b4_lukemelas": ("_blocks.1", "_blocks.5", "_blocks.9", "_blocks.21"),
    "efficientnet_b4": ("blocks.0.1", "blocks.1.3", "blocks.2.3", "blocks.4.5"),
}


class DistributedConfig(BaseModel):
    """``nproc_per_node`` > 1: the stage re-launches itself under torchrun with that many processes."""

    model_config = ConfigDict(extra="forbid")

    nproc_per_node: int = Field(1, ge=1)
    backend: Literal["auto", "nccl", "gloo"] = "auto"  # auto: nccl on CUDA, gloo on CPU


class Config(MethodConfig):
    backbone: str = "efficientnet_b4_lukemelas"  # fixed by the method; the top-level backbone param is ignored
    image_size: int = Field(224, ge=32)
    feature_blocks: list[str] | None = Field(None, min_length=1)  # None: DEFAULT_BLOCKS[backbone]
    feature_stride: int = Field(16, ge=1)  # the neck's outstride: every block map is resized to image_size / it
    resample: Literal["bilinear", "bicubic", "lanczos"] = "bilinear"  # image resize (CIFAR reference: lanczos)
    hidden: int = Field(256, ge=2)
    heads: int = Field(8, ge=1)
    ffn: int = Field(1024, ge=1)
    enc_layers: int = Field(4, ge=1)
    dec_layers: int = Field(4, ge=1)
    neighbor_size: int = Field(7, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    jitter_scale: float = Field(20.0, ge=0.0)
    jitter_prob: float = Field(1.0, ge=0.0, le=1.0)
    epochs: int = Field(1000, ge=1)
    lr_step: int = Field(800, ge=1)
    lr_gamma: float = Field(0.1, gt=0.0)
    batch_size: int = Field(8, ge=1)  # per process; global batch = batch_size * nproc_per_node
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    grad_clip: float = Field(0.1, gt=0.0)
    # Image score from the anomaly map (seed README §3.1): max of the 16×16 avg-pooled map, mean or
    # std of the map; auto = the paper's choice for the dataset format (mean for cifar10, else max).
    image_score: Literal["auto", "max", "mean", "std"] = "auto"
    map_size: int | None = Field(None, ge=1)  # stored map resolution (None: image_size); scores use the full map
    checkpoint_every: int = Field(10, ge=1)  # epochs between checkpoints (and validation passes)
    select: Literal["last", "validation"] = "last"
    device: str | None = None  # None: the run context's device
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)
    num_workers: int = Field(4, ge=0)  # image-loading workers per process for feature extraction

    @property
    def blocks(self) -> list[str]:
        """``feature_blocks``, or the backbone's reference blocks (``DEFAULT_BLOCKS``) when unset."""
        return list(self.feature_blocks or DEFAULT_BLOCKS[self.backbone])

    @model_validator(mode="after")
    def _check_shapes(self) -> Config:
        if self.feature_blocks is None and self.backbone not in DEFAULT_BLOCKS:
            raise ValueError(f"feature_blocks must be given for backbone {self.backbone!r} "
                             f"(defaults exist for {', '.join(DEFAULT_BLOCKS)})")
        if self.image_size % self.feature_stride:
            raise ValueError(f"image_size must be a multiple of feature_stride ({self.feature_stride}), "
                             f"got {self.image_size}")
        if self.hidden % 2 or self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be even and divisible by heads ({self.heads})")
        if self.neighbor_size % 2 == 0:
            raise ValueError(f"neighbor_size must be odd (a window centred on the query), got {self.neighbor_size}")
        return self

    def score_rule(self, dataset_format: str) -> str:
        """``image_score`` with ``auto`` resolved for ``dataset_format``."""
        if self.image_score != "auto":
            return self.image_score
        return "mean" if dataset_format == "cifar10" else "max"


class VisConfig(BaseModel):
    """Decoder and its training (the reference's ``experiments/train_vis_decoder/config.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    planes: list[int] = Field(default_factory=lambda: [512, 256, 128, 128], min_length=4, max_length=4)
    blocks: list[int] = Field(default_factory=lambda: [3, 6, 4, 3], min_length=4, max_length=4)  # coarse → fine
    epochs: int = Field(1000, ge=1)
    lr: float = Field(1e-4, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    lr_step: int = Field(800, ge=1)
    lr_gamma: float = Field(0.1, gt=0.0)
    batch_size: int = Field(32, ge=1)
    grad_clip: float = Field(0.1, gt=0.0)
    train_split: Literal["train", "test"] = "test"  # reference: the test images (never used for scores)
    max_images: int | None = Field(None, ge=1)  # evenly spaced subset of the training images (memory)

    @model_validator(mode="after")
    def _positive(self) -> VisConfig:
        if min(self.planes) < 1 or min(self.blocks) < 1:
            raise ValueError(f"planes and blocks must be positive, got {self.planes} / {self.blocks}")
        return self

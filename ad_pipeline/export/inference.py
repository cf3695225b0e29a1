"""The contract between a method and the exporters: one ``nn.Module`` image → (map, score).

Input ``image``: float32 RGB [B,3,S,S] in [0,1], squashed (bilinear, PIL) to ``resize`` and
center-cropped to ``crop`` (``load_inputs`` does exactly that). Outputs ``map`` float32
[B,h,w] (higher = more anomalous) and ``score`` float32 [B], with every normalisation,
memory bank and calibration constant inside the module as buffers. A graph whose branches see
the image in different geometries (PSAD: its padded part-segmenter input and PatchCore's
squashed one) takes one such input per ``Geometry`` in ``Inference.inputs``, in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.transforms.functional import center_crop

from ad_pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD, crop_resize_pad, load_rgb, normalized_batch
from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import MethodConfig, RunContext
from ad_pipeline.methods.registry import INFERENCE, NOT_EXPORTABLE, exportable_methods, get_method, resolve

INPUT_NAMES = ("image",)
OUTPUT_NAMES = ("map", "score")


class NotExportable(UserError):
    """This method (or this configuration of it) has no single-image inference graph."""


@dataclass(frozen=True)
class Geometry:
    """How one graph input [B,3,S,S] in [0,1] is made from image files (``crop_resize_pad``):
    ``margin`` px off every side, squash to ``resize`` (PIL ``resample``) or, with ``pad_square``,
    the longer side to ``resize`` zero-padded to a square (PSAD's), then, with ``then_resize``,
    that square squashed again (PIL ``then_resample``: the PSAD seed's PatchCore input), then
    center-crop to ``crop`` (None = none). The default is every method's squash (+ crop)."""

    resize: int
    crop: int | None = None
    margin: int = 0
    pad_square: bool = False
    resample: str = "bilinear"
    rounding: str = "round"  # pad_square resize: "floor" = PSAD's preprocess.rounding: floor
    then_resize: int | None = None
    then_resample: str = "lanczos"

    @property
    def size(self) -> int:
        """Side S of the square input."""
        return self.crop or self.then_resize or self.resize

    def load(self, paths: Sequence[Path]) -> torch.Tensor:
        images = [crop_resize_pad(load_rgb(p), self.resize, margin=self.margin, pad_square=self.pad_square,
                                  resample=self.resample, rounding=self.rounding) for p in paths]
        if self.then_resize is not None:
            images = [crop_resize_pad(im, self.then_resize, pad_square=False, resample=self.then_resample)
                      for im in images]
        x = normalized_batch(images, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        return x if self.crop in (None, self.then_resize or self.resize) else center_crop(x, [self.crop, self.crop])


@dataclass(frozen=True)
class Inference:
    """A method's single-image inference: ``module`` (see the module docstring) and its input
    geometry (``resize``: squash size; ``crop``: center crop, None = none), or ``inputs``, one
    ``Geometry`` per module input (the first one's resize/crop are ``resize``/``crop``)."""

    module: nn.Module
    resize: int
    crop: int | None = None
    inputs: tuple[Geometry, ...] = ()

    def __post_init__(self) -> None:
        if not self.inputs:
            object.__setattr__(self, "inputs", (Geometry(self.resize, self.crop),))
        elif (self.inputs[0].resize, self.inputs[0].crop) != (self.resize, self.crop):
            raise ValueError(f"first input {self.inputs[0]} disagrees with resize={self.resize}, crop={self.crop}")

    @property
    def size(self) -> int:
        """Side S of the module's (first) square input."""
        return self.inputs[0].size

    def geometry(self) -> dict:
        """For model.json: resize, crop and, for any other geometry, every input's ``Geometry``."""
        simple = self.inputs == (Geometry(self.resize, self.crop),)
        inputs = {} if simple else {"inputs": [asdict(g) for g in self.inputs]}
        return {"resize": self.resize, "crop": self.crop} | inputs

    def load(self, paths: Sequence[Path]) -> tuple[torch.Tensor, ...]:
        """The module's inputs for ``paths``."""
        return tuple(g.load(paths) for g in self.inputs)


def geometries(info: dict) -> tuple[Geometry, ...]:
    """The input geometries recorded by ``Inference.geometry`` (model.json)."""
    if "inputs" in info:
        return tuple(Geometry(**g) for g in info["inputs"])
    return (Geometry(info["resize"], info["crop"]),)


def inference_module(name: str, model_dir: Path, cfg: MethodConfig, ctx: RunContext) -> Inference:
    """The inference graph of ``name``'s model fitted in ``model_dir`` (``registry.INFERENCE``);
    NotExportable naming the reason for a method that has none."""
    get_method(name)
    if name not in INFERENCE:
        raise NotExportable(f"{name} has no export: {NOT_EXPORTABLE[name]}",
                            fix=f"exportable methods: {', '.join(exportable_methods())}")
    return resolve(INFERENCE[name])(Path(model_dir), cfg, ctx)


def load_inputs(paths: Sequence[Path], resize: int, crop: int | None = None) -> torch.Tensor:
    """The module input for ``paths``: float32 [B,3,S,S] in [0,1]."""
    return Geometry(resize, crop).load(paths)


class Normalize(nn.Module):
    """[B,3,H,W] in [0,1] → (x − mean) / std per channel (ImageNet statistics by default)."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

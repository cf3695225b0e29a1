"""Segmentation networks on registry backbones (``bb(x, layers) -> {layer: [B,C,h,w]}``).

* ``FrozenEncoderSegmentor`` — CSAD §2.1: DeepLab-v3+-style head on a frozen CNN (low-level
  layer1 + high-level layer3 features).
* ``CoordSegmenter`` — PSAD §2: trainable CNN, multi-level features + (x, y) coordinate
  channels, 1×1 conv head.
* ``ResidualCoordSegmenter`` — PSAD §3 (second stage, trained on the pseudo-labels): CNN trunk
  to layer3 + coordinates, a two-step upsampling decoder with residual skips.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def probe_channels(encoder: nn.Module, layers: Sequence[str], size: int = 64) -> list[int]:
    """Channel count of each requested layer, from one forward pass of a zero image."""
    with torch.no_grad():
        feats = encoder(torch.zeros(1, 3, size, size), list(layers))
    return [feats[name].shape[1] for name in layers]


def conv_bn_relu(cin: int, cout: int, kernel: int, *, dilation: int = 1, bn_momentum: float) -> nn.Sequential:
    """Bias-free conv (same padding) → BatchNorm(eps 1e-5, ``bn_momentum``, PyTorch convention) → ReLU."""
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout, eps=1e-5, momentum=bn_momentum), nn.ReLU())


class ASPP(nn.Module):
    """1×1 branch, three atrous 3×3 branches and an image-pool branch, concatenated then
    fused by a 1×1 conv: [B,Cin,h,w] → [B,channels,h,w]."""

    def __init__(self, cin: int, channels: int, dilations: Sequence[int], bn_momentum: float):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, channels, 1, bn_momentum=bn_momentum)] +
                                      [conv_bn_relu(cin, channels, 3, dilation=d, bn_momentum=bn_momentum)
                                       for d in dilations])
        self.pool = conv_bn_relu(cin, channels, 1, bn_momentum=bn_momentum)
        self.fuse = conv_bn_relu(channels * (len(dilations) + 2), channels, 1, bn_momentum=bn_momentum)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x.mean((2, 3), keepdim=True))
        outs = [b(x) for b in self.branches] + [F.interpolate(pooled, size=x.shape[2:], mode="bilinear",
                                                              align_corners=False)]
        return self.fuse(torch.cat(outs, 1))


class DeepLabV3PlusHead(nn.Module):
    """(low [B,Cl,h1,w1], high [B,Ch,h3,w3]) → logits [B,num_classes,h1,w1].

    ASPP on ``high`` → bilinear to h1×w1; ``low`` → 1×1 conv to ``low_out`` channels; concat →
    two 3×3 conv-BN-ReLU → 1×1 conv with bias. ``bn_momentum`` 0.999 (the repo's value, in
    PyTorch's convention) makes running statistics ≈ the last batch's; kept for fidelity.
    """

    def __init__(self, low_channels: int, high_channels: int, num_classes: int, *, channels: int = 256,
                 low_out: int = 48, dilations: Sequence[int] = (6, 12, 18), bn_momentum: float = 0.999):
        super().__init__()
        self.aspp = ASPP(high_channels, channels, dilations, bn_momentum)
        self.low = conv_bn_relu(low_channels, low_out, 1, bn_momentum=bn_momentum)
        self.decoder = nn.Sequential(conv_bn_relu(channels + low_out, channels, 3, bn_momentum=bn_momentum),
                                     conv_bn_relu(channels, channels, 3, bn_momentum=bn_momentum),
                                     nn.Conv2d(channels, num_classes, 1))

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        high = F.interpolate(self.aspp(high), size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.decoder(torch.cat([high, self.low(low)], 1))


class FrozenEncoderSegmentor(nn.Module):
    """CSAD segmentor: normalised image [B,3,H,W] → logits [B,num_classes,H,W].

    ``encoder`` is a frozen registry backbone (it stays in eval mode, no gradients); only
    ``head`` trains and only ``head`` needs saving.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, *, low_layer: str = "layer1", high_layer: str = "layer3",
                 channels: int = 256, low_out: int = 48, bn_momentum: float = 0.999):
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.layers = (low_layer, high_layer)
        low_c, high_c = probe_channels(encoder, self.layers)
        self.head = DeepLabV3PlusHead(low_c, high_c, num_classes, channels=channels, low_out=low_out,
                                      bn_momentum=bn_momentum)

    def train(self, mode: bool = True) -> FrozenEncoderSegmentor:
        super().train(mode)
        self.encoder.eval()
        return self

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.encoder(x, list(self.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        logits = self.head(f[self.layers[0]], f[self.layers[1]])
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=False)


def coordinate_maps(batch: int, height: int, width: int, scale: float = 1.0, levels: int = 0) -> torch.Tensor:
    """[B,2,H,W]: channel 0 = x, channel 1 = y, each linspace(0, 1) × ``scale``.

    ``levels`` > 0: each linspace value truncated to a multiple of 1/levels first (255: the seed's
    coordinates, which pass through an 8-bit image; docs/parity.md)."""
    def axis(n: int) -> torch.Tensor:
        if not levels:
            return torch.linspace(0, 1, n)
        return torch.from_numpy((np.linspace(0, 1, n) * levels).astype(np.int64) / levels).float()

    ys = axis(height).view(height, 1).expand(height, width)
    xs = axis(width).view(1, width).expand(height, width)
    return (torch.stack([xs, ys]) * scale).unsqueeze(0).expand(batch, -1, -1, -1).contiguous()


class CoordSegmenter(nn.Module):
    """PSAD few-shot segmenter: image [B,3,H,W] (+ coords [B,2,H,W]) → logits [B,num_classes,H,W].

    Features of ``layers`` are bilinearly upsampled (align_corners=True) to the first layer's
    size and concatenated with the coordinate maps resized likewise; head = 1×1 conv to half
    the channels, ReLU, 1×1 conv to ``num_classes``. The encoder is trained with the head
    when built with ``trainable=True``. Default coordinates: :func:`coordinate_maps` with
    ``coord_scale`` and ``coord_levels``.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, *, layers: Sequence[str] = ("layer1", "layer2", "layer3"),
                 coord_scale: float = 1.0, coord_levels: int = 0):
        super().__init__()
        self.encoder = encoder
        self.layers = tuple(layers)
        self.coord_scale = coord_scale
        self.coord_levels = coord_levels
        cin = sum(probe_channels(encoder, self.layers)) + 2
        self.head = nn.Sequential(nn.Conv2d(cin, cin // 2, 1), nn.ReLU(), nn.Conv2d(cin // 2, num_classes, 1))

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        feats = self.encoder(x, list(self.layers))
        size = feats[self.layers[0]].shape[2:]
        if coords is None:
            coords = coordinate_maps(x.shape[0], x.shape[2], x.shape[3], self.coord_scale, self.coord_levels).to(x)
        parts = [F.interpolate(feats[n], size=size, mode="bilinear", align_corners=True) for n in self.layers]
        parts.append(F.interpolate(coords, size=size, mode="bilinear", align_corners=True))
        logits = self.head(torch.cat(parts, 1))
        return F.interpolate(logits, size=x.shape[2:], mode="bilinear", align_corners=True)


class ResidualCoordSegmenter(nn.Module):
    """PSAD's retraining network (the seed's ``CNNSegmenter``): image [B,3,H,W] → logits [B,C,H,W].

    With trunk features l1, l2, l3 (``layers``): h = concat(l3, coords resized to l3) →
    bilinear to l2's size → 3×3 conv to C2 + ReLU, + l2 → bilinear to l1's size → 3×3 conv to
    C1 + ReLU, + l1 → bilinear to H×W → 1×1 conv to ``num_classes`` (all bilinear with
    align_corners=True). Coordinates are linspace(0, 1) × ``coord_scale`` (seed: 30), see
    :func:`coordinate_maps` for ``coord_levels``.
    """

    def __init__(self, encoder: nn.Module, num_classes: int, *, layers: Sequence[str] = ("layer1", "layer2", "layer3"),
                 coord_scale: float = 30.0, coord_levels: int = 0):
        super().__init__()
        if len(layers) != 3:
            raise ValueError(f"ResidualCoordSegmenter needs 3 layers (low to high), got {list(layers)}")
        self.encoder = encoder
        self.layers = tuple(layers)
        self.coord_scale = coord_scale
        self.coord_levels = coord_levels
        c1, c2, c3 = probe_channels(encoder, self.layers)
        self.up3 = nn.Sequential(nn.Conv2d(c3 + 2, c2, 3, padding=1), nn.ReLU())
        self.up2 = nn.Sequential(nn.Conv2d(c2, c1, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(c1, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x, list(self.layers))
        l1, l2, l3 = (feats[n] for n in self.layers)
        coords = coordinate_maps(x.shape[0], x.shape[2], x.shape[3], self.coord_scale, self.coord_levels).to(x)
        h = torch.cat([l3, F.interpolate(coords, size=l3.shape[2:], mode="bilinear", align_corners=True)], 1)
        h = self.up3(F.interpolate(h, size=l2.shape[2:], mode="bilinear", align_corners=True)) + l2
        h = self.up2(F.interpolate(h, size=l1.shape[2:], mode="bilinear", align_corners=True)) + l1
        return self.head(F.interpolate(h, size=x.shape[2:], mode="bilinear", align_corners=True))

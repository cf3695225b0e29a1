"""Visualising UniAD: a decoder from aligned features back to images (seed README §2).

The reference trains a ResNet-style *up-sampling* decoder (``models/reconstructions/vis_decoder.py``,
basic blocks ``[3, 4, 6, 3]``) on clean aligned features → normalised image (MSE), then decodes the
*reconstructed* features of test images: an anomaly reconstructed into normal features decodes
into a normal-looking image. Its learned-query visualisation (``tools/vis_query.py``) decodes
``output_proj(queries_ℓ)`` of every decoder layer beside random / ones / zeros baselines.

Shapes: features ``[B, C, h, w]`` → images ``[B, 3, 16h, 16w]`` (two stride-2 stages and a ×4 head,
so the decoder inverts the stride-16 neck). Deviation: the reference trains one decoder per MVTec
class on that class's test images; the stage here trains one per UniAD model (all categories
the model serves), on ``train_split`` images.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ad_pipeline.methods.uniad.config import VisConfig
from ad_pipeline.methods.uniad.model import UniADReconstructor

UPSCALE = 16  # decoder output / feature grid


class UpBlock(nn.Module):
    """Residual basic block that optionally up-samples ×``scale`` (bilinear) between its convs."""

    def __init__(self, cin: int, cout: int, scale: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.up = nn.Upsample(scale_factor=scale, mode="bilinear") if scale > 1 else nn.Identity()
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = (nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), self.up, nn.BatchNorm2d(cout))
                         if scale > 1 or cin != cout else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.up(F.relu(self.bn1(self.conv1(x))))))
        return F.relu(out + self.shortcut(x))


class VisDecoder(nn.Module):
    """Aligned features ``[B, C, h, w]`` → normalised image ``[B, 3, 16h, 16w]``."""

    def __init__(self, in_channels: int, planes: Sequence[int] = (512, 256, 128, 128),
                 blocks: Sequence[int] = (3, 6, 4, 3)):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for cout, n, scale in zip(planes, blocks, (1, 2, 2, 1)):
            layers += [UpBlock(cin, cout, scale), *(UpBlock(cout, cout) for _ in range(n - 1))]
            cin = cout
        self.stages = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, cin, 7, padding=3, bias=False),
            nn.BatchNorm2d(cin), nn.ReLU(), nn.Upsample(scale_factor=2, mode="bilinear"), nn.Conv2d(cin, 3, 1, bias=False))

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.stages(features))


def build_decoder(cfg: VisConfig, in_channels: int) -> VisDecoder:
    return VisDecoder(in_channels, cfg.planes, cfg.blocks)


def train_decoder(decoder: VisDecoder, features: Tensor, images: Tensor, cfg: VisConfig, *, seed: int,
                  device: str | torch.device = "cpu") -> list[float]:
    """Fit ``decoder`` (in place) to map ``features [N, C, h, w]`` to ``images [N, 3, 16h, 16w]``
    (MSE, AdamW, StepLR, grad clipping); returns the mean loss of every epoch."""
    if images.shape[-2:] != (features.shape[-2] * UPSCALE, features.shape[-1] * UPSCALE):
        raise ValueError(f"images {tuple(images.shape[-2:])} must be {UPSCALE}× the feature grid "
                         f"{tuple(features.shape[-2:])} (feature_stride 16)")
    decoder = decoder.to(device).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(cfg.epochs):
        total = 0.0
        for idx in torch.randperm(len(features), generator=gen).split(cfg.batch_size):
            loss = F.mse_loss(decoder(features[idx].to(device)), images[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(decoder.parameters(), cfg.grad_clip)
            optimizer.step()
            total += loss.item() * len(idx)
        scheduler.step()
        history.append(total / len(features))
    return history


@torch.no_grad()
def reconstruction_loss(decoder: VisDecoder, features: Tensor, images: Tensor, batch_size: int = 32) -> float:
    """Mean squared error of the decoded ``features`` against ``images`` (eval mode)."""
    decoder.eval()
    device = next(decoder.parameters()).device
    total = 0.0
    for start in range(0, len(features), batch_size):
        out = decoder(features[start:start + batch_size].to(device)).cpu()
        total += float((out - images[start:start + batch_size]).pow(2).sum())
    return total / images.numel()


def to_uint8(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised images ``[B, 3, H, W]`` → uint8 ``[B, H, W, 3]`` (clipped)."""
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    rgb = (images.detach().float().cpu() * s + m).clamp(0, 1) * 255
    return rgb.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def decode(decoder: VisDecoder, features: Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 images ``[B, 16h, 16w, 3]`` of features ``[B, C, h, w]``."""
    decoder.eval()
    device = next(decoder.parameters()).device
    return to_uint8(decoder(features.to(device)), mean, std)


@torch.no_grad()
def query_features(model: UniADReconstructor, seed: int = 0) -> dict[str, Tensor]:
    """The reference's query visualisation inputs ``[1, C, h, w]``: ``output_proj`` of random (U(0,1)),
    ones and zeros baselines, then of every decoder layer's learned queries."""
    h, w = model.grid
    queries = [layer.queries for layer in model.decoder]
    tokens, dim = queries[0].shape
    gen = torch.Generator().manual_seed(seed)
    inputs = {"baseline rand": torch.rand(tokens, dim, generator=gen), "baseline ones": torch.ones(tokens, dim),
              "baseline zeros": torch.zeros(tokens, dim)}
    inputs |= {f"query layer {i}": q.detach().cpu() for i, q in enumerate(queries)}
    proj = model.output_proj.cpu()
    return {name: proj(q).T.reshape(1, -1, h, w) for name, q in inputs.items()}

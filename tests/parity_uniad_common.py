"""Inputs and weights shared by the UniAD parity test and the script that writes its official fixtures.

Everything is rebuilt from fixed seeds (CPU, the pinned torch), at the paper's sizes: 272-channel
14×14 aligned features, hidden 256, 8 heads, 4 + 4 layers, 7×7 neighbour window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ad_pipeline.backbones import Backbone, build_backbone
from ad_pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.model import UniADReconstructor, build_model
from ad_pipeline.methods.uniad.train import _jitter_noise

SEED = 0
TRAIN_STEPS = 3
BLOCKS_OFFICIAL = [1, 5, 9, 21]  # lukemelas flat block indices (the official outblocks)
CFG = Config()  # the paper's setting


def reconstructor(dropout: float = 0.1) -> UniADReconstructor:
    """Our model, paper config, initialised from ``SEED``."""
    torch.manual_seed(SEED)
    return build_model(CFG.model_copy(update={"dropout": dropout}), (272, 14, 14))


def backbone() -> Backbone:
    """lukemelas EfficientNet-B4, seeded random init; convolutions re-drawn He-normal (fan-out) and
    BatchNorm statistics randomised so that activations stay O(1) through all 22 blocks (PyTorch's
    default init shrinks them to ~1e-8 by block 21, where any comparison would pass)."""
    bb = build_backbone("efficientnet_b4_lukemelas", pretrained="false", seed=SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for m in bb.model.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_out) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return bb


def recon_features() -> Tensor:
    """Fixed aligned features ``[2, 272, 14, 14]`` (non-negative-ish like swish outputs)."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 272, 14, 14, generator=g).abs() * 0.5


def images() -> Tensor:
    """Two fixed ImageNet-normalised images ``[2, 3, 224, 224]``."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 224, 224, generator=g)
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def train_features() -> Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(2 * TRAIN_STEPS, 272, 14, 14, generator=g).abs() * 0.5


def train_batches() -> Iterator[tuple[Tensor, Tensor]]:
    """(clean features ``[2, 272, 14, 14]``, jitter noise ε of the same shape) per step, exactly as
    ``train_epoch(..., order=range(6), epoch=0, seed=SEED)`` with batch size 2 draws them."""
    feats = train_features()
    for start in range(0, len(feats), 2):
        idx = list(range(start, start + 2))
        yield feats[idx], _jitter_noise(idx, 0, SEED, (272, 14, 14), 1.0)


def official_state_dict(model: UniADReconstructor) -> dict[str, Tensor]:
    """Our reconstructor's weights under the official ``models.reconstructions.UniAD`` names."""
    out = {}
    for k, v in model.state_dict().items():
        k = (k.replace("pos_embed.rows", "pos_embed.row_embed.weight")
             .replace("pos_embed.cols", "pos_embed.col_embed.weight"))
        if k.startswith("encoder."):
            k = "transformer.encoder.layers." + k[len("encoder."):]
            k = k.replace(".attn.", ".self_attn.")
        elif k.startswith("decoder."):
            k = "transformer.decoder.layers." + k[len("decoder."):]
            k = (k.replace(".queries", ".learned_embed.weight").replace(".attn_memory.", ".self_attn.")
                 .replace(".attn_previous.", ".multihead_attn."))
        elif k.startswith("decoder_norm."):
            k = "transformer.decoder.norm." + k[len("decoder_norm."):]
        out[k.replace(".ffn.linear", ".linear")] = v
    return out


def subsample(tokens: Tensor) -> np.ndarray:
    """Every 8th channel of ``[B, L, D]`` tokens (keeps the fixtures small)."""
    return tokens[..., ::8].detach().numpy()


def weights_checksum(state: dict[str, Tensor]) -> str:
    h = hashlib.sha256()
    for k, v in state.items():
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]

"""Inputs and weights shared by the CSAD parity test and the script that writes its official fixtures.

The paper's sizes (256² input, WRN50-2 encoder, 512-channel LGST, DeepLab-v3+ head) with seeded
random init made by our code, on seeded synthetic "component" scenes (288×320 PNGs in a
MVTec-LOCO layout: discs and a bar on a textured background; logical anomaly = a missing disc,
structural = a scratch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ad_pipeline.backbones import Backbone, build_backbone
from ad_pipeline.methods.csad.lgst import LGST, LGSTTeacher
from ad_pipeline.segmentation.models import FrozenEncoderSegmentor

SEED = 0
IMAGE_SIZE, CHANNELS, NUM_CLASSES = 256, 512, 5
SPLITS = {"train/good": 6, "validation/good": 6, "test/good": 2, "test/logical_anomalies": 1,
          "test/structural_anomalies": 1}
LAYERS = ("layer2", "layer3")
LGST_IMAGE = 2  # the test image (sorted: good 0, good 1, logical 0, structural 0) whose LGST stages are stored


def _scene(rng: np.random.Generator, kind: str) -> np.ndarray:
    h, w = 288, 320
    yy, xx = np.mgrid[:h, :w]
    img = np.empty((h, w, 3))
    img[:] = (110, 115, 100)
    img += 12 * np.sin(xx / 7.0)[..., None] + rng.normal(0, 6, (h, w, 3))
    centres = [(80, 90), (80, 230), (200, 90), (200, 230)]
    if kind == "logical_anomalies":
        centres = centres[:3]
    for cy, cx in centres:
        cy, cx = cy + rng.integers(-8, 9), cx + rng.integers(-8, 9)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 30 ** 2] = (200, 60, 40) + rng.normal(0, 5, 3)
    img[135:155, 40:280] = (40, 70, 190)
    if kind == "structural_anomalies":
        img[np.abs((yy - 40) - 0.6 * (xx - 60)) < 3] = (20, 20, 20)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_dataset(root: Path) -> dict[str, list[Path]]:
    """``root/cat/<split>/<i:03d>.png``, seeded per split; lists sorted by name."""
    out = {}
    for i, (split, n) in enumerate(SPLITS.items()):
        folder = root / "cat" / split
        folder.mkdir(parents=True)
        rng = np.random.default_rng(100 + i)
        out[split] = []
        for j in range(n):
            p = folder / f"{j:03d}.png"
            Image.fromarray(_scene(rng, split.split("/")[1])).save(p)
            out[split].append(p)
    return out


def encoder() -> Backbone:
    """WRN50-2 (timm), seeded random init."""
    return build_backbone("wide_resnet50_2", pretrained="false", seed=SEED).eval()


def colour_labels(x: torch.Tensor) -> torch.Tensor:
    """Normalised images [B,3,H,W] → int64 [B,H,W]: 1 red, 2 blue, 3 / 4 bright / dark background."""
    r, _, b = x.unbind(1)
    lab = torch.where(x.mean(1) > 0.2, 3, 4)
    lab = torch.where(r > 1.0, 1, lab)
    return torch.where(b > 1.0, 2, lab)


def segmentor(enc: Backbone, train_images: torch.Tensor) -> FrozenEncoderSegmentor:
    """Our CSAD segmentor on ``enc``: seeded head with randomised BatchNorm statistics and affine;
    the last 1×1 conv is set to the nearest-centroid classifier of the colour labels of
    ``train_images`` (normalised [N,3,H,W]), so the segmentation follows the scene."""
    torch.manual_seed(SEED)
    model = FrozenEncoderSegmentor(enc, NUM_CLASSES)
    g = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for m in model.head.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) * 0.02 + 0.01)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    model.eval()
    head = model.head
    with torch.no_grad():
        f = model.features(train_images)
        high = torch.nn.functional.interpolate(head.aspp(f["layer3"]), size=f["layer1"].shape[2:], mode="bilinear",
                                               align_corners=False)
        z = head.decoder[:2](torch.cat([high, head.low(f["layer1"])], 1)).double()  # [N,256,h,w]
        lab = torch.nn.functional.interpolate(colour_labels(train_images)[:, None].double(), size=z.shape[2:],
                                              mode="nearest")[:, 0].long()
        z, lab = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), lab.reshape(-1)
        mu = torch.stack([z[lab == c].mean(0) if (lab == c).any() else z.mean(0) for c in range(NUM_CLASSES)])
        mu = mu - z.mean(0)
        head.decoder[2].weight.copy_(mu.float()[:, :, None, None])
        head.decoder[2].bias.copy_((-(mu * (mu / 2 + z.mean(0))).sum(1)).float())
    return model


def lgst(enc: Backbone) -> LGST:
    """Our LGST on ``enc``: seeded teacher projection, student and autoencoder (PyTorch default init)."""
    teacher = LGSTTeacher(enc, 512 + 1024, channels=CHANNELS, out_size=IMAGE_SIZE // 4, layers=LAYERS, seed=SEED)
    torch.manual_seed(SEED)
    return LGST(teacher, image_size=IMAGE_SIZE, channels=CHANNELS).eval()


def in_order(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our tensors under the official names: same layers in the same order and shapes."""
    if len(ours) != len(theirs) or any(a.shape != b.shape for a, b in zip(ours.values(), theirs.values())):
        raise ValueError("layouts differ")
    return dict(zip(theirs, ours.values()))


# our DeepLabV3PlusHead module → official models.segmentation.model.Segmentor module
HEAD_NAMES = {"aspp.branches.0": "aspp.stages.c0", "aspp.branches.1": "aspp.stages.c1",
              "aspp.branches.2": "aspp.stages.c2", "aspp.branches.3": "aspp.stages.c3",
              "aspp.pool": "aspp.stages.imagepool.conv", "aspp.fuse": "fc1", "low": "reduce",
              "decoder.0": "fc2.conv1", "decoder.1": "fc2.conv2", "decoder.2": "fc2.conv3"}


def official_head(ours: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our segmentor head's state dict under the official ``Segmentor`` names
    (conv-BN-ReLU: ``0.*`` → ``conv.*``, ``1.*`` → ``bn.*``; the last 1×1 conv keeps its names)."""
    out = {}
    for key, v in ours.items():
        for prefix, name in HEAD_NAMES.items():
            if key.startswith(prefix + "."):
                rest = key[len(prefix) + 1:]
                if prefix != "decoder.2":
                    rest = {"0": "conv", "1": "bn"}[rest.split(".")[0]] + rest[1:]
                out[f"{name}.{rest}"] = v
                break
        else:
            raise KeyError(key)
    return out

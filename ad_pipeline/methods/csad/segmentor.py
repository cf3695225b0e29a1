"""CSAD's segmentor (stage ``segmentor@``): the DeepLab-v3+ head on the frozen shared encoder,
trained on the pseudo-labels of ``pseudo_labels@`` with the supervised-batch augmentation; saved
as its head alone, loaded back by ``csad@``; and its predicted part maps of every split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ad_pipeline.backbones import build_backbone
from ad_pipeline.data.images import load_batch
from ad_pipeline.data.manifest import SPLITS, Manifest
from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import read_json, write_json
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.csad.config import CSADConfig
from ad_pipeline.seed import seed_everything
from ad_pipeline.segmentation.augment import SupervisedAugment
from ad_pipeline.segmentation.models import FrozenEncoderSegmentor
from ad_pipeline.segmentation.pseudo_labels import PseudoLabels
from ad_pipeline.segmentation.train import predict_labels, train_segmentation

SEGMENTOR_FILE = "segmentor_head.pth"
SEGMENTOR_META = "segmentor.json"


def build_encoder(cfg: CSADConfig, ctx: RunContext):
    """The frozen encoder that the segmentor and LGST's teacher share."""
    return build_backbone(cfg.encoder, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir, seed=ctx.seed)


def build_segmentor(encoder, num_classes: int, cfg: CSADConfig) -> FrozenEncoderSegmentor:
    return FrozenEncoderSegmentor(encoder, num_classes, channels=cfg.head_channels, low_out=cfg.head_low_channels,
                                  bn_momentum=cfg.bn_momentum)


def resize_labels(maps: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 label maps (any sizes) → int64 [N,size,size] (nearest)."""
    out = [F.interpolate(torch.from_numpy(np.array(m))[None, None].float(), size=(size, size), mode="nearest")[0, 0]
           for m in maps]
    return torch.stack(out).long()


def build_augment(labels: PseudoLabels, cfg: CSADConfig) -> SupervisedAugment | None:
    """The supervised-batch augmentation of ``cfg.augment`` (None when disabled); LSA's proposal
    images are resized (nearest) to the training resolution."""
    aug = cfg.augment
    if not aug.enabled:
        return None
    if aug.lsa_ratio == 0:
        return SupervisedAugment(aug, None)
    if labels.proposals is None:
        raise ArtifactError("the pseudo-labels hold no proposal images, which LSA copy-pastes",
                            fix="re-run the pseudo_labels stage (it now saves proposals/), or set "
                                "csad.augment.lsa_ratio: 0 (or csad.augment.enabled: false)")
    return SupervisedAugment(aug, resize_labels(labels.proposals, cfg.image_size).to(torch.uint8).numpy())


def fit_segmentor(train: Sequence[Path], labels: PseudoLabels, cfg: CSADConfig, ctx: RunContext,
                  encoder=None) -> tuple[FrozenEncoderSegmentor, list[dict[str, float]]]:
    """Train the segmentor head on ``labels`` (made for exactly ``train``) with ``cfg.augment`` on the
    supervised batches; returns (model, history)."""
    labels.check_paths(train)
    if labels.num_classes < 2:
        raise ArtifactError("the pseudo-labels have no part class (every label map is background): the mask "
                            "proposer found no component that survived clustering",
                            fix="check pseudo_labels/<category>/preview.png and meta.json; with random-init "
                                "Grounded-SAM weights (no files in weights_dir) no part is found — put the weight "
                                "files there or use the 'part_labels' / 'color' proposer")
    seed_everything(ctx.seed)
    augment = build_augment(labels, cfg)
    encoder = encoder or build_encoder(cfg, ctx)
    model = build_segmentor(encoder, labels.num_classes, cfg)
    images = load_batch(list(train), cfg.image_size)
    history = train_segmentation(model, images, resize_labels(labels.label_maps, cfg.image_size), labels.good_indices,
                                 cfg.segmentor, num_classes=labels.num_classes, seed=ctx.seed, augment=augment,
                                 device=ctx.device, progress=ctx.progress)
    return model, history


def save_segmentor(model: FrozenEncoderSegmentor, out_dir: Path, cfg: CSADConfig) -> None:
    """``segmentor_head.pth`` (the trained head; the encoder comes from the registry) + ``segmentor.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.head.state_dict(), out_dir / SEGMENTOR_FILE)
    num_classes = model.head.decoder[-1].out_channels
    write_json(out_dir / SEGMENTOR_META, {"num_classes": num_classes, "encoder": cfg.encoder,
                                          "weights": getattr(model.encoder, "weights", "unknown")})


def load_segmentor(seg_dir: Path, cfg: CSADConfig, encoder) -> FrozenEncoderSegmentor:
    """Rebuild the segmentor saved by :func:`save_segmentor` on ``encoder``."""
    seg_dir = Path(seg_dir)
    meta = read_json(seg_dir / SEGMENTOR_META)
    if meta.get("encoder") != cfg.encoder:
        raise ArtifactError(f"segmentor was trained on encoder {meta.get('encoder')!r}, CSAD is set to {cfg.encoder!r}",
                            path=seg_dir, fix="re-run the segmentor stage or set the same encoder")
    model = build_segmentor(encoder, int(meta["num_classes"]), cfg)
    model.head.load_state_dict(torch.load(seg_dir / SEGMENTOR_FILE, map_location="cpu", weights_only=True))
    return model.eval()


def segment(model: FrozenEncoderSegmentor, paths: Sequence[Path], cfg: CSADConfig, device: str) -> torch.Tensor:
    """Part label maps int64 [N, image_size, image_size] of the images at ``paths`` (on CPU)."""
    return predict_labels(model, load_batch(list(paths), cfg.image_size), batch_size=cfg.batch_size,
                          device=device).cpu()


def write_part_maps(model: FrozenEncoderSegmentor, manifest: Manifest, out_dir: Path, cfg: CSADConfig,
                    device: str) -> None:
    """``<out_dir>/parts/<split>/<row>.png`` (uint8 labels, rows in manifest order) for every split."""
    for split in SPLITS:
        paths = manifest.paths(split)
        if not paths:
            continue
        (out_dir / "parts" / split).mkdir(parents=True)
        for row, labels in enumerate(segment(model, paths, cfg, device).numpy()):
            Image.fromarray(labels.astype("uint8")).save(out_dir / "parts" / split / f"{row:04d}.png")

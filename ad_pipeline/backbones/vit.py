"""ViT backbones: CLIP (open_clip) and DINO / DINOv2 (timm), patch tokens of chosen blocks.

Token semantics (see spec/musc.md §1): CLIP returns the raw residual stream after block i (no
``ln_post``); DINO / DINOv2 return block outputs passed through the model's final norm. Class
and register tokens are dropped. Positional embeddings are resized bicubically to the input grid.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from ad_pipeline.backbones.base import EMBEDDING, Backbone, BackboneSpec, Layer
from ad_pipeline.backbones.weights import WeightsSource, is_torchscript_archive, seeded
from ad_pipeline.errors import UserError


class _VitBackbone(Backbone):
    def grid_size(self, image_size: int | tuple[int, int]) -> tuple[int, int]:
        h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
        return h // self.spec.patch_size, w // self.spec.patch_size

    def _check_blocks(self, layers: Sequence[Layer], depth: int) -> tuple[list[int], bool]:
        """Sorted distinct block indices of ``layers`` and whether ``EMBEDDING`` is among them."""
        blocks = [i for i in layers if i != EMBEDDING]
        bad = [i for i in blocks if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < depth]
        if not layers or bad:
            raise UserError(f"backbone {self.spec.name!r} has blocks 0..{depth - 1} (and {EMBEDDING!r}); "
                            f"invalid layers {bad or '[]'}",
                            fix=f"use 0-based block indices, e.g. {list(self.spec.default_layers)}")
        return sorted(set(blocks)), len(blocks) < len(layers)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Global image embedding [B, D] (see the subclass' ``EMBEDDING``)."""
        return self(x, [EMBEDDING])[EMBEDDING]


class ClipBackbone(_VitBackbone):
    """open_clip visual tower. ``bb(x [B,3,H,W], [5, 11]) -> {5: [B, h*w, C], 11: ...}``;
    ``EMBEDDING``: ``ln_post(class token) @ proj``, L2-normalised [B, D]."""

    def _tokens_in(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded tokens [B, 1+h*w, C] (class token first), ready for block 0."""
        v = self.model
        patches = v.conv1(x)  # [B, C, h, w]
        grid = patches.shape[-2:]
        tokens = patches.flatten(2).transpose(1, 2)
        cls = v.class_embedding.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        native = v.grid_size
        pos = v.positional_embedding
        if tuple(grid) != tuple(native):
            pos = resample_abs_pos_embed(pos[None], list(grid), list(native), num_prefix_tokens=1,
                                         interpolation="bicubic", antialias=False)[0]
        return v.ln_pre(v.patch_dropout(tokens + pos.to(tokens.dtype)))

    def forward(self, x: torch.Tensor, layers: Sequence[Layer]) -> dict[Layer, torch.Tensor]:
        self._check_input(x)
        blocks = self.model.transformer.resblocks
        wanted, with_embedding = self._check_blocks(layers, len(blocks))
        last = len(blocks) - 1 if with_embedding else wanted[-1]
        h = self._tokens_in(x)
        out: dict[Layer, torch.Tensor] = {}
        for i, block in enumerate(blocks[: last + 1]):
            h = block(h)
            if i in wanted:
                out[i] = h[:, 1:]
        if with_embedding:
            out[EMBEDDING] = F.normalize(self.model.ln_post(h[:, 0]) @ self.model.proj, dim=-1)
        return {i: out[i] for i in layers}


class TimmVitBackbone(_VitBackbone):
    """timm ViT (DINO / DINOv2) with dynamic image size. Tokens are final-norm outputs [B, h*w, C];
    ``EMBEDDING``: the normed class token [B, D] (not L2-normalised), as the model's own forward gives it."""

    def forward(self, x: torch.Tensor, layers: Sequence[Layer]) -> dict[Layer, torch.Tensor]:
        self._check_input(x)
        wanted, with_embedding = self._check_blocks(layers, len(self.model.blocks))
        if not with_embedding:
            feats = self.model.forward_intermediates(x, indices=wanted, norm=True, stop_early=True,
                                                     output_fmt="NLC", intermediates_only=True)
            out: dict[Layer, torch.Tensor] = dict(zip(wanted, feats))
        else:
            final, feats = self.model.forward_intermediates(x, indices=wanted or [len(self.model.blocks) - 1],
                                                            norm=True, output_fmt="NLC")
            out = dict(zip(wanted, feats))
            out[EMBEDDING] = self.model.forward_head(final, pre_logits=True)
        return {i: out[i] for i in layers}


class _DropRecords(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


@contextlib.contextmanager
def _silence_root_log(fragment: str) -> Iterator[None]:
    """Drop open_clip's own "no pretrained weights" root-log line (we warn ourselves, or stay silent)."""
    flt = _DropRecords(fragment)
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def build_clip(spec: BackboneSpec, weights: WeightsSource | None, *, seed: int, trainable: bool) -> ClipBackbone:
    """open_clip CLIP; only the visual tower is kept (``bb.model``)."""
    import open_clip

    quick_gelu = bool(open_clip.pretrained.get_pretrained_cfg(spec.source, spec.pretrained_tag).get("quick_gelu"))
    path = None if weights is None else str(weights.path)
    with seeded(seed), _silence_root_log("No pretrained weights loaded"):
        try:
            clip = open_clip.create_model(spec.source, pretrained=path, force_quick_gelu=quick_gelu,
                                          weights_only=weights is None or not is_torchscript_archive(weights.path))
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"weights do not fit CLIP backbone {spec.name!r} ({e})", path=path,
                            fix="use the OpenAI / open_clip checkpoint listed in ad_pipeline/backbones/weights.py")\
                from None
    return ClipBackbone(spec, clip.visual, "random-init" if weights is None else "pretrained", trainable=trainable)


def build_timm_vit(spec: BackboneSpec, weights: WeightsSource | None, *, seed: int,
                   trainable: bool) -> TimmVitBackbone:
    """timm DINO / DINOv2 ViT with ``dynamic_img_size`` (pos-emb resized per input grid)."""
    import timm

    with seeded(seed):
        try:
            model = timm.create_model(spec.source, pretrained=weights is not None, dynamic_img_size=True,
                                      pretrained_cfg_overlay=None if weights is None else {"file": str(weights.path)})
        except (RuntimeError, KeyError, ValueError) as e:
            raise UserError(f"weights do not fit backbone {spec.name!r} ({e})", path=weights and weights.path,
                            fix="use the official / timm checkpoint listed in ad_pipeline/backbones/weights.py")\
                from None
    return TimmVitBackbone(spec, model, "random-init" if weights is None else "pretrained", trainable=trainable)

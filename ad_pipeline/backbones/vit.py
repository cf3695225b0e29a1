"""ViT backbones: CLIP (open_clip) and DINO / DINOv2 (timm), patch tokens of chosen blocks.

Token semantics (see spec/musc.md §1): CLIP returns the raw residual stream after block i (no
``ln_post``); DINO / DINOv2 return block outputs passed through the model's final norm. Class
and register tokens are dropped. Positional embeddings are resized bicubically to the input grid.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from ad_pipeline.backbones.base import EMBEDDING, Backbone, BackboneSpec, Layer
from ad_pipeline.backbones.weights import WeightsSource, is_torchscript_archive, read_state_dict
from ad_pipeline.errors import UserError
from ad_pipeline.seed import seeded


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
    ``EMBEDDING``: ``ln_post(class token) @ proj``, L2-normalised [B, D]. ``activation``: the MLP
    activation it was built with ("quick_gelu" | "gelu"), ``activation_reason``: why (see ``clip_activation``)."""

    activation_reason = "random init"

    @property
    def activation(self) -> str:
        import open_clip

        act = self.model.transformer.resblocks[0].mlp.gelu
        return "quick_gelu" if isinstance(act, open_clip.transformer.QuickGELU) else "gelu"

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


CLIP_ACTIVATIONS = ("auto", "quick_gelu", "gelu")


def clip_activation(spec: BackboneSpec, weights: WeightsSource | None, requested: str = "auto") -> tuple[str, str]:
    """The MLP activation a CLIP tower is built with and why: ``("quick_gelu" | "gelu", reason)``.

    ``requested`` other than "auto" wins. Auto follows the weights: an OpenAI TorchScript archive
    -> QuickGELU (OpenAI trained with it); an ``open_clip_config.json`` next to the file (a Hugging
    Face snapshot) -> its ``model_cfg.quick_gelu``; a file from the libraries' caches or no file
    (random init) -> the registry tag's rule (``openai`` -> QuickGELU); any other state dict (an
    open_clip laion / datacomp checkpoint) -> GELU, open_clip's default for its own models.
    """
    if requested not in CLIP_ACTIVATIONS:
        raise UserError(f"clip activation must be one of {CLIP_ACTIVATIONS}, got {requested!r}",
                        fix="use auto (follow the weights), quick_gelu or gelu")
    if requested != "auto":
        return requested, "requested"
    import open_clip

    tag_quick = bool(open_clip.pretrained.get_pretrained_cfg(spec.source, spec.pretrained_tag).get("quick_gelu"))
    by_tag = ("quick_gelu" if tag_quick else "gelu"), f"tag {spec.pretrained_tag}"
    if weights is None or weights.origin == "cache":
        return by_tag
    if is_torchscript_archive(weights.path):
        return "quick_gelu", "OpenAI TorchScript archive"
    config = weights.path.parent / "open_clip_config.json"
    if config.is_file():
        quick = bool(json.loads(config.read_text()).get("model_cfg", {}).get("quick_gelu"))
        return ("quick_gelu" if quick else "gelu"), config.name
    return "gelu", "open_clip state dict"


def build_clip(spec: BackboneSpec, weights: WeightsSource | None, *, seed: int, trainable: bool,
               activation: str = "auto") -> ClipBackbone:
    """The open_clip visual tower alone (the text tower is never built; a state-dict file is read
    lazily, only its ``visual.*`` tensors). Random init equals the visual tower of
    ``open_clip.create_model`` under the same seed. ``activation``: see ``clip_activation``."""
    import open_clip
    from open_clip.model import _build_vision_tower

    act, reason = clip_activation(spec, weights, activation)
    cfg = open_clip.get_model_config(spec.source)
    with seeded(seed):
        visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=act == "quick_gelu")
    if weights is not None:
        state = _visual_state_dict(weights.path)
        try:
            visual.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise UserError(f"weights do not fit CLIP backbone {spec.name!r} ({e})", path=weights.path,
                            fix="use the OpenAI / open_clip checkpoint listed in ad_pipeline/backbones/weights.py")\
                from None
    bb = ClipBackbone(spec, visual, "random-init" if weights is None else "pretrained", trainable=trainable)
    bb.activation_reason = reason
    return bb


def _visual_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ``visual.*`` tensors of an OpenAI archive or an open_clip state dict, prefix removed."""
    if is_torchscript_archive(path):
        try:
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        except RuntimeError as e:
            raise UserError(f"cannot read this TorchScript archive ({e})", path=path,
                            fix="replace it with the unmodified OpenAI download or an open_clip state dict") from None
    else:
        state = read_state_dict(path, mmap=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    visual = {k.removeprefix("visual."): v.float() for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise UserError("no visual.* tensors in this file", path=path,
                        fix="use a full CLIP checkpoint (OpenAI archive or open_clip state dict)")
    return visual


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

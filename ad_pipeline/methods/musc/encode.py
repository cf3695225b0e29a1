"""One encoder pass per batch giving both the patch tokens of the chosen blocks and the global
image embedding RsCIN needs (``Backbone.__call__`` and ``Backbone.embed`` would run it twice).

A forward hook on the last block captures its full output (class token included) while the
backbone returns the requested blocks; the embedding head is then applied to that output exactly
as ``Backbone.embed`` does (a test checks equality).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ad_pipeline.backbones import Backbone


def _blocks(bb: Backbone) -> nn.ModuleList:
    if bb.spec.family == "clip":
        return bb.model.transformer.resblocks
    return bb.model.blocks


def _embedding_head(bb: Backbone, last_block_out: torch.Tensor) -> torch.Tensor:
    """Embedding [B, D] from the last block's output [B, T, C] (CLIP: L2-normalised ln_post(cls) @ proj;
    DINO / DINOv2: the model's pre-logits head on the final-normed tokens)."""
    model = bb.model
    if bb.spec.family == "clip":
        return F.normalize(model.ln_post(last_block_out[:, 0]) @ model.proj, dim=-1)
    return model.forward_head(model.norm(last_block_out), pre_logits=True)


def tokens_and_embedding(bb: Backbone, x: torch.Tensor,
                         layers: Sequence[int]) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """Patch tokens ``{block: [B, h*w, C]}`` of ``layers`` and the image embedding [B, D], one pass."""
    blocks = _blocks(bb)
    captured: list[torch.Tensor] = []
    handle = blocks[len(blocks) - 1].register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        tokens = bb(x, sorted(set(layers) | {len(blocks) - 1}))
    finally:
        handle.remove()
    return {layer: tokens[layer] for layer in layers}, _embedding_head(bb, captured[0])

"""LNAMD: Local Neighbourhood Aggregation with Multiple Degrees (MuSc spec §2).

Per image and layer the patch-token map is LayerNormed over (C, h, w) jointly (eps 1e-5, no
affine), every position is replaced by the zero-padded r×r mean of its neighbourhood (divisor
always r²) and each token is L2-normalised over C.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LAYER_NORM_EPS = 1e-5


def tokens_to_normed_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Patch tokens [B, h*w, C] -> LayerNormed map [B, C, h, w] (statistics over C, h, w per image)."""
    b, n_tokens, c = tokens.shape
    h, w = grid
    if n_tokens != h * w:
        raise ValueError(f"{n_tokens} tokens do not fill a {h}x{w} grid")
    fmap = tokens.transpose(1, 2).reshape(b, c, h, w)
    return F.layer_norm(fmap, fmap.shape[1:], eps=LAYER_NORM_EPS)


def aggregate(fmap: torch.Tensor, r: int) -> torch.Tensor:
    """Zero-padded r×r neighbourhood mean with divisor r² of a map [B, C, h, w] (same shape; r odd)."""
    if r < 1 or r % 2 == 0:
        raise ValueError(f"aggregation degree r must be a positive odd integer, got {r}")
    if r == 1:
        return fmap
    return F.avg_pool2d(fmap, kernel_size=r, stride=1, padding=(r - 1) // 2, count_include_pad=True)


def lnamd_features(fmap: torch.Tensor, r: int) -> torch.Tensor:
    """LayerNormed map [B, C, h, w] -> aggregated, L2-normalised tokens Z [B, h*w, C].

    The original divides by the norm without epsilon; ``F.normalize`` (computed here in place)
    is identical for every non-zero token and maps an all-zero token (constant feature map) to
    zero instead of NaN. Memory: one [B, h*w, C] result (plus the r×r mean while it is copied).
    """
    z = aggregate(fmap, r).flatten(2).transpose(1, 2).contiguous()
    return z.div_(z.norm(dim=-1, keepdim=True).clamp_min_(1e-12))  # = F.normalize, without a second copy

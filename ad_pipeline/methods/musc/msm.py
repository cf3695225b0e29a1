"""MSM: Mutual Scoring Mechanism (MuSc spec §3) as chunked, symmetric matrix products.

For tokens Z [N, L, C] (L2-normalised) the score of patch p of image i is the mean of the k
smallest values over j != i of d_ij(p) = min_q ||Z[i,p] - Z[j,q]||. Because the tokens are unit
vectors, ||a - b|| = sqrt(max(0, 2 - 2 a·b)), so the nearest patch is the one with the largest dot
product and the k smallest distances are the k largest "max similarities". One similarity block
Z[I] Z[J]^T gives both directions of every image pair in it: its row-max is d_ij for the patches
of i and its column-max is d_ji for the patches of j, so each unordered pair is multiplied once.

Memory: a (band, L, N) float32 table of max similarities, one (block·L) × (block·L) similarity
block and the k nearest of one query block (block·L·k values, float32 + float64);
``plan_chunks`` sizes them to fit ``max_memory_bytes`` (never below one image pair).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from ad_pipeline.methods.musc.lnamd import lnamd_features

MATMUL_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_BYTES_PER_VALUE = 4  # float32 table and (at most) float32 similarity block
_TOPK_BYTES = 12  # per kept neighbour value: float32 topk values + their float64 distances
# Rows (block · L) of one similarity block: large enough for an efficient matmul, small enough that
# the diagonal blocks (computed in full, both triangles) waste little: a fraction block / N.
_TARGET_BLOCK_ROWS = 1536


@dataclass(frozen=True)
class ChunkPlan:
    """``block``: images per side of one similarity block; ``band``: query images whose max-similarity
    table is held at once (a multiple of ``block`` unless it is the whole set)."""

    block: int
    band: int

    def peak_bytes(self, n_images: int, n_patches: int) -> int:
        """Working memory of one MSM pass besides Z: the band table plus the larger of one
        similarity block and one query block's k nearest (k < N)."""
        table = _BYTES_PER_VALUE * self.band * n_patches * n_images
        sims = _BYTES_PER_VALUE * (self.block * n_patches) ** 2
        nearest = _TOPK_BYTES * self.block * n_patches * n_images
        return table + max(sims, nearest)

    def n_blocks(self, n_images: int) -> int:
        """Similarity blocks computed for ``n_images`` (symmetric pairs inside a band counted once)."""
        total = 0
        for start in range(0, n_images, self.band):
            band_blocks = math.ceil((min(start + self.band, n_images) - start) / self.block)
            other_blocks = math.ceil(n_images / self.block) - band_blocks
            total += band_blocks * (band_blocks + 1) // 2 + band_blocks * other_blocks
        return total


def plan_chunks(n_images: int, n_patches: int, max_memory_bytes: float) -> ChunkPlan:
    """Split ``max_memory_bytes`` evenly between the band table and the similarity block; blocks
    hold about ``_TARGET_BLOCK_ROWS`` patch rows when memory allows."""
    half = max_memory_bytes / 2
    by_memory = min(math.isqrt(int(half // (_BYTES_PER_VALUE * n_patches**2))),
                    int(half // (_TOPK_BYTES * n_patches * n_images)))
    block = max(1, min(n_images, by_memory, round(_TARGET_BLOCK_ROWS / n_patches)))
    band = max(1, min(n_images, int(half // (_BYTES_PER_VALUE * n_patches * n_images))))
    if band < n_images:
        block = min(block, band)
        band = band // block * block
    return ChunkPlan(block=block, band=band)


def neighbour_count(n_images: int, fraction: float) -> int:
    """k = int(fraction · (N − 1)) reference images averaged per patch (Python truncation)."""
    return int(fraction * (n_images - 1))


def mutual_scores(
    z: torch.Tensor,
    k: int,
    *,
    max_memory_bytes: float = 2**30,
    precision: str = "fp32",
) -> torch.Tensor:
    """Patch anomaly scores float64 [N, L] (on CPU) of unit tokens ``z`` [N, L, C] (any device).

    Peak extra memory: ``plan_chunks(N, L, max_memory_bytes).peak_bytes(N, L)``.
    ``precision`` picks the matmul dtype ("fp32" | "bf16" | "fp16"); the table stays float32 and
    the distances and their mean are computed in float64.
    """
    n, n_patches, _ = z.shape
    if not 1 <= k <= n - 1:
        raise ValueError(f"k must be in [1, N-1] = [1, {n - 1}], got {k}")
    plan = plan_chunks(n, n_patches, max_memory_bytes)
    z_mm = z.to(MATMUL_DTYPES[precision])
    out = torch.empty(n, n_patches, dtype=torch.float64)
    for start in range(0, n, plan.band):
        stop = min(start + plan.band, n)
        table = _max_similarity_table(z_mm, start, stop, plan.block)
        for i0 in range(0, stop - start, plan.block):  # k nearest of one query block at a time
            nearest = table[i0:i0 + plan.block].topk(k, dim=2).values.double()  # [block, L, k] largest
            dist = nearest.mul_(-2.0).add_(2.0).clamp_min_(0.0).sqrt_()
            out[start + i0:start + i0 + len(dist)] = dist.mean(dim=2).cpu()
        del table
    return out


def _max_similarity_table(z: torch.Tensor, start: int, stop: int, block: int) -> torch.Tensor:
    """table[i - start, p, j] = max_q z[i,p]·z[j,q] for query images start <= i < stop; -inf at j == i."""
    n, n_patches, c = z.shape
    table = torch.empty(stop - start, n_patches, n, dtype=torch.float32, device=z.device)
    for i0 in range(start, stop, block):
        i1 = min(i0 + block, stop)
        zi = z[i0:i1].reshape(-1, c)
        for j0 in range(0, n, block):
            in_band = start <= j0 < stop
            if in_band and j0 < i0:
                continue  # already filled by the column-max of block (j0, i0)
            j1 = min(j0 + block, n)
            sims = (zi @ z[j0:j1].reshape(-1, c).T).view(i1 - i0, n_patches, j1 - j0, n_patches)
            table[i0 - start:i1 - start, :, j0:j1] = sims.amax(dim=3)
            if in_band and j0 != i0:
                table[j0 - start:j1 - start, :, i0:i1] = sims.amax(dim=1).permute(1, 2, 0)
    rows = torch.arange(stop - start, device=z.device)
    table[rows, :, rows + start] = -math.inf
    return table


def patch_scores(
    normed_maps: Sequence[torch.Tensor],
    r_list: Sequence[int],
    k: int,
    *,
    max_memory_bytes: float = 2**30,
    precision: str = "fp32",
    progress: bool = False,
) -> torch.Tensor:
    """Mean over layers and degrees r of MSM scores: float64 [N, h*w].

    ``normed_maps``: one LayerNormed map [N, C, h, w] per layer (``tokens_to_normed_map``). One
    aggregated Z [N, L, C] is alive at a time besides the maps.
    """
    passes = [(fmap, r) for fmap in normed_maps for r in r_list]
    total = torch.zeros(normed_maps[0].shape[0], normed_maps[0].shape[-2] * normed_maps[0].shape[-1],
                        dtype=torch.float64)
    for fmap, r in tqdm(passes, desc="MuSc mutual scoring", unit="pass", disable=not progress, leave=False):
        total += mutual_scores(lnamd_features(fmap, r), k, max_memory_bytes=max_memory_bytes, precision=precision)
    return total / len(passes)

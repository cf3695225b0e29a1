"""Literal, slow reference of the MuSc formulas (spec §2-§4), for tests and bench/musc.py only.

Written for clarity, not speed: unfold-based LNAMD, one torch.cdist per image pair, explicit sort.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F


def lnamd_reference(tokens: torch.Tensor, r: int) -> torch.Tensor:
    """Tokens [B, 1+L, C] (token 0 is dropped) -> Z [B, L, C] via unfold + adaptive_avg_pool1d."""
    patches = tokens[:, 1:, :]
    b, n_patches, c = patches.shape
    side = int(math.sqrt(n_patches))
    fmap = patches.reshape(b, side, side, c).permute(0, 3, 1, 2)
    fmap = torch.nn.LayerNorm([c, side, side], eps=1e-5, elementwise_affine=False)(fmap)
    unfolded = F.unfold(fmap, kernel_size=r, padding=(r - 1) // 2)  # [B, C*r*r, L], channel-major
    per_patch = unfolded.transpose(1, 2).reshape(b * n_patches, 1, c * r * r)
    z = F.adaptive_avg_pool1d(per_patch, c).reshape(b, n_patches, c)
    return z / z.norm(dim=-1, keepdim=True)


def msm_reference(z: torch.Tensor, fraction: float = 0.3) -> torch.Tensor:
    """Z [N, L, C] -> float64 [N, L]: per pair cdist, min over q, sort over j, mean of k smallest."""
    n = z.shape[0]
    k = int(fraction * (n - 1))
    out = []
    for i in range(n):
        per_image = [torch.cdist(z[i], z[j]).min(dim=1).values for j in range(n) if j != i]  # each [L]
        ranked = torch.stack(per_image, dim=1).sort(dim=1).values  # [L, N-1] ascending
        out.append(ranked[:, :k].mean(dim=1).double())
    return torch.stack(out)


def msm_per_image_cdist(z: torch.Tensor, fraction: float = 0.3) -> torch.Tensor:
    """The official "fast" formulation: per image i one cdist of [L] x [(N-1)·L], then topk."""
    n, n_patches, c = z.shape
    k = int(fraction * (n - 1))
    out = []
    for i in range(n):
        others = torch.cat([z[:i], z[i + 1:]]).reshape(-1, c)
        nearest = torch.cdist(z[i], others).reshape(n_patches, n - 1, n_patches).min(dim=2).values
        out.append(torch.topk(nearest, k, dim=1, largest=False).values.mean(dim=1).double())
    return torch.stack(out)


def musc_reference(tokens_per_layer: Sequence[torch.Tensor], r_list: Sequence[int], fraction: float = 0.3,
                   msm=msm_reference) -> torch.Tensor:
    """Mean over r of the mean over layers of MSM maps; tokens [N, 1+L, C] per layer -> float64 [N, L]."""
    per_r = []
    for r in r_list:
        per_layer = [msm(lnamd_reference(tokens, r), fraction) for tokens in tokens_per_layer]
        per_r.append(torch.stack(per_layer).mean(dim=0))
    return torch.stack(per_r).mean(dim=0)


def rscin_reference(scores: Sequence[float], embeddings: torch.Tensor, k_list: Sequence[int]) -> torch.Tensor:
    """Row-by-row RsCIN with an explicit diagonal degree matrix, as the formulas read."""
    s = torch.as_tensor(scores, dtype=torch.float64)
    s_hat = (s - s.min()) / (s.max() - s.min())
    sim = embeddings.double() @ embeddings.double().T
    n = sim.shape[0]
    per_k = []
    for k in k_list:
        masked = sim.clone()
        for i in range(n):
            smallest = torch.topk(sim[i], n - k, largest=False).indices
            masked[i, smallest] = 0.0
        degree_inv = torch.diag(1.0 / masked.sum(dim=1))
        per_k.append(degree_inv @ masked @ s_hat)
    return torch.stack(per_k).mean(dim=0)

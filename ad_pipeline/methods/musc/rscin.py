"""RsCIN: Re-scoring with Constrained Image-level Neighbourhood (MuSc spec §4).

Image scores are min-max normalised over the category; for each window k every image's score is
replaced by the similarity-weighted mean of the normalised scores of its k most similar images
(its own included, W = F Fᵀ); the final score is the mean over the windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Windows the official code uses per dataset; any other format gets the MVTec ones.
K_LIST_BY_FORMAT = {"mvtec_ad": (1, 2, 3), "visa": (1, 8, 9)}
DEFAULT_K_LIST = (1, 2, 3)


def default_k_list(dataset_format: str) -> list[int]:
    return list(K_LIST_BY_FORMAT.get(dataset_format, DEFAULT_K_LIST))


def rescore(scores: np.ndarray, embeddings: np.ndarray, k_list: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """Re-scored image scores float64 [N] and warnings, from raw scores [N] and embeddings [N, D].

    A 0 in ``k_list`` disables RsCIN (raw scores are returned). Windows larger than N are clamped
    to N; equal raw scores normalise to 0; a row whose kept similarities sum to <= 0 (possible with
    un-normalised DINO embeddings) keeps its normalised score. Each such case adds a warning.
    """
    s = np.asarray(scores, dtype=np.float64)
    feats = np.asarray(embeddings, dtype=np.float64)
    if s.ndim != 1 or feats.ndim != 2 or feats.shape[0] != s.shape[0]:
        raise ValueError(f"expected scores [N] and embeddings [N, D], got {s.shape} and {feats.shape}")
    if not (np.isfinite(s).all() and np.isfinite(feats).all()):
        raise ValueError("RsCIN got non-finite scores or embeddings")
    if 0 in k_list:
        return s, []
    warnings: list[str] = []
    n = s.shape[0]
    span = s.max() - s.min()
    if span > 0:
        s_hat = (s - s.min()) / span
    else:
        s_hat = np.zeros_like(s)
        warnings.append("RsCIN: all raw image scores are equal; normalised scores set to 0")
    sim = torch.from_numpy(feats @ feats.T)
    s_hat_t = torch.from_numpy(s_hat)
    windows = []
    for k in k_list:
        if k > n:
            warnings.append(f"RsCIN: window {k} > N={n} images; clamped to {n}")
            k = n
        kept = torch.ones_like(sim)
        if k < n:  # zero the N-k smallest similarities of each row, as the original does
            kept.scatter_(1, torch.topk(sim, n - k, dim=1, largest=False).indices, 0.0)
        weights = sim * kept
        row_sums = weights.sum(dim=1)
        ok = row_sums > 0
        if not bool(ok.all()):
            warnings.append(f"RsCIN: window {k}: {int((~ok).sum())} image(s) with non-positive similarity sum "
                            "keep their normalised score")
        rescored = (weights @ s_hat_t) / torch.where(ok, row_sums, torch.ones_like(row_sums))
        windows.append(torch.where(ok, rescored, s_hat_t))
    return torch.stack(windows).mean(dim=0).numpy(), warnings

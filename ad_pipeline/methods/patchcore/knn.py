"""Exact k-nearest-neighbour search in chunks (squared Euclidean distances, like faiss IndexFlatL2)."""

from __future__ import annotations

import torch

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # 16M floats = 64 MiB distance block


def nearest_sq_distances(queries: torch.Tensor, bank: torch.Tensor, k: int = 1, *,
                         chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared L2 distances [Q, k] (ascending) and indices [Q, k] of the k nearest ``bank`` rows.

    ``queries`` [Q, D], ``bank`` [M, D]. Exact: ‖q‖² + ‖m‖² − 2 qᵀm in float32, clamped at 0.
    Memory: one [chunk, M] block with chunk = max(1, chunk_elements // M) queries.
    """
    if bank.shape[0] < k:
        raise ValueError(f"memory bank has {bank.shape[0]} rows, fewer than k={k}")
    bank = bank.float()
    bank_sq = (bank * bank).sum(dim=1)
    chunk = max(1, chunk_elements // bank.shape[0])
    dists, indices = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk].float()
        d = torch.addmm(bank_sq[None, :], q, bank.T, alpha=-2).add_((q * q).sum(dim=1, keepdim=True)).clamp_(min=0)
        top = torch.topk(d, k, dim=1, largest=False)
        dists.append(top.values)
        indices.append(top.indices)
    return torch.cat(dists), torch.cat(indices)

"""Exact k-nearest-neighbour search (squared Euclidean distances, as faiss IndexFlatL2 returns them).

Backends, chosen by measurement (bench/patchcore.py, 2 CPU cores): on CPU faiss ``IndexFlatL2``
was ~1.6x faster than chunked torch matmul with identical neighbours; on GPU the torch path runs
on the device. "pruned" (``pruned.PrunedKnnIndex``) skips most distance computations on
clustered features (real CNN patch features) and falls back to brute force where it cannot
prune (e.g. white noise). All are exact searches.
"""

from __future__ import annotations

import numpy as np
import torch

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # 16M floats = 64 MiB distance block


def nearest_sq_distances(queries: torch.Tensor, bank: torch.Tensor, k: int = 1, *, backend: str = "auto",
                         chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared L2 distances [Q, k] (ascending) and indices [Q, k] of the k nearest ``bank`` rows.

    ``queries`` [Q, D], ``bank`` [M, D]; ``backend``: "auto" (faiss for CPU tensors, torch
    otherwise), "faiss", "torch" or "pruned". Memory: the torch and pruned paths hold [chunk, M]
    blocks with chunk = max(1, chunk_elements // M) queries; faiss blocks its search internally.
    """
    if bank.shape[0] < k:
        raise ValueError(f"memory bank has {bank.shape[0]} rows, fewer than k={k}")
    if backend == "auto":
        backend = "faiss" if bank.device.type == "cpu" else "torch"
    if backend == "faiss":
        return faiss_search(flat_index(bank), queries, k)
    if backend == "pruned":
        from ad_pipeline.methods.patchcore.pruned import PrunedKnnIndex

        return PrunedKnnIndex(bank, chunk_elements=chunk_elements).search(queries, k)
    if backend != "torch":
        raise ValueError(f"unknown kNN backend {backend!r}; expected auto, faiss, torch or pruned")
    return _torch_search(queries, bank, k, chunk_elements)


def flat_index(bank: torch.Tensor):
    """A faiss ``IndexFlatL2`` holding a float32 CPU copy of ``bank`` [M, D]."""
    import faiss

    index = faiss.IndexFlatL2(bank.shape[1])
    index.add(np.ascontiguousarray(bank.detach().cpu().numpy(), dtype=np.float32))
    return index


def faiss_search(index, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact search of ``index`` (``flat_index``): squared distances and indices [Q, k], on CPU."""
    dist, idx = index.search(np.ascontiguousarray(queries.detach().cpu().numpy(), dtype=np.float32), k)
    return torch.from_numpy(dist).clamp_(min=0), torch.from_numpy(idx)


def _torch_search(queries: torch.Tensor, bank: torch.Tensor, k: int,
                  chunk_elements: int) -> tuple[torch.Tensor, torch.Tensor]:
    """‖q‖² + ‖m‖² − 2 qᵀm in float32, clamped at 0, top-k per query chunk."""
    bank = bank.float()
    bank_sq = (bank * bank).sum(dim=1)
    chunk = max(1, chunk_elements // bank.shape[0])
    dists, indices = [], []
    for start in range(0, queries.shape[0], chunk):
        q = queries[start:start + chunk].to(bank.device, torch.float32)
        d = torch.addmm(bank_sq[None, :], q, bank.T, alpha=-2).add_((q * q).sum(dim=1, keepdim=True)).clamp_(min=0)
        top = torch.topk(d, k, dim=1, largest=False)
        dists.append(top.values)
        indices.append(top.indices)
    return torch.cat(dists), torch.cat(indices)


def nearest_sq_distances_excluding(queries: torch.Tensor, bank: torch.Tensor, k: int, query_owner: torch.Tensor,
                                   bank_owner: torch.Tensor, *,
                                   backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """As ``nearest_sq_distances``, but query i never matches a bank row with ``bank_owner == query_owner[i]``.

    ``query_owner`` [Q] and ``bank_owner`` [M] are integer ids (e.g. the train image a patch came
    from). Exact: one search for K = k + c nearest rows, c = the most bank rows any queried owner
    has; at most c of them are excluded, so the first k kept are the k nearest allowed rows.
    Memory: [Q, K] distances and indices (callers chunk the queries).
    """
    owners = torch.unique(query_owner)
    counts = torch.bincount(bank_owner.cpu(), minlength=int(owners.max()) + 1)[owners.cpu()]
    if bank.shape[0] - int(counts.max()) < k:
        raise ValueError(f"memory bank keeps {bank.shape[0] - int(counts.max())} rows after excluding an owner's "
                         f"{int(counts.max())}, fewer than k={k}")
    sq, idx = nearest_sq_distances(queries, bank, min(k + int(counts.max()), bank.shape[0]), backend=backend)
    excluded = bank_owner.to(idx.device)[idx] == query_owner.to(idx.device)[:, None]  # [Q, K]
    order = torch.sort(excluded.to(torch.uint8), dim=1, stable=True).indices[:, :k]  # allowed first, by distance
    return sq.gather(1, order), idx.gather(1, order)

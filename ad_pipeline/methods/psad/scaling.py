"""Standardisation, nearest-neighbour distances and adaptive scaling of PSAD's banks.

Adaptive scaling (``max``): each bank's query distance is divided by the MAXIMUM over the
training entries of their distance to the nearest OTHER training entry (+1e-10); for the
patch bank, by the maximum of PatchCore's leave-one-out training scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

NearestRule = Literal["second_smallest", "repo_bug"]
ScaleType = Literal["max", "std", "none"]


@dataclass
class Standardizer:
    """z = (x − mean)/(std + 1e-10) per dimension, mean/std (unbiased) over the training entries."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, bank: torch.Tensor) -> Standardizer:
        if len(bank) < 2:
            return cls(bank.mean(0), torch.ones(bank.shape[1]))
        return cls(bank.mean(0), bank.std(0, unbiased=True))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.std + 1e-10)


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """min_i ‖q − m_i‖₂ per query → [Q]. Memory: chunk × N distances at a time."""
    return torch.cat([torch.cdist(queries[i:i + chunk], bank).amin(1) for i in range(0, len(queries), chunk)])


def nearest_other_distances(bank: torch.Tensor, rule: NearestRule = "second_smallest") -> torch.Tensor:
    """For each training entry, its distance to the nearest other entry → [N] (N ≥ 2).

    ``second_smallest``: the intended rule (sorted row, index 1; index 0 is the entry itself).
    ``repo_bug``: the reference code's ``dist[argsort(dist) == 1]`` — the unsorted row's value at
    the position where the argsort equals 1 — kept only to reproduce its numbers.
    Memory: N × N distances.
    """
    if len(bank) < 2:
        raise ValueError("adaptive scaling needs at least 2 training images")
    d = torch.cdist(bank, bank)
    if rule == "second_smallest":
        return d.sort(1).values[:, 1]
    order = d.argsort(1)
    return torch.stack([row[o == 1][0] for row, o in zip(d, order)])


def adaptive_scale(query: torch.Tensor, train_ref: torch.Tensor, kind: ScaleType = "max") -> torch.Tensor:
    """Scale query distances [Q] by training reference values [N] (see module docstring)."""
    if kind == "max":
        return query / (train_ref.max() + 1e-10)
    if kind == "std":
        return (query - train_ref.mean()) / (train_ref.std() + 1e-10)
    return query

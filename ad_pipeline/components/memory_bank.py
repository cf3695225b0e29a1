"""kNN scores of patch features against a memory bank (PatchCore's scoring, spec/patchcore.md §5):
patch score = mean squared L2 distance to the ``num_neighbors`` nearest bank rows, image score =
max patch score or the paper's re-weighted max; optionally leave-one-image-out."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ad_pipeline.components.knn import KnnIndex, build_index, search_excluding


@dataclass(frozen=True)
class KnnScoring:
    """How patches are scored: ``num_neighbors`` nearest rows (mean of their squared distances);
    ``reweight``: paper eq. 7 over ``reweight_neighbors``; exact search ``backend`` on ``device``."""

    num_neighbors: int = 1
    reweight: bool = False
    reweight_neighbors: int = 9
    backend: str = "auto"
    device: str = "cpu"


class MemoryBank:
    """A bank [M, D] of patch features, the train image id of every row ``source`` [M] (None: no
    leave-one-out), and its kNN index (built on first use, kept)."""

    def __init__(self, bank: torch.Tensor, scoring: KnnScoring, source: torch.Tensor | None = None):
        self.bank = bank
        self.scoring = scoring
        self.source = source

    @cached_property
    def index(self) -> KnnIndex:
        return build_index(self.bank.to(self.scoring.device), self.scoring.backend)

    def scores(self, feats: torch.Tensor, owners: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Patch scores [n, h, w] (CPU) and image scores [n] float32 of features [n, h, w, D].

        With ``owners`` [n] (train image ids), image j is matched only against bank rows whose
        ``source`` is not ``owners[j]`` (leave-one-out)."""
        n, h, w, d = feats.shape
        query_owner = None if owners is None else owners.repeat_interleave(h * w)
        sq, idx = self._nearest(feats.reshape(-1, d).to(self.scoring.device), self.scoring.num_neighbors, query_owner)
        patch = sq.mean(dim=1).reshape(n, h, w).cpu()
        if self.scoring.reweight:
            scores = self._reweighted(feats.reshape(n, h * w, d), patch.reshape(n, -1), idx[:, 0].reshape(n, -1),
                                      owners)
        else:
            scores = patch.flatten(1).amax(dim=1)
        return patch, scores.numpy().astype(np.float32)

    def _nearest(self, queries: torch.Tensor, k: int,
                 query_owner: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if query_owner is None:
            return self.index.search(queries, k)
        if self.source is None:
            raise RuntimeError("leave-one-out scores need the bank's source image ids")
        return search_excluding(self.index, queries, k, query_owner, self.source)

    def _reweighted(self, feats: torch.Tensor, patch: torch.Tensor, nearest: torch.Tensor,
                    owners: torch.Tensor | None) -> torch.Tensor:
        """Paper eq. 7: s = (1 − exp‖t−m*‖ / Σ_{m∈N_b(m*)} exp‖t−m‖) · s*, t = the max-scoring test patch,
        m* its nearest bank feature, N_b(m*) the b nearest bank features of m* (m* included; with
        ``owners``, among the rows not excluded for that image)."""
        bank = self.bank.to(self.scoring.device)
        worst = patch.argmax(dim=1)  # [N]
        rows = torch.arange(feats.shape[0])
        t = feats[rows, worst].to(bank.device).float()  # [N, D]
        m_star = bank[nearest[rows, worst]]  # [N, D]
        available = bank.shape[0]
        if owners is not None:
            available -= int(torch.bincount(self.source, minlength=int(owners.max()) + 1)[owners].max())
        _, neigh = self._nearest(m_star, min(self.scoring.reweight_neighbors, available), owners)
        d_neigh = (t[:, None, :] - bank[neigh]).norm(dim=-1).double()  # [N, b]
        d_star = (t - m_star).norm(dim=-1).double()
        share = 1.0 / torch.exp(d_neigh - d_star[:, None]).sum(dim=1)  # exp(d*)/Σexp(d), overflow-safe
        return ((1 - share) * patch[rows, worst].double()).float().cpu()

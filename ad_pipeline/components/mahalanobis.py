"""Mahalanobis distance to a Gaussian fitted on training vectors: PUAD's pooled features,
CSAD's class histograms; numpy for fitting and library scoring, torch for inference graphs.

Fit on x [N,D]: mean m [D] and precision P = pinv(Σ) [D,D], Σ the sample covariance
(``"sample"``, ddof 1) or the Ledoit–Wolf shrunk one (``"ledoit_wolf"``, for N ≈ D, where
the sample covariance is ill-conditioned). pinv, not inv: Σ may be rank-deficient (histograms
sum to a constant). Fewer than 2 vectors → P = I (Euclidean distance).
Distance: d(x) = sqrt(max(0, (x − m)ᵀ P (x − m))); the clip catches round-off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

Estimator = Literal["sample", "ledoit_wolf"]


@dataclass
class Mahalanobis:
    """A fitted Gaussian: ``mean`` [D], ``precision`` [D,D] (float64) and the Ledoit–Wolf
    ``shrinkage`` (0 for the sample covariance)."""

    mean: np.ndarray
    precision: np.ndarray
    shrinkage: float = 0.0

    @classmethod
    def fit(cls, x: np.ndarray, estimator: Estimator = "sample") -> Mahalanobis:
        x = np.asarray(x, dtype=np.float64)
        if len(x) < 2:
            return cls(x.mean(0), np.eye(x.shape[1]))
        if estimator == "ledoit_wolf":
            lw = LedoitWolf().fit(x)
            return cls(lw.location_, np.linalg.pinv(lw.covariance_), float(lw.shrinkage_))
        return cls(x.mean(0), np.linalg.pinv(np.cov(x, rowvar=False, ddof=1)))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """[N,D] → distances [N] (float64); a row whose quadratic form is not finite gets its
        Euclidean distance."""
        d = np.asarray(x, dtype=np.float64) - self.mean
        q = np.einsum("nd,de,ne->n", d, self.precision, d)
        out = np.sqrt(np.clip(q, 0.0, None))
        bad = ~np.isfinite(out)
        out[bad] = np.linalg.norm(d[bad], axis=1)
        return out

    def module(self) -> MahalanobisDistance:
        """The same distance as a float32 torch module (for inference graphs)."""
        return MahalanobisDistance(self.mean, self.precision)


class MahalanobisDistance(nn.Module):
    """Rows [N,D] → distances [N], with ``mean`` [D] and ``precision`` [D,D] as float32 buffers."""

    def __init__(self, mean: np.ndarray, precision: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("precision", torch.as_tensor(precision, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x - self.mean
        return ((d @ self.precision) * d).sum(1).clamp_min(0).sqrt()

"""Score fusion: normalise each method's scores with statistics of its VALIDATION scores only,
then sum. Maps of different resolutions are resized to one common size first.

Normalisations (all fitted on normal validation images, never on test data):
- ``trimmed_z``: CSAD's rule — keep validation values strictly between their 20th and 80th
  percentiles (numpy linear quantiles), z = (s − mean) / std (population std; std 0 → 1).
- ``z``: plain z-score with the validation mean and population std.
- ``rank``: empirical CDF of the validation scores (fraction of validation values ≤ s).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Normalization = Literal["trimmed_z", "z", "rank"]


@dataclass(frozen=True)
class Normalizer:
    """A fitted normalisation: ``kind`` plus its statistics (``sorted_values`` for rank)."""

    kind: Normalization
    mean: float = 0.0
    std: float = 1.0
    sorted_values: np.ndarray | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.kind == "rank":
            return np.searchsorted(self.sorted_values, x, side="right") / len(self.sorted_values)
        return (x - self.mean) / self.std


def fit_normalizer(validation: np.ndarray, kind: Normalization, guard: float = 0.0) -> Normalizer:
    """Fit on validation values (any shape, flattened); a std ≤ ``guard`` becomes 1 (CSAD's
    export path uses 1e-3). Raises ValueError if there are none or any is not finite."""
    v = np.asarray(validation, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no validation values to fit a normalisation on")
    if not np.isfinite(v).all():
        raise ValueError("validation values are not finite (NaN/inf): cannot fit a normalisation")
    if kind == "rank":
        return Normalizer(kind, sorted_values=np.sort(v))
    if kind == "trimmed_z":
        lo, hi = np.quantile(v, [0.2, 0.8])
        trimmed = v[(v > lo) & (v < hi)]
        v = trimmed if trimmed.size else v  # all values tied: nothing lies strictly inside
    elif kind != "z":
        raise ValueError(f"unknown normalisation {kind!r}; expected trimmed_z, z or rank")
    std = float(v.std())
    return Normalizer(kind, mean=float(v.mean()), std=std if std > guard else 1.0)


def trimmed_zscore(scores: np.ndarray, validation: np.ndarray) -> np.ndarray:
    """CSAD's trimmed z-score of ``scores`` with statistics from ``validation``."""
    return fit_normalizer(validation, "trimmed_z")(scores)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of maps [N,h,w] → float32 [N,*size] (no-op when already that size)."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.shape[1:] == tuple(size):
        return maps
    t = torch.from_numpy(maps)[:, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def fuse(
    test: Sequence[np.ndarray],
    validation: Sequence[np.ndarray],
    kind: Normalization = "trimmed_z",
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Weighted sum of per-method normalised values.

    ``test[i]`` / ``validation[i]``: method i's test and validation values (scores [N] or maps
    [N,h,w] already at a common size). Returns float32 with the shape of ``test[0]``.
    """
    if len(test) != len(validation) or not test:
        raise ValueError("need test and validation values for the same (non-empty) list of methods")
    weights = [1.0] * len(test) if weights is None else list(weights)
    if len(weights) != len(test):
        raise ValueError(f"{len(weights)} weights for {len(test)} methods")
    total = np.zeros(np.shape(test[0]), dtype=np.float64)
    for values, val, w in zip(test, validation, weights):
        total += w * fit_normalizer(val, kind)(values)
    return total.astype(np.float32)

"""CSAD's trimmed z-score normalisation (csad.md §5), fitted on validation scores only.

Keep v_t = {v : q20(v) < v < q80(v)} (strict, numpy linear quantiles); z(s) = (s − mean(v_t)) /
std(v_t) with the population std; a std ≤ ``guard`` is replaced by 1 (benchmark path: guard 0,
i.e. only an exact 0; export path: 1e-3). If no value lies strictly inside (ties), all
validation values are used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TrimmedStats:
    mean: float
    std: float

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return (np.asarray(scores, dtype=np.float64) - self.mean) / self.std


def trimmed_stats(val_scores: np.ndarray, guard: float = 0.0) -> TrimmedStats:
    v = np.asarray(val_scores, dtype=np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError("trimmed z-score needs finite validation scores (got none or NaN/inf)")
    lo, hi = np.quantile(v, [0.2, 0.8])
    inner = v[(v > lo) & (v < hi)]
    v = inner if inner.size else v
    std = float(v.std())
    return TrimmedStats(float(v.mean()), std if std > guard else 1.0)


def trimmed_zscore(scores: np.ndarray, val_scores: np.ndarray, guard: float = 0.0) -> np.ndarray:
    """``scores`` normalised with the trimmed statistics of ``val_scores`` (float64, same shape)."""
    return trimmed_stats(val_scores, guard)(scores)

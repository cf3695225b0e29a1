"""Pooling of many maps into sorted negatives and weighted positive pixels.

Every pixel-level metric here (pixel AUROC/AP/F1, AUPRO, sPRO) is a function of two sets:
the *negative* (normal) pixel scores and the *positive* pixel scores, each positive carrying
a weight (1 for pixel metrics, 1/|region| for PRO, 1/saturation for sPRO). Sorting only the
negatives (``ndarray.sort``, SIMD accelerated) and counting them at the few distinct positive
values with ``searchsorted`` is exact and far cheaper than an argsort of all pixels.

Memory: one copy of the negative scores in their float dtype (4 B/pixel for float32 maps)
plus 12 B per positive pixel (float32 score + float64 weight); chunks are freed while the
final buffer fills, so the peak stays close to that bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ad_pipeline.metrics.validation import check_finite, require_both_classes


@dataclass(frozen=True)
class PooledPixels:
    """negatives: sorted ascending [n_neg]; positives [n_pos] with weights float64 [n_pos]."""

    negatives: np.ndarray
    positives: np.ndarray
    weights: np.ndarray

    def negatives_at_or_above(self, values: np.ndarray) -> np.ndarray:
        """int64 [k]: number of negatives with score >= each value."""
        return self.negatives.size - np.searchsorted(self.negatives, values, side="left")

    def negatives_above(self, values: np.ndarray) -> np.ndarray:
        """int64 [k]: number of negatives with score > each value."""
        return self.negatives.size - np.searchsorted(self.negatives, values, side="right")

    def distinct_positives(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distinct positive scores, descending [k], and the summed weight (or count) at each."""
        values, inverse = np.unique(self.positives, return_inverse=True)
        w = np.bincount(inverse, weights=weights, minlength=values.size)
        return values[::-1], w[::-1].astype(np.float64)


class PixelPool:
    """Accumulates (negatives, positives, weights) image by image; ``finish`` sorts once."""

    def __init__(self) -> None:
        self._negatives: list[np.ndarray] = []
        self._positives: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []

    def add(self, negatives: np.ndarray, positives: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add one image's normal pixel scores [a] and positive scores [b] with weights [b]."""
        negatives, positives = _as_scores(negatives), _as_scores(positives)
        check_finite(negatives, "anomaly maps")
        check_finite(positives, "anomaly maps")
        self._negatives.append(negatives)
        self._positives.append(positives)
        self._weights.append(np.ones(positives.size) if weights is None else np.asarray(weights, np.float64).ravel())

    @classmethod
    def combined(cls, *pools: PixelPool) -> PixelPool:
        """A pool holding the (shared, not copied) chunks of several unfinished pools."""
        out = cls()
        for pool in pools:
            out._negatives += pool._negatives
            out._positives += pool._positives
            out._weights += pool._weights
        return out

    def finish(self) -> PooledPixels:
        """Concatenate and sort the negatives; raises MetricUndefinedError if a class is empty."""
        dtype = np.result_type(np.float32, *(a.dtype for a in self._negatives + self._positives))
        negatives = _drain_into(self._negatives, dtype)
        negatives.sort()
        positives = _drain_into(self._positives, dtype)
        weights = _drain_into(self._weights, np.float64)
        require_both_classes(positives.size, negatives.size, "pixels")
        return PooledPixels(negatives, positives, weights)


def _as_scores(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values).ravel()
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    return values


def _drain_into(chunks: list[np.ndarray], dtype) -> np.ndarray:
    """Copy chunks into one buffer, freeing each chunk as soon as it is copied."""
    out = np.empty(sum(c.size for c in chunks), dtype=dtype)
    pos = 0
    chunks.reverse()
    while chunks:
        chunk = chunks.pop()
        out[pos:pos + chunk.size] = chunk
        pos += chunk.size
    return out

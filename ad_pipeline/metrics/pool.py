"""Pooling of many maps into sorted negatives and weighted positive pixels.

Every pixel-level metric here (pixel AUROC/AP/F1, AUPRO, sPRO) is a function of two sets:
the *negative* (normal) pixel scores and the *positive* pixel scores, each positive carrying
a weight (1 for pixel metrics, 1/|region| for PRO, 1/saturation for sPRO). Sorting only the
negatives (``ndarray.sort``, SIMD accelerated) and counting them at the few distinct positive
values with ``searchsorted`` is exact and far cheaper than an argsort of all pixels.

Memory: the negatives are copied once into blocks of ``BLOCK`` scores that are sorted in
place and never concatenated (counts are summed over blocks), so the bound is one copy of
the negative scores (4 B/pixel for float32 maps) + at most one partly filled block
(256 MB) + 12 B per positive pixel (score + float64 weight).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ad_pipeline.metrics.validation import check_finite, require_both_classes

BLOCK = 1 << 26  # negative scores per block


@dataclass(frozen=True)
class PooledPixels:
    """negatives: sorted blocks; positives [n_pos] with weights float64 [n_pos]."""

    negative_blocks: list[np.ndarray]
    positives: np.ndarray
    weights: np.ndarray

    @property
    def n_negatives(self) -> int:
        return sum(b.size for b in self.negative_blocks)

    def negatives_at_or_above(self, values: np.ndarray) -> np.ndarray:
        """int64 [k]: number of negatives with score >= each of the descending ``values``."""
        return self._count_from_top(values, "left")

    def negatives_above(self, values: np.ndarray) -> np.ndarray:
        """int64 [k]: number of negatives with score > each of the descending ``values``."""
        return self._count_from_top(values, "right")

    def _count_from_top(self, descending: np.ndarray, side: str) -> np.ndarray:
        # searching ascending keys lets numpy reuse the previous position (far fewer cache misses)
        ascending = descending[::-1]
        below = sum(np.searchsorted(block, ascending, side=side) for block in self.negative_blocks)
        return self.n_negatives - np.asarray(below, dtype=np.int64)[::-1]

    def distinct_positives(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Distinct positive scores, descending [k], and the summed weight (or count) at each."""
        values, inverse = np.unique(self.positives, return_inverse=True)
        w = np.bincount(inverse, weights=weights, minlength=values.size)
        return values[::-1], w[::-1].astype(np.float64)


class PixelPool:
    """Accumulates (negatives, positives, weights) image by image; ``finish`` sorts once.

    The score dtype is that of the first image's scores (at least float32); later images
    are cast to it.
    """

    def __init__(self, block_size: int = BLOCK) -> None:
        self._block_size = block_size
        self._blocks: list[np.ndarray] = []
        self._filled = 0  # scores in the last block
        self._dtype = None
        self._positives: list[np.ndarray] = []
        self._weights: list[np.ndarray] = []

    def add(self, negatives: np.ndarray, positives: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add one image's normal pixel scores [a] and positive scores [b] with weights [b]."""
        negatives, positives = _as_scores(negatives), _as_scores(positives)
        check_finite(negatives, "anomaly maps")
        check_finite(positives, "anomaly maps")
        if self._dtype is None:
            self._dtype = np.result_type(negatives.dtype, np.float32)
        self._append_negatives(negatives)
        self._positives.append(positives.astype(self._dtype, copy=False))
        self._weights.append(np.ones(positives.size) if weights is None else np.asarray(weights, np.float64).ravel())

    def _append_negatives(self, negatives: np.ndarray) -> None:
        start = 0
        while start < negatives.size:
            if not self._blocks or self._filled == self._blocks[-1].size:
                # the first block is small when the first image is: tiny inputs stay tiny
                size = self._block_size if self._blocks else min(self._block_size, max(negatives.size, 1 << 20))
                self._blocks.append(np.empty(size, dtype=self._dtype))
                self._filled = 0
            take = min(negatives.size - start, self._blocks[-1].size - self._filled)
            self._blocks[-1][self._filled:self._filled + take] = negatives[start:start + take]
            self._filled += take
            start += take

    @classmethod
    def combined(cls, *pools: PixelPool) -> PooledPixels:
        """Finish several pools as one (blocks shared, not copied); the pools stay usable."""
        finished = [pool.finish(require_classes=False) for pool in pools]
        positives = np.concatenate([f.positives for f in finished])
        weights = np.concatenate([f.weights for f in finished])
        blocks = [b for f in finished for b in f.negative_blocks]
        require_both_classes(positives.size, sum(b.size for b in blocks), "pixels")
        return PooledPixels(blocks, positives, weights)

    def finish(self, require_classes: bool = True) -> PooledPixels:
        """Sort the negative blocks; raises MetricUndefinedError if a class is empty."""
        blocks = self._blocks[:-1] + ([self._blocks[-1][:self._filled]] if self._blocks else [])
        for block in blocks:
            block.sort()
        dtype = self._dtype or np.float32
        positives = np.concatenate(self._positives).astype(dtype, copy=False) if self._positives else np.empty(0)
        weights = np.concatenate(self._weights) if self._weights else np.empty(0)
        if require_classes:
            require_both_classes(positives.size, sum(b.size for b in blocks), "pixels")
        return PooledPixels(blocks, positives, weights)


def _as_scores(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values).ravel()
    if values.dtype.kind != "f":
        values = values.astype(np.float64)
    return values

"""Overlap-vs-FPR curves (PRO, sPRO) and their normalised area up to an FPR limit.

Hand-written because no library offers the exact PRO curve: scikit-learn's curves are for
per-sample labels, not region-weighted overlaps.
"""

from __future__ import annotations

import numpy as np

from ad_pipeline.metrics.pool import PooledPixels


def overlap_curve(pool: PooledPixels) -> tuple[np.ndarray, np.ndarray]:
    """Exact (FPR, overlap) curve with every distinct score as a threshold, ties merged.

    The overlap at threshold t is the weight of positives scoring >= t over the total weight,
    the FPR the fraction of negatives scoring >= t. Between two distinct positive scores
    only the FPR changes (a horizontal segment), so the curve is fully described by two points
    per distinct positive score v: just above v and at v. ``score > t`` (sPRO) and
    ``score >= t`` (PRO) give the same set of points. Returns float64 [2k+2] each, from (0,0)
    to (1,1), overlap clipped to <= 1.
    """
    values, weights = pool.distinct_positives(pool.weights)
    reached = np.cumsum(weights) / weights.sum()
    before = np.concatenate(([0.0], reached[:-1]))
    n_neg = pool.n_negatives
    fpr = np.empty(2 * values.size + 2)
    overlap = np.empty_like(fpr)
    fpr[1:-1:2] = pool.negatives_above(values) / n_neg
    fpr[2:-1:2] = pool.negatives_at_or_above(values) / n_neg
    overlap[1:-1:2] = before
    overlap[2:-1:2] = reached
    fpr[0], overlap[0], fpr[-1], overlap[-1] = 0.0, 0.0, 1.0, 1.0
    return fpr, np.minimum(overlap, 1.0)


def area_under_curve(fpr: np.ndarray, overlap: np.ndarray, limit: float) -> float:
    """Trapezoid area of the curve for FPR <= limit, divided by ``limit`` (perfect = 1.0).

    ``fpr`` must be non-decreasing from 0 to 1. If ``limit`` is not a curve x-value, a strip
    from the last x < limit to ``limit`` is added whose right edge is linearly interpolated
    between the neighbouring points (the official MVTec definition).
    """
    if not 0.0 < limit <= 1.0:
        raise ValueError(f"integration limit must be in (0, 1], got {limit}")
    end = int(np.searchsorted(fpr, limit, side="right"))
    x, y = fpr[:end], overlap[:end]
    area = float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))
    if x[-1] < limit:
        x0, y0, x1, y1 = x[-1], y[-1], fpr[end], overlap[end]
        y_limit = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += 0.5 * (y_limit + y0) * (limit - x0)
    return float(area / limit)

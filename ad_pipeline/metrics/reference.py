"""Slow, literal versions of PRO and sPRO (one full pass over all pixels per threshold).

They follow the written definitions word for word and exist to validate the fast metrics
(tests) and to measure the speed-up (bench). Never use them on real data: time is
O(thresholds x pixels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from ad_pipeline.metrics.spro import Channel, DefectSpec


def literal_pro_curve(masks: np.ndarray, maps: np.ndarray, thresholds: np.ndarray | None = None):
    """(FPR, PRO) at each threshold (default: every distinct score, descending), score >= t."""
    defect = np.asarray(masks) != 0
    regions = []
    for i, mask in enumerate(defect):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labels == k) for k in range(1, n + 1)]
    normal = ~defect
    ts = np.unique(maps)[::-1] if thresholds is None else thresholds
    fpr, pro = [0.0], [0.0]
    for t in ts:
        predicted = maps >= t
        fpr.append(np.count_nonzero(predicted & normal) / np.count_nonzero(normal))
        pro.append(np.mean([np.count_nonzero(predicted[i] & r) / np.count_nonzero(r) for i, r in regions]))
    return np.array(fpr + [1.0]), np.array(pro + [1.0])


def literal_spro_curve(gt_channels: Sequence[Sequence[Channel]], maps: Sequence[np.ndarray],
                       defects: Mapping[int, DefectSpec]):
    """(FPR, mean sPRO) at every distinct score t, positives score > t, FP outside channel unions."""
    ts = np.unique(np.concatenate([np.ravel(m) for m in maps]))[::-1]
    fpr, overlap = [0.0], [0.0]
    n_ok = sum(np.count_nonzero(~_union(ch, m.shape)) for ch, m in zip(gt_channels, maps))
    for t in ts:
        fp, terms = 0, []
        for channels, m in zip(gt_channels, maps):
            predicted = m > t
            fp += np.count_nonzero(predicted & ~_union(channels, m.shape))
            for mask, value in channels:
                sat = defects[value].saturation_area(np.count_nonzero(mask))
                terms.append(min(np.count_nonzero(predicted & mask) / sat, 1.0))
        fpr.append(fp / n_ok)
        overlap.append(np.mean(terms))
    return np.array(fpr + [1.0]), np.array(overlap + [1.0])


def literal_area(fpr: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area up to ``limit`` (the curve point at the limit linearly interpolated) / limit."""
    inside = fpr <= limit
    x, yy = fpr[inside], y[inside]
    if x[-1] < limit:
        after = np.flatnonzero(fpr > limit)[0]
        y_limit = np.interp(limit, [x[-1], fpr[after]], [yy[-1], y[after]])
        x, yy = np.append(x, limit), np.append(yy, y_limit)
    return float(np.trapezoid(yy, x) / limit)


def _union(channels: Sequence[Channel], shape) -> np.ndarray:
    union = np.zeros(shape, dtype=bool)
    for mask, _ in channels:
        union |= np.asarray(mask) != 0
    return union

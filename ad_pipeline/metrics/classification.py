"""Image-level metrics (scikit-learn; ties count 1/2 as in Mann-Whitney)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from ad_pipeline.metrics.validation import binary_labels


def image_auroc(labels, scores) -> float:
    """Area under the ROC curve of per-image scores [N] against labels [N] (1 = anomalous)."""
    y, s = binary_labels(labels, scores)
    return float(roc_auc_score(y, s))


def image_ap(labels, scores) -> float:
    """Average precision, step-wise sum (R_n - R_{n-1}) P_n (not trapezoidal)."""
    y, s = binary_labels(labels, scores)
    return float(average_precision_score(y, s))


def f1_max(labels, scores) -> float:
    """Best F1 = 2PR/(P+R) over all thresholds; points with P = R = 0 are skipped."""
    y, s = binary_labels(labels, scores)
    precision, recall, _ = precision_recall_curve(y, s)
    return best_f1(precision, recall)


def best_f1(precision: np.ndarray, recall: np.ndarray) -> float:
    denom = precision + recall
    valid = denom > 0
    return float(np.max(2 * precision[valid] * recall[valid] / denom[valid]))

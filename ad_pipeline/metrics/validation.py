"""Input checks shared by all metrics: undefined cases and non-finite scores raise, never NaN."""

from __future__ import annotations

import numpy as np


class MetricUndefinedError(ValueError):
    """The metric has no defined value for this input (e.g. only one class present)."""


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise ValueError if ``values`` holds NaN or inf (a metric of garbage is garbage)."""
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise ValueError(f"{what} contain {bad} NaN/inf value(s); fix the method producing them")


def binary_labels(labels: np.ndarray | list, scores: np.ndarray | list) -> tuple[np.ndarray, np.ndarray]:
    """Validate image labels (0/1) and scores of equal length [N]; both classes must be present."""
    y = np.asarray(labels).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.shape[0]} vs {s.shape[0]}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (good) or 1 (anomalous), got values {np.unique(y)[:5].tolist()}")
    check_finite(s, "scores")
    require_both_classes(int(np.count_nonzero(y == 1)), int(np.count_nonzero(y == 0)), "images")
    return y.astype(np.int64), s


def require_both_classes(n_positive: int, n_negative: int, what: str) -> None:
    if n_positive == 0 or n_negative == 0:
        missing = "anomalous" if n_positive == 0 else "normal"
        raise MetricUndefinedError(
            f"metric undefined: no {missing} {what} ({n_positive} anomalous, {n_negative} normal); "
            "both classes are needed"
        )

"""Evaluation metrics: image AUROC/AP/F1-max, pixel AUROC/AP, AUPRO (MVTec AD), sPRO (MVTec LOCO).

All pixel-level metrics are exact (every distinct score is a threshold) and memory-bounded:
see ``pool`` for the shared sorted-negatives scheme. Undefined cases raise
``MetricUndefinedError`` (a ``ValueError``), never NaN.
"""

from ad_pipeline.metrics.classification import f1_max, image_ap, image_auroc
from ad_pipeline.metrics.evaluate import evaluate_category, mean_over_categories
from ad_pipeline.metrics.loco import loco_image_auroc, loco_spro
from ad_pipeline.metrics.pixel import pixel_ap, pixel_auroc, pixel_f1_max
from ad_pipeline.metrics.pro import aupro, pro_curve
from ad_pipeline.metrics.spro import SPRO_LIMITS, DefectSpec, parse_defects_config, spro
from ad_pipeline.metrics.validation import MetricUndefinedError

__all__ = [
    "SPRO_LIMITS", "DefectSpec", "MetricUndefinedError", "aupro", "evaluate_category", "f1_max", "image_ap",
    "image_auroc", "loco_image_auroc", "loco_spro", "mean_over_categories", "parse_defects_config", "pixel_ap",
    "pixel_auroc", "pixel_f1_max", "pro_curve", "spro",
]

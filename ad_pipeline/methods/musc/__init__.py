"""MuSc: zero-shot anomaly classification and segmentation by mutual scoring of unlabeled images."""

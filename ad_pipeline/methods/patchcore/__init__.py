"""PatchCore (Roth et al., CVPR 2022): ``model`` aggregation, ``coreset``, ``knn``, ``method``."""

from ad_pipeline.methods.patchcore.method import PatchCore, PatchCoreConfig

__all__ = ["PatchCore", "PatchCoreConfig"]

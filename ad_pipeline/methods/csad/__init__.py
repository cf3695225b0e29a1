"""CSAD: patch-histogram branch on a component segmentor + LGST, fused with trimmed z-scores."""

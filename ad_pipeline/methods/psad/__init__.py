"""PSAD: part segmentation → histogram, composition and patch memory banks with adaptive scaling."""

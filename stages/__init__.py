"""Thin DVC stages and the ``ad-pipeline`` CLI. All logic lives in ``ad_pipeline``."""

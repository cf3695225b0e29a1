"""ad-pipeline: one reproducible library for industrial visual anomaly detection.

The library is pure Python/torch and knows nothing about DVC or params.yaml; the thin
stage modules in ``stages/`` read params, resolve paths and call into it.
"""

__version__ = "0.1.0"

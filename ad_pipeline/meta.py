"""Run metadata for meta.json: library versions, wall time, peak memory, weights mode."""

from __future__ import annotations

import contextlib
import platform
import resource
import sys
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

_LIBRARIES = ("torch", "torchvision", "timm", "open_clip_torch", "numpy", "scipy", "scikit-learn", "faiss-cpu",
              "onnxruntime", "ad-pipeline")


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


@contextlib.contextmanager
def measured() -> Iterator[dict[str, Any]]:
    """Collect ``wall_s``, ``peak_rss_mb`` (and ``peak_cuda_mb`` on GPU) of the enclosed block."""
    import torch

    info: dict[str, Any] = {}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    try:
        yield info
    finally:
        info["wall_s"] = round(time.perf_counter() - t0, 3)
        info["peak_rss_mb"] = round(peak_rss_mb(), 1)
        if torch.cuda.is_available():
            info["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)

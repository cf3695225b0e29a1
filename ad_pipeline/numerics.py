"""CPU numerics profiles: the environment knobs that make float results machine-independent.

Float results of torch/numpy/faiss depend on the SIMD code path each library picks for the CPU
(vector width changes the order of additions) and on the intra-op thread count (it changes how
reductions are split). A profile fixes both:

* ``portable`` (default): every library capped at the AVX2 (x86-64-v3) code path, MKL on its
  vendor-independent ``COMPATIBLE`` branch (the AVX2 branch is ignored on AMD CPUs: MKL reports
  ``CNR:AUTO``), a fixed thread count. Bit-identical on any CPU with AVX2, whatever its extras
  (AVX-512, VNNI, BF16) or core count. A CPU without AVX2 gets the SSE4 paths (``level: sse4``
  in the record): its results differ within the gate's noise model, not bit for bit.
* ``native``: library defaults (fastest; results depend on the CPU and its core count).

The knobs are read when the libraries load, so :func:`apply` must run before torch, numpy or
faiss is imported, and :func:`pin_threads` after (the ``ad-pipeline`` entry point does both). ``AD_PIPELINE_NUMERICS`` (env)
overrides the params' profile; ``AD_PIPELINE_CPU_LEVEL`` (avx2|sse4) makes the portable profile
treat the CPU as that level, to emulate an older CPU on this one. :func:`record` returns what
took effect, for meta.json.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PROFILE_ENV, LEVEL_ENV = "AD_PIPELINE_NUMERICS", "AD_PIPELINE_CPU_LEVEL"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# The SIMD caps per CPU level (each library's own spelling; verified with torch 2.14.1, oneDNN 3.12,
# MKL 2024.2, numpy 2.4 / OpenBLAS 0.3.31, faiss 1.15: see README "Reproducibility").
LEVEL_KNOBS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "OPENBLAS_CORETYPE": "Haswell",
             "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR", "FAISS_SIMD_LEVEL": "AVX2"},
    "sse4": {"ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41", "OPENBLAS_CORETYPE": "Nehalem",
             "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR", "FAISS_SIMD_LEVEL": "NONE"},
}
COMMON_KNOBS = {"MKL_CBWR": "COMPATIBLE", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
_LOADED = ("torch", "numpy", "faiss")
_SETTINGS: dict = {}  # of the last apply()


class NumericsConfig(BaseModel):
    """params.yaml ``numerics:``. threads: intra-op threads of the portable profile (the same
    number on every machine: results depend on it)."""

    model_config = ConfigDict(extra="forbid")
    profile: Literal["portable", "native"] = "portable"
    threads: int = Field(2, ge=1)


def cpu_level(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """"avx2" when the CPU has AVX2 and FMA (or is not readable as Linux x86), else "sse4"."""
    forced = os.environ.get(LEVEL_ENV)
    if forced:
        if forced not in LEVEL_KNOBS:
            raise ValueError(f"{LEVEL_ENV}={forced!r}: expected one of {sorted(LEVEL_KNOBS)}")
        return forced
    try:
        flags = next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "avx2"
    return "avx2" if {"avx2", "fma"} <= set(flags) else "sse4"


def profile_env(config: NumericsConfig, level: str) -> dict[str, str]:
    """The environment the profile sets ({} for native)."""
    if config.profile == "native":
        return {}
    return LEVEL_KNOBS[level] | COMMON_KNOBS | dict.fromkeys(THREAD_VARS, str(config.threads))


def apply(config: NumericsConfig) -> dict:
    """Set the profile's knobs in ``os.environ`` and return the settings: {profile, level, threads,
    env, replaced: {var: the caller's value it overrode}, late: libraries already loaded}.
    With ``late`` non-empty (an in-process caller, e.g. tests) nothing is set: the knobs are only
    read when a library loads."""
    profile = os.environ.get(PROFILE_ENV, config.profile)
    config = NumericsConfig(profile=profile, threads=config.threads)
    level = cpu_level()
    env = profile_env(config, level)
    late = [m for m in _LOADED if m in sys.modules]
    replaced = {k: os.environ[k] for k, v in env.items() if os.environ.get(k, v) != v}
    if not late:
        os.environ.update(env)
    _SETTINGS.clear()
    _SETTINGS.update(profile=config.profile, level=level if env else "native",
                     threads=config.threads if env else None, env=env, replaced=replaced, late=late)
    return dict(_SETTINGS)


def pin_threads() -> None:
    """torch.set_num_threads(threads) of the last :func:`apply` (the env alone is capped at the core
    count by torch, which would make the count, hence the results, machine-dependent)."""
    if _SETTINGS.get("threads") and not _SETTINGS["late"]:
        import torch

        torch.set_num_threads(_SETTINGS["threads"])


def record() -> dict:
    """What took effect, for meta.json: the settings of :func:`apply` (profile "unset" without
    it) plus torch's CPU capability and intra-op threads and the CPU model."""
    import torch

    return {**(_SETTINGS or {"profile": "unset"}), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(), "cpu": _cpu_model()}


def _cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        import platform

        return platform.processor() or platform.machine()

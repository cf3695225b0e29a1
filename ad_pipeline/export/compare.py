"""Run an exported model (or the PyTorch graph) over images and measure it against PyTorch."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ad_pipeline.export.formats import Runner
from ad_pipeline.export.inference import Geometry


class ParityError(RuntimeError):
    """An exported model's outputs differ from the PyTorch graph's by more than the tolerance."""


def torch_runner(module: nn.Module) -> Runner:
    """The PyTorch graph as a ``Runner`` (eval mode, no grad)."""
    module = module.eval()

    @torch.no_grad()
    def run(*xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        amap, score = module(*(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) for x in xs))
        return amap.numpy(), score.numpy()

    return run


def run_images(runner: Runner, paths: Sequence[Path], resize: int | None = None, crop: int | None = None,
               batch_size: int = 8, *, inputs: Sequence[Geometry] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(maps float32 [N,h,w], scores float32 [N]) of ``paths`` loaded as ``load_inputs(paths,
    resize, crop)`` (or one input per ``Geometry`` of ``inputs``), ``batch_size`` images at a time."""
    inputs = tuple(inputs) or (Geometry(resize, crop),)
    maps, scores = [], []
    for i in range(0, len(paths), batch_size):
        amap, score = runner(*(g.load(paths[i:i + batch_size]).numpy() for g in inputs))
        maps.append(np.asarray(amap, np.float32))
        scores.append(np.asarray(score, np.float32).reshape(-1))
    return np.concatenate(maps), np.concatenate(scores)


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| in float64; ValueError on a shape mismatch."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)), initial=0.0))


def max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """max |a − b| / max(1, max |b|): the absolute difference for values of order 1, relative to
    the reference's scale above (float32 holds ~7 digits: PatchCore's squared distances of ~5e4
    differ by ~0.05 between runtimes, 1e-6 of their scale)."""
    return max_abs_diff(a, b) / max(1.0, float(np.max(np.abs(b), initial=0.0)))


def check_parity(runner: Runner, reference: Runner, x: np.ndarray | tuple[np.ndarray, ...],
                 atol: float = 1e-4) -> float:
    """Max |runner − reference| over both outputs for input ``x`` (a tuple: one array per graph
    input); ParityError above ``atol``."""
    xs = x if isinstance(x, tuple) else (x,)
    got, want = runner(*xs), reference(*xs)
    diff = max(max_abs_diff(np.asarray(g), np.asarray(w)) for g, w in zip(got, want))
    if not diff <= atol:
        raise ParityError(f"exported outputs differ from PyTorch by {diff:.3g} > atol {atol:g}")
    return diff


def latency_ms(runner: Runner, size: int | Sequence[int], runs: int = 10, seed: int = 0) -> float:
    """Mean wall time of one [1,3,S,S] image in ms (one such input per side S in ``size``), after one warm-up run."""
    rng = np.random.default_rng(seed)
    xs = [rng.random((1, 3, s, s), dtype=np.float32) for s in ([size] if isinstance(size, int) else size)]
    runner(*xs)
    t0 = time.perf_counter()
    for _ in range(runs):
        runner(*xs)
    return 1000 * (time.perf_counter() - t0) / runs

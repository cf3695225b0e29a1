"""Vectorised 2-D shapes as signed distance fields on a pixel grid.

Every shape function returns a float32 signed distance ``[H,W]`` in pixels (negative inside),
so callers get anti-aliased coverage (:func:`coverage`), shaded rims (:func:`rim_shading`) and
unions/differences (``np.minimum`` / ``np.maximum``) from one representation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """Pixel-centre coordinates of an image: ``x``, ``y`` float32 [H,W]."""

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def of(cls, height: int, width: int) -> Grid:
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        return cls(x, y)

    def crop(self, win: tuple[slice, slice]) -> Grid:
        return Grid(self.x[win], self.y[win])

    @property
    def shape(self) -> tuple[int, int]:
        return self.x.shape


def coverage(sd: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage in [0,1] of a signed distance field (1 px soft edge)."""
    return np.clip(0.5 - sd, 0.0, 1.0)


def rim_shading(sd: np.ndarray, depth: float = 5.0, dark: float = 0.25) -> np.ndarray:
    """Brightness factor [H,W]: ``1 - dark`` at the outline rising to 1 ``depth`` px inside."""
    return 1.0 - dark + dark * np.clip(-sd / depth, 0.0, 1.0)


def disc(g: Grid, cx: float, cy: float, r: float) -> np.ndarray:
    return np.hypot(g.x - cx, g.y - cy) - r


def ring(g: Grid, cx: float, cy: float, r: float, r_inner: float) -> np.ndarray:
    d = np.hypot(g.x - cx, g.y - cy)
    return np.maximum(d - r, r_inner - d)


def box(g: Grid, cx: float, cy: float, w: float, h: float, angle: float = 0.0, radius: float = 0.0) -> np.ndarray:
    """Rounded rectangle of size ``w``×``h`` whose ``w`` axis points along (cos angle, sin angle)."""
    c, s = np.cos(np.deg2rad(angle)), np.sin(np.deg2rad(angle))
    dx, dy = g.x - cx, g.y - cy
    u = np.abs(c * dx + s * dy) - (w / 2 - radius)
    v = np.abs(-s * dx + c * dy) - (h / 2 - radius)
    outside = np.hypot(np.maximum(u, 0), np.maximum(v, 0))
    return outside + np.minimum(np.maximum(u, v), 0) - radius


def polyline(g: Grid, points: np.ndarray, width: float) -> np.ndarray:
    """Stroke of ``width`` px along ``points`` [N,2] (x, y).

    Loops over the N-1 segments (not pixels), keeping a running minimum distance; memory
    is a few [H,W] float32 buffers.
    """
    points = np.asarray(points, dtype=np.float32)
    best = np.full(g.shape, np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in zip(points[:-1], points[1:]):
        ex, ey = bx - ax, by - ay
        t = np.clip(((g.x - ax) * ex + (g.y - ay) * ey) / max(ex * ex + ey * ey, 1e-6), 0.0, 1.0)
        np.minimum(best, np.hypot(g.x - ax - t * ex, g.y - ay - t * ey), out=best)
    return best - width / 2


def blob(g: Grid, cx: float, cy: float, r: float, wobble: np.ndarray) -> np.ndarray:
    """Irregular disc whose radius is ``r·(1 + Σ_k a_k cos(kθ + φ_k))``, k = 2, 3, …

    ``wobble`` [K,2] holds (a_k, φ_k); see :func:`random_wobble`.
    """
    dx, dy = g.x - cx, g.y - cy
    theta = np.arctan2(dy, dx)
    k = np.arange(2, 2 + len(wobble), dtype=np.float32)[:, None, None]
    radius = r * (1.0 + np.sum(wobble[:, :1, None] * np.cos(k * theta + wobble[:, 1:, None]), axis=0))
    return np.hypot(dx, dy) - radius


def random_wobble(rng: np.random.Generator, harmonics: int = 4, strength: float = 0.18) -> np.ndarray:
    """(amplitude, phase) pairs [K,2] for :func:`blob`; amplitudes fall off as 1/k."""
    amp = rng.uniform(0.3, 1.0, harmonics) * strength / np.arange(1, harmonics + 1)
    return np.stack([amp, rng.uniform(0, 2 * np.pi, harmonics)], axis=1).astype(np.float32)


def wavy_path(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, bend: float, n: int = 12) -> np.ndarray:
    """Points [n,2] from ``start`` to ``end`` bowed sideways by up to ``bend`` px (smooth curve)."""
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    direction = end - start
    normal = np.array([-direction[1], direction[0]], dtype=np.float32) / max(float(np.hypot(*direction)), 1e-6)
    sway = bend * rng.uniform(-1, 1) * np.sin(np.pi * t) + 0.3 * bend * rng.uniform(-1, 1) * np.sin(2 * np.pi * t)
    return (start + t * direction + sway * normal).astype(np.float32)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Band-limited noise [H,W] float32, roughly zero mean and unit std, features ~``cell`` px.

    A coarse Gaussian grid upsampled by cubic splines; the (separable, linear) upsampling is
    two small cached matrix products instead of a full ``scipy.ndimage.zoom`` per image.
    """
    gh, gw = int(np.ceil(height / cell)) + 3, int(np.ceil(width / cell)) + 3
    coarse = rng.standard_normal((gh, gw)).astype(np.float32)
    # einsum (not BLAS) keeps the summation order fixed, hence bit-identical output everywhere.
    rows = np.einsum("hi,ij->hj", _upsampler(gh, cell, height), coarse)
    fine = np.einsum("hj,wj->hw", rows, _upsampler(gw, cell, width))
    return (fine - fine.mean()) / max(float(fine.std()), 1e-6)


@functools.lru_cache(maxsize=64)
def _upsampler(n: int, cell: float, out: int) -> np.ndarray:
    """[out, n] matrix: cubic-spline zoom of a length-``n`` signal by ``cell``, minus the clamped border."""
    zoomed = ndimage.zoom(np.eye(n, dtype=np.float64), (cell, 1), order=3, mode="nearest", grid_mode=True)
    skip = int(round(cell))
    return zoomed[skip: skip + out].astype(np.float32)

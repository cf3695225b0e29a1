"""Anomaly maps of EfficientAD: raw maps, validation-quantile normalisation, combination,
border padding and resize to the working resolution.

Raw maps (both [B,1,h,w]): M_ST = mean_c (T̂ − S_local)², M_AE = mean_c (A − S_global)².
Normalised: M̃ = 0.1·(M − q_a)/(q_b − q_a) with q_a, q_b the 0.9 / 0.995 quantiles of all
validation-map pixels, so q_a → 0 and q_b → 0.1. Combined: 0.5·M̃_ST + 0.5·M̃_AE (LGST: the sum).
Normalisation is affine and the resize linear, so normalising before or after the resize is the
same map; what differs between the rules below is the padding and where the quantiles come from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

Q_LOW, Q_HIGH = 0.9, 0.995
MIN_QUANTILE_GAP = 1e-6
MAP_BORDER = 4  # unpadded PDN output pixel (i, j) sits 4 feature pixels in from the image border
# Map rules (``EfficientADConfig.map_rule``): border padded before the resize, and whether the
# quantiles are taken on the raw PDN-resolution maps or on the resized ones.
#   nelson (the paper's / nelson1425's): pad 4, quantiles on raw maps;
#   puad (LeapMind/PUAD's code): no padding, quantiles on the resized maps.
MAP_BORDERS = {"nelson": MAP_BORDER, "puad": 0}


@dataclass(frozen=True)
class MapQuantiles:
    """q_a / q_b of the ST and AE raw maps; (0, 0.1) means 'not normalised' (identity)."""

    st_a: float = 0.0
    st_b: float = 0.1
    ae_a: float = 0.0
    ae_b: float = 0.1

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.st_a, self.st_b, self.ae_a, self.ae_b], dtype=torch.float32)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> MapQuantiles:
        return cls(*(float(v) for v in t.tolist()))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def raw_maps(t_hat: torch.Tensor, student: torch.Tensor, ae: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """T̂ [B,C,h,w], S [B,2C,h,w], A [B,C,h,w] → (M_ST, M_AE), each [B,1,h,w]."""
    c = t_hat.shape[1]
    m_st = (t_hat - student[:, :c]).pow(2).mean(dim=1, keepdim=True)
    m_ae = (ae - student[:, c:]).pow(2).mean(dim=1, keepdim=True)
    return m_st, m_ae


def normalise_map(m: torch.Tensor, q_a: torch.Tensor | float, q_b: torch.Tensor | float) -> torch.Tensor:
    """0.1·(m − q_a)/(q_b − q_a): q_a → 0, q_b → 0.1."""
    return 0.1 * (m - q_a) / (q_b - q_a)


def combine_maps(m_st: torch.Tensor, m_ae: torch.Tensor) -> torch.Tensor:
    return 0.5 * m_st + 0.5 * m_ae


def to_working_resolution(m: torch.Tensor, size: int, border: int = MAP_BORDER) -> torch.Tensor:
    """[B,1,h,w] → pad ``border`` zeros each side → bilinear resize to [B,1,size,size]."""
    if border:
        m = F.pad(m, (border,) * 4)
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)


def map_quantiles(pixels: np.ndarray, cap: int, seed: int) -> tuple[float, float, bool]:
    """(q_a, q_b, degenerate) over all ``pixels`` (any shape).

    numpy's quantile has no element limit (torch.quantile stops at 2^24); above ``cap``
    pixels a seeded random subset of ``cap`` is used to bound time and memory. When
    q_b − q_a < 1e-6 the normalisation is skipped: (0, 0.1), the identity, with a warning.
    """
    flat = np.asarray(pixels, dtype=np.float64).ravel()
    if flat.size == 0:
        raise ValueError("no validation map pixels to take quantiles of")
    if flat.size > cap:
        flat = np.random.default_rng(seed).choice(flat, size=cap, replace=False)
    q_a, q_b = np.quantile(flat, [Q_LOW, Q_HIGH])
    if q_b - q_a < MIN_QUANTILE_GAP:
        log.warning("validation map quantiles are degenerate (q_b − q_a = %.3g < %g): map normalisation skipped",
                    q_b - q_a, MIN_QUANTILE_GAP)
        return 0.0, 0.1, True
    return float(q_a), float(q_b), False


def fit_quantiles(maps: Iterable[tuple[torch.Tensor, torch.Tensor]], cap: int,
                  seed: int) -> tuple[MapQuantiles, dict[str, bool]]:
    """:func:`map_quantiles` of all validation (M_ST, M_AE) batches, each [b,1,h,w] → (quantiles,
    which kind was degenerate: {"st", "ae"}). Memory: every map pixel, once, as float32."""
    st, ae = [], []
    for m_st, m_ae in maps:
        st.append(m_st.cpu().numpy())
        ae.append(m_ae.cpu().numpy())
    st_a, st_b, st_bad = map_quantiles(np.concatenate(st), cap, seed)
    ae_a, ae_b, ae_bad = map_quantiles(np.concatenate(ae), cap, seed)
    return MapQuantiles(st_a, st_b, ae_a, ae_b), {"st": st_bad, "ae": ae_bad}

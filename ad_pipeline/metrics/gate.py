"""Regression gate for metrics JSON files: fail when a metric drops by more than its noise.

``dvc metrics diff`` shows changes but has no tolerance and always exits 0, hence this.
All metrics are taken as higher-is-better (AUROC, AP, F1, AUPRO, sPRO). Metrics are compared
by their flattened names ("synthetic_ad.uniad.image_auroc"), so any nesting of the file works.

The noise model (``metrics_noise.json``, written with the baseline by ``ad-pipeline
baseline-noise``) gives each metric

    tolerance = max(k * spread, quantum, resolution)

spread: max - min of the metric over runs with different seeds (the baseline's and others);
quantum: the largest change one rank swap of one test image pair can make (:func:`image_quanta`);
resolution: the reports' precision (0.01 %). A metric of the baseline that the noise model lacks
fails the gate ("NO NOISE MODEL"): regenerate the noise file with the baseline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

OK, IMPROVED, NEW, DROPPED, MISSING, NOT_FINITE, NO_NOISE = (
    "ok", "improved", "new", "DROPPED", "MISSING", "NOT FINITE", "NO NOISE MODEL")
FAILING = (DROPPED, MISSING, NOT_FINITE, NO_NOISE)
K_DEFAULT = 2.0
RESOLUTION = 1e-4


@dataclass(frozen=True)
class MetricChange:
    name: str
    before: float | None
    after: float | None
    status: str
    tolerance: float | None = None

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before


@dataclass(frozen=True)
class NoiseModel:
    """Per-metric ``quantum`` and ``spread`` (flattened names) and the factor ``k``."""

    quantum: Mapping[str, float]
    spread: Mapping[str, float]
    k: float = K_DEFAULT
    resolution: float = RESOLUTION

    def tolerance(self, name: str) -> float | None:
        """max(k * spread, quantum, resolution); None when the metric has no entry."""
        if name not in self.spread:
            return None
        return max(self.k * self.spread[name], self.quantum.get(name, 0.0), self.resolution)

    @classmethod
    def from_json(cls, obj: Mapping) -> NoiseModel:
        """Read the ``metrics_noise.json`` layout: {"k", "resolution", "metrics": {name: {quantum, spread}}}."""
        metrics = obj["metrics"]
        return cls(quantum={n: float(m["quantum"]) for n, m in metrics.items()},
                   spread={n: float(m["spread"]) for n, m in metrics.items()},
                   k=float(obj["k"]), resolution=float(obj.get("resolution", RESOLUTION)))

    def to_json(self, values: Mapping[str, Iterable[float]], **info) -> dict:
        """The file layout, with each metric's per-seed ``values`` and resulting ``tolerance``."""
        return {**info, "rule": "tolerance = max(k * spread, quantum, resolution)", "k": self.k,
                "resolution": self.resolution,
                "metrics": {n: {"quantum": self.quantum.get(n, 0.0), "spread": self.spread[n],
                                "tolerance": self.tolerance(n), "values": list(values[n])} for n in self.spread}}


def flatten_metrics(obj, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of nested dicts/lists as {"a.b.0": value}; strings and booleans are ignored."""
    if isinstance(obj, Mapping):
        items = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return {prefix: float(obj)}
    else:
        return {}
    flat: dict[str, float] = {}
    for key, value in items:
        flat |= flatten_metrics(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def compare_metrics(baseline: Mapping, current: Mapping, noise: NoiseModel | float) -> list[MetricChange]:
    """One MetricChange per metric of either file, in baseline order then new metrics.
    ``noise``: the noise model, or one absolute tolerance for every metric."""
    before, after = flatten_metrics(baseline), flatten_metrics(current)
    changes = []
    for name in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(name), after.get(name)
        tol = noise if isinstance(noise, (int, float)) else noise.tolerance(name)
        if new is None:
            status = MISSING
        elif not math.isfinite(new):
            status = NOT_FINITE
        elif old is None:
            status = NEW
        elif tol is None:
            status = NO_NOISE
        elif new < old - tol:
            status = DROPPED
        else:
            status = IMPROVED if new > old + tol else OK
        changes.append(MetricChange(name, old, new, status, tol))
    return changes


def image_quanta(label_counts: Iterable[tuple[int, int]]) -> dict[str, float]:
    """The largest change of the category mean of each image metric that one swap of two
    adjacent-ranked images (one anomalous, one good) in one category can make.

    label_counts: (n_anomalous, n_good) per category. Per category, AUROC moves by exactly
    1/(P*N); step-wise AP by at most 1/(2P) (the first two ranks); F1-max by at most 1/P (a
    true positive traded for a false positive at the best threshold). The mean over C
    categories divides by C. Pixel and region metrics (millions of pixels) have no such step.
    """
    counts = list(label_counts)
    if not counts or any(p < 1 or n < 1 for p, n in counts):
        raise ValueError(f"every category needs anomalous and good test images, got counts {counts}")
    c = len(counts)
    return {"image_auroc": max(1 / (p * n) for p, n in counts) / c,
            "image_ap": max(1 / (2 * p) for p, _ in counts) / c,
            "image_f1_max": max(1 / p for p, _ in counts) / c}


def format_table(changes: list[MetricChange]) -> str:
    """Plain-text table: metric, before, after, delta, tolerance, status."""
    def num(v: float | None, sign: str = "") -> str:
        return "-" if v is None else f"{v:{sign}.4f}"

    width = max([len("metric"), *(len(c.name) for c in changes)])
    lines = [f"{'metric':<{width}}  {'before':>8}  {'after':>8}  {'delta':>8}  {'tol':>7}  status"]
    lines += [f"{c.name:<{width}}  {num(c.before):>8}  {num(c.after):>8}  {num(c.delta, '+'):>8}  "
              f"{num(c.tolerance):>7}  {c.status}" for c in changes]
    return "\n".join(lines)

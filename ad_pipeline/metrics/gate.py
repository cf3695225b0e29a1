"""Regression gate for metrics JSON files: fail when a metric drops by more than a tolerance.

``dvc metrics diff`` shows changes but has no tolerance and always exits 0, hence this.
All metrics are taken as higher-is-better (AUROC, AP, F1, AUPRO, sPRO).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

OK, IMPROVED, NEW, DROPPED, MISSING, NOT_FINITE = "ok", "improved", "new", "DROPPED", "MISSING", "NOT FINITE"
FAILING = (DROPPED, MISSING, NOT_FINITE)


@dataclass(frozen=True)
class MetricChange:
    name: str
    before: float | None
    after: float | None
    status: str

    @property
    def delta(self) -> float | None:
        return None if self.before is None or self.after is None else self.after - self.before


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


def compare_metrics(baseline: Mapping, current: Mapping, tolerance: float = 0.005) -> list[MetricChange]:
    """One MetricChange per metric of either file, in baseline order then new metrics."""
    before, after = flatten_metrics(baseline), flatten_metrics(current)
    changes = []
    for name in [*before, *(k for k in after if k not in before)]:
        old, new = before.get(name), after.get(name)
        if new is None:
            status = MISSING
        elif not math.isfinite(new):
            status = NOT_FINITE
        elif old is None:
            status = NEW
        elif new < old - tolerance:
            status = DROPPED
        else:
            status = IMPROVED if new > old + tolerance else OK
        changes.append(MetricChange(name, old, new, status))
    return changes


def format_table(changes: list[MetricChange]) -> str:
    """Plain-text table: metric, before, after, delta, status."""
    def num(v: float | None, sign: str = "") -> str:
        return "-" if v is None else f"{v:{sign}.4f}"

    width = max([len("metric"), *(len(c.name) for c in changes)])
    lines = [f"{'metric':<{width}}  {'before':>8}  {'after':>8}  {'delta':>8}  status"]
    lines += [f"{c.name:<{width}}  {num(c.before):>8}  {num(c.after):>8}  {num(c.delta, '+'):>8}  {c.status}"
              for c in changes]
    return "\n".join(lines)

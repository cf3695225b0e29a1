"""Benchmark of the exact pixel metrics: AUPRO (100 maps at 256² and 900²) and LOCO-sized sPRO.

    python bench/metrics.py [--quick]

Each case runs in a fresh subprocess; it reports wall seconds of the metric call and its
peak memory: the RSS high-water mark above the level after the inputs were built, and the
tracemalloc peak (numpy reports its buffers to tracemalloc). The literal reference (one pass
over all pixels per threshold) is timed on a few thresholds of the small case and
extrapolated to all distinct thresholds. Writes bench/results/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results" / "metrics.json"
REFERENCE_THRESHOLDS = 5
# published cost of MVTec's evaluators on the same sizes (see the issue)
OFFICIAL = {"aupro_900": "35.6 s, 3.2 GB (MVTec AD evaluator)", "spro_loco": "~45 s per 100 thresholds (LOCO evaluator)"}


def _blob_masks(rng: np.random.Generator, n: int, size: int, defective_fraction: float = 0.6) -> np.ndarray:
    """uint8 [n,size,size]: random rectangles (1-3 per defective image)."""
    masks = np.zeros((n, size, size), np.uint8)
    for i in np.flatnonzero(rng.random(n) < defective_fraction):
        for _ in range(rng.integers(1, 4)):
            h, w = rng.integers(size // 50 + 1, size // 6, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            masks[i, y:y + h, x:x + w] = 1
    return masks


def _aupro_inputs(n: int, size: int):
    rng = np.random.default_rng(0)
    masks = _blob_masks(rng, n, size)
    maps = rng.random((n, size, size), dtype=np.float32)
    maps += masks * np.float32(0.3)  # defects score higher on average
    return masks, maps


def _loco_inputs(n: int, size: int):
    """Lazy per-image channels and maps (generated on the fly, so only the metric holds memory)."""
    from ad_pipeline.metrics.spro import DefectSpec

    defects = {1: DefectSpec("abs", 1, 2000, False), 2: DefectSpec("rel", 2, 0.5, True),
               3: DefectSpec("whole", 3, 1.0, True)}

    def items():
        rng = np.random.default_rng(0)
        for i in range(n):
            score_map = rng.random((size, size), dtype=np.float32)
            channels = []
            if i % 3:  # two thirds defective, ~1.3 channels each -> ~260 channels at n=300
                for c in range(1 + (i % 5 == 0)):
                    mask = np.zeros((size, size), bool)
                    h, w = rng.integers(20, size // 4, 2)
                    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
                    mask[y:y + h, x:x + w] = True
                    score_map[mask] += 0.3
                    channels.append((mask, 1 + (i + c) % 3))
            yield channels, score_map

    return items, defects


def run_case(name: str, n: int, size: int) -> dict:
    from ad_pipeline.metrics import aupro, spro

    if name.startswith("aupro"):
        masks, maps = _aupro_inputs(n, size)
        call = lambda: aupro(masks, maps, 0.3)  # noqa: E731
        channels = None
    else:
        items, defects = _loco_inputs(n, size)
        channels = sum(len(c) for c, _ in items())
        call = lambda: spro((c for c, _ in items()), (m for _, m in items()), defects)["0.05"]  # noqa: E731
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    start = time.perf_counter()
    value = call()
    seconds = time.perf_counter() - start
    traced_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"case": name, "maps": n, "size": size, "channels": channels, "value": value, "seconds": seconds,
            "rss_delta_mb": (rss_peak - rss_before) / 1024, "traced_peak_mb": traced_peak / 2**20}


def run_reference(n: int, size: int) -> dict:
    """Literal threshold loop on a few thresholds of the small case, extrapolated to all."""
    from ad_pipeline.metrics.reference import literal_pro_curve

    masks, maps = _aupro_inputs(n, size)
    distinct = np.unique(maps)
    thresholds = distinct[:: max(1, distinct.size // REFERENCE_THRESHOLDS)][:REFERENCE_THRESHOLDS]
    start = time.perf_counter()
    literal_pro_curve(masks, maps, thresholds=thresholds)
    per_threshold = (time.perf_counter() - start) / thresholds.size
    return {"case": "aupro_literal", "maps": n, "size": size, "seconds_per_threshold": per_threshold,
            "distinct_thresholds": int(distinct.size), "seconds_extrapolated": per_threshold * distinct.size}


def _in_subprocess(kind: str, name: str, n: int, size: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, name, str(n), str(size)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases (a few seconds)")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, name, n, size = args.child
        result = run_reference(int(n), int(size)) if kind == "reference" else run_case(name, int(n), int(size))
        print(json.dumps(result))
        return
    scale = 5 if args.quick else 1
    cases = [("aupro_256", 100 // scale, 256), ("aupro_900", 100 // scale, 900), ("spro_loco", 300 // scale, 800)]
    rows = [_in_subprocess("case", name, n, size) for name, n, size in cases]
    reference = _in_subprocess("reference", "aupro_literal", 100 // scale, 256)
    print(f"{'case':<11} {'maps':>5} {'size':>5} {'channels':>8} {'seconds':>8} {'RSS Δ MB':>9} {'traced MB':>9}  official")
    for r in rows:
        print(f"{r['case']:<11} {r['maps']:>5} {r['size']:>5} {r['channels'] or '-':>8} {r['seconds']:>8.2f} "
              f"{r['rss_delta_mb']:>9.0f} {r['traced_peak_mb']:>9.0f}  {OFFICIAL.get(r['case'], '')}")
    speedup = reference["seconds_extrapolated"] / rows[0]["seconds"]
    print(f"literal reference, {reference['maps']}x{reference['size']}²: {reference['seconds_per_threshold']:.3f} s "
          f"per threshold x {reference['distinct_thresholds']} thresholds = {reference['seconds_extrapolated']:.0f} s "
          f"(fast: {rows[0]['seconds']:.2f} s, {speedup:.0f}x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"quick": args.quick, "cases": rows, "reference": reference,
                                   "speedup_vs_literal": speedup}, indent=2) + "\n")


if __name__ == "__main__":
    main()

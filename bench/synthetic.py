"""Benchmark: time to generate the synthetic datasets (target: whole generation < 30 s on one core).

    python bench/synthetic.py [--quick]

Prints per-dataset wall and CPU seconds and writes ``bench/results/synthetic.json``. CPU time
(``process_time``) is reported next to wall time because the benchmark machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from ad_pipeline.data.synthetic import ad, extras, generate_all, loco

TARGET_S = 30.0


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition instead of three")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    rows: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        parts = {f"synthetic_ad/{c.name}": (lambda c=c: ad.write_category(out / "ad", args.seed, c)) for c in ad.CATEGORIES}
        parts |= {f"synthetic_loco/{c.name}": (lambda c=c: loco.write_category(out / "loco", args.seed, c))
                  for c in loco.CATEGORIES}
        parts |= {"visa_raw": lambda: extras.write_visa(out / "visa", args.seed),
                  "btad_like": lambda: extras.write_btad(out / "btad", args.seed),
                  "generic_images": lambda: extras.write_generic(out / "generic", args.seed)}
        for name, fn in parts.items():
            rows[name] = min((timed(fn) for _ in range(repeats)), key=lambda t: t[1])
        rows["generate_all"] = min((timed(lambda: generate_all(out / "all", args.seed, progress=False))
                                    for _ in range(repeats)), key=lambda t: t[1])
        n_files = sum(1 for p in (out / "all").rglob("*") if p.is_file())
        n_bytes = sum(p.stat().st_size for p in (out / "all").rglob("*") if p.is_file())
    print(f"{'part':28s} {'wall s':>8s} {'cpu s':>8s}")
    for name, (wall, cpu) in rows.items():
        print(f"{name:28s} {wall:8.2f} {cpu:8.2f}")
    cpu_total = rows["generate_all"][1]
    print(f"files {n_files}, {n_bytes / 2**20:.1f} MiB; target cpu < {TARGET_S:.0f} s: {'OK' if cpu_total < TARGET_S else 'MISSED'}")
    result = {"repeats": repeats, "seed": args.seed, "target_cpu_s": TARGET_S, "met": cpu_total < TARGET_S,
              "files": n_files, "bytes": n_bytes,
              "timings": {k: {"wall_s": round(w, 3), "cpu_s": round(c, 3)} for k, (w, c) in rows.items()}}
    out_path = Path(__file__).parent / "results" / "synthetic.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

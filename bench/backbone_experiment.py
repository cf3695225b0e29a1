"""Cost of the design card's experiment `dvc exp run -S backbone=dinov2_vitl14` on the synthetic
suite: ms per image of the backbone forward at PatchCore's synthetic resolution (random init
offline), against the default efficientnet_lite0, and the extrapolated backbone time of the
stages that re-run (patchcore@ on every dataset it lists, which PSAD reuses through its dumps):
on the loaded shared machine (wall) and on an idle one (CPU time / threads).

    python bench/backbone_experiment.py [--images N] [--threads T]

Images per run: the train + validation + test images of the datasets `patchcore.datasets`
lists (read from artifacts/<dataset>/manifest, else --images). Prints a table and writes
bench/results/backbone_experiment.json. Shared machine: the numbers are upper bounds.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import yaml

from ad_pipeline.backbones import build_backbone

RESULTS = Path(__file__).parent / "results" / "backbone_experiment.json"


def images_per_run(default: int) -> int:
    params = yaml.safe_load(Path("params.yaml").read_text())
    total = 0
    for ds in params["patchcore"]["datasets"]:
        for path in Path(f"artifacts/{ds}/manifest").glob("*.json"):
            if path.name != "index.json":
                total += sum(json.loads(path.read_text())["counts"].values())
    return total or default


def ms_per_image(name: str, size: int, batch: int, repeats: int) -> tuple[float, float]:
    """(wall, CPU) ms per image; CPU time / threads is what an idle machine would take."""
    bb = build_backbone(name, pretrained="false", seed=0).eval()
    layers = list(bb.spec.default_layers)
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        bb(x, layers)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            bb(x, layers)
    n = repeats * batch
    return 1000 * (time.perf_counter() - t0) / n, 1000 * (time.process_time() - c0) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=340)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = images_per_run(args.images)
    rows = []
    for name in ("efficientnet_lite0", "dinov2_vitl14"):
        wall, cpu = ms_per_image(name, args.size, 8, args.repeats)
        idle = cpu / args.threads
        rows.append({"backbone": name, "wall_ms_per_image": round(wall, 1), "cpu_ms_per_image": round(cpu, 1),
                     "images": n, "wall_minutes_per_run": round(wall * n / 60000, 1),
                     "idle_minutes_per_run": round(idle * n / 60000, 1)})
    print(f"{'backbone':<20} {'wall ms/img':>11} {'CPU ms/img':>10} {'images':>7} {'wall min':>8} {'idle min':>8}")
    for r in rows:
        print(f"{r['backbone']:<20} {r['wall_ms_per_image']:>11} {r['cpu_ms_per_image']:>10} {r['images']:>7} "
              f"{r['wall_minutes_per_run']:>8} {r['idle_minutes_per_run']:>8}")
    RESULTS.write_text(json.dumps({"threads": args.threads, "size": args.size, "machine": platform.processor(),
                                   "cpus": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

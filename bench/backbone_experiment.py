"""Cost of the design card's experiment `dvc exp run -S backbone=dinov2_vitl14` on the synthetic
suite: ms per image of the backbone forward at PatchCore's synthetic resolution (random init
offline), against the default efficientnet_lite0, and the extrapolated backbone time of the
stages that re-run (patchcore@ on every dataset it lists, which PSAD reuses through its dumps).

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


def ms_per_image(name: str, size: int, batch: int, repeats: int) -> float:
    bb = build_backbone(name, pretrained="false", seed=0).eval()
    layers = list(bb.spec.default_layers)
    x = torch.randn(batch, 3, size, size)
    with torch.inference_mode():
        bb(x, layers)
        t0 = time.perf_counter()
        for _ in range(repeats):
            bb(x, layers)
    return 1000 * (time.perf_counter() - t0) / (repeats * batch)


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
        ms = ms_per_image(name, args.size, 8, args.repeats)
        rows.append({"backbone": name, "ms_per_image": round(ms, 1), "images": n,
                     "backbone_minutes_per_run": round(ms * n / 60000, 1)})
    print(f"{'backbone':<20} {'ms/image':>9} {'images':>7} {'min/run':>8}")
    for r in rows:
        print(f"{r['backbone']:<20} {r['ms_per_image']:>9} {r['images']:>7} {r['backbone_minutes_per_run']:>8}")
    RESULTS.write_text(json.dumps({"threads": args.threads, "size": args.size, "machine": platform.processor(),
                                   "cpus": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Benchmark of MuSc: ours (symmetric chunked MSM) vs the literal per-pair implementation.

    python bench/musc.py [--quick] [--threads T] [--points 16,64,256,518]

Points: ViT-B-16 at 224 with N = 16, 64, 256 images and ViT-L-14-336 at 518 with N = 8; both
backbones with seeded RANDOM-INIT weights (no pretrained weights offline; the cost is the same).
Images are random-noise PNGs. Both implementations run in this process on the same images: ours is
``MuSc.score`` end to end; the literal one is the same one-pass feature extraction followed by
unfold LNAMD, one torch.cdist per image pair, explicit sort, RsCIN with an explicit degree
matrix (tests/musc_reference.py) and the same upsampling. The literal one is skipped where it
would take too long (N = 256, 518). Peak memory is the sampled RSS high-water mark above the RSS
just before the run. Writes bench/results/musc.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from musc_reference import musc_reference, rscin_reference  # noqa: E402

from ad_pipeline.backbones import build_backbone  # noqa: E402
from ad_pipeline.backbones.features import load_images  # noqa: E402
from ad_pipeline.methods.base import RunContext  # noqa: E402
from ad_pipeline.methods.musc.encode import tokens_and_embedding  # noqa: E402
from ad_pipeline.methods.musc.method import MuSc, MuScConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "musc.json"
POINTS = {"16": ("ViT-B-16", 224, 16, True), "64": ("ViT-B-16", 224, 64, True),
          "256": ("ViT-B-16", 224, 256, False), "518": ("ViT-L-14-336", 518, 8, False)}
QUICK_POINTS = ("16",)
R_LIST = (1, 3, 5)
K_LIST = (1, 2, 3)


class PeakRss:
    """Sampled resident-set high-water mark (MiB) above the RSS at entry, every 2 ms."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = _rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mib())

    @property
    def above_base(self) -> float:
        return self.peak - self.base


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _noise_images(root: Path, n: int, size: int) -> list[Path]:
    g = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = root / ("good" if i % 4 else "defect") / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(g.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def literal_pipeline(bb, paths: list[Path], size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The literal formulas end to end: scores [N] (RsCIN), maps [N, size, size], feature seconds."""
    t0 = time.perf_counter()
    layers = list(bb.spec.default_layers)
    tokens: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    embeddings = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            x = load_images(bb, paths[start:start + batch_size], size, resample="bicubic")
            batch_tokens, embedding = tokens_and_embedding(bb, x, layers)
            for layer in layers:
                t = batch_tokens[layer]
                tokens[layer].append(torch.cat([torch.zeros_like(t[:, :1]), t], dim=1))
            embeddings.append(embedding)
        per_layer = [torch.cat(tokens[layer]) for layer in layers]
        features_s = time.perf_counter() - t0
        patch = musc_reference(per_layer, R_LIST, 0.3)
        side = int(patch.shape[1] ** 0.5)
        maps = F.interpolate(patch.view(-1, 1, side, side), size=(size, size), mode="bilinear", align_corners=True)
        raw = maps.flatten(1).amax(dim=1)
        scores = rscin_reference(raw, torch.cat(embeddings), K_LIST)
    return scores.numpy(), maps[:, 0].float().numpy(), features_s


def run_point(key: str, root: Path, batch_size: int, max_memory_gb: float) -> dict:
    name, size, n, with_literal = POINTS[key]
    t0 = time.perf_counter()
    bb = build_backbone(name, pretrained="false", seed=0)
    build_s = time.perf_counter() - t0
    paths = _noise_images(root / key, n, size)
    cfg = MuScConfig(image_size=size, r_list=list(R_LIST), batch_size=batch_size, max_memory_gb=max_memory_gb)
    musc = MuSc(cfg, RunContext(backbone=name, pretrained="false", progress=False), backbone=bb)
    with PeakRss() as mem:
        t0 = time.perf_counter()
        ours = musc.score(paths)
        ours_s = time.perf_counter() - t0
    row = {"point": key, "backbone": name, "weights": "random-init", "image_size": size, "n": n,
           "grid": musc.meta()["grid"], "chunk_plan": musc.meta()["chunk_plan"], "max_memory_gb": max_memory_gb,
           "build_s": round(build_s, 1), "ours_s": round(ours_s, 2), "ours_ms_per_image": round(1000 * ours_s / n, 1),
           "ours_peak_mib": round(mem.above_base, 1), "ours_features_s": musc.meta()["features_s"],
           "ours_scoring_s": musc.meta()["scoring_s"], "literal": "skipped (would take too long)"}
    if with_literal:
        with PeakRss() as mem:
            t0 = time.perf_counter()
            literal_scores, literal_maps, literal_features_s = literal_pipeline(bb, paths, size, batch_size)
            literal_s = time.perf_counter() - t0
        row |= {"literal": "ran", "literal_s": round(literal_s, 2),
                "literal_ms_per_image": round(1000 * literal_s / n, 1), "literal_peak_mib": round(mem.above_base, 1),
                "speedup": round(literal_s / ours_s, 2), "literal_features_s": round(literal_features_s, 2),
                "literal_scoring_s": round(literal_s - literal_features_s, 2),
                "scoring_speedup": round((literal_s - literal_features_s) / row["ours_scoring_s"], 2),
                "max_abs_diff_maps": float(np.abs(ours.maps - literal_maps).max()),
                "max_abs_diff_scores": float(np.abs(ours.scores - literal_scores).max())}
    return row


def _table(rows: list[dict]) -> str:
    head = ("| backbone @ size | N | ours ms/img | ours features / scoring s | ours peak MiB | literal ms/img | "
            "literal features / scoring s | literal peak MiB | speedup e2e / scoring | max abs diff maps / scores |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lit = (f"{r['literal_ms_per_image']} | {r['literal_features_s']} / {r['literal_scoring_s']} | "
               f"{r['literal_peak_mib']} | {r['speedup']}x / {r['scoring_speedup']}x | "
               f"{r['max_abs_diff_maps']:.1e} / {r['max_abs_diff_scores']:.1e}") if r["literal"] == "ran" \
            else "skipped | – | – | – | –"
        lines.append(f"| {r['backbone']} @ {r['image_size']} | {r['n']} | {r['ours_ms_per_image']} | "
                     f"{r['ours_features_s']} / {r['ours_scoring_s']} | {r['ours_peak_mib']} | {lit} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only N=16 at 224")
    parser.add_argument("--points", default=",".join(POINTS), help=f"comma list of {sorted(POINTS)}")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-memory-gb", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keys = QUICK_POINTS if args.quick else args.points.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in keys:
            rows.append(run_point(key, Path(tmp), args.batch_size, args.max_memory_gb))
            print(json.dumps(rows[-1]), flush=True)
    print(_table(rows))
    for row in rows:
        row |= {"command": " ".join(["python", *sys.argv]), "threads": args.threads}
    # rows of earlier runs for other points are kept, so the points can be run one at a time
    kept = json.loads(RESULTS.read_text())["rows"] if RESULTS.is_file() else []
    merged = [r for r in kept if r["point"] not in keys] + rows
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"torch": torch.__version__, "rows": merged}, indent=2) + "\n")


if __name__ == "__main__":
    main()

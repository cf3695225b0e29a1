"""Benchmark of MuSc: ours (symmetric chunked MSM) vs the literal per-pair implementation.

    python bench/musc.py [--quick] [--threads T] [--points 16,64,256,518]

Points: ViT-B-16 at 224 with N = 16, 64, 256 images and ViT-L-14-336 at 518 with N = 8; both
backbones with seeded RANDOM-INIT weights (no pretrained weights offline; the cost is the same).
Images are random-noise PNGs. Both implementations run in this process on the same images: ours is
``MuSc.score`` end to end; the literal one is the same one-pass feature extraction followed by
unfold LNAMD, one torch.cdist per image pair, explicit sort, RsCIN with an explicit degree
matrix (tests/musc_reference.py) and the same upsampling. At N = 256 the literal scoring would take
~25 min: there ONE of its layers × r_list identical-cost passes is timed and multiplied (marked
"est."). "re-run" is ours again with ``cache_features`` (features read from the cache written by the
first run): the cost of a scoring-only parameter change. "bound" = literal total / our feature
time: the largest end-to-end speed-up any scoring could give with this ViT forward. Peak memory is
the sampled RSS high-water mark above the RSS just before the run. Writes bench/results/musc.json.
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

from musc_reference import lnamd_reference, msm_reference, musc_reference, rscin_reference  # noqa: E402

from ad_pipeline.backbones import EMBEDDING, build_backbone  # noqa: E402
from ad_pipeline.backbones.features import load_images  # noqa: E402
from ad_pipeline.methods.base import RunContext  # noqa: E402
from ad_pipeline.methods.musc.method import MuSc, MuScConfig  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "musc.json"
# point: backbone, size, N, literal ("full" | "one pass": one (layer, r) MSM pass timed and multiplied)
POINTS = {"16": ("ViT-B-16", 224, 16, "full"), "64": ("ViT-B-16", 224, 64, "full"),
          "256": ("ViT-B-16", 224, 256, "one pass"), "518": ("ViT-L-14-336", 518, 8, "full")}
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


def literal_features(bb, paths: list[Path], size: int, batch_size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Tokens [N, 1+L, C] per layer (a zero dummy class token first, as the reference expects) and
    embeddings [N, D], from the same one-pass extraction ours uses."""
    layers = list(bb.spec.default_layers)
    tokens: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    embeddings = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            x = load_images(bb, paths[start:start + batch_size], size, resample="bicubic")
            out = bb(x, [*layers, EMBEDDING])
            for layer in layers:
                t = out[layer]
                tokens[layer].append(torch.cat([torch.zeros_like(t[:, :1]), t], dim=1))
            embeddings.append(out[EMBEDDING])
    return [torch.cat(tokens[layer]) for layer in layers], torch.cat(embeddings)


def literal_pipeline(bb, paths: list[Path], size: int, batch_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The literal formulas end to end: scores [N] (RsCIN), maps [N, size, size], feature seconds."""
    t0 = time.perf_counter()
    per_layer, embeddings = literal_features(bb, paths, size, batch_size)
    features_s = time.perf_counter() - t0
    with torch.inference_mode():
        patch = musc_reference(per_layer, R_LIST, 0.3)
        side = int(patch.shape[1] ** 0.5)
        maps = F.interpolate(patch.view(-1, 1, side, side), size=(size, size), mode="bilinear", align_corners=True)
        raw = maps.flatten(1).amax(dim=1)
        scores = rscin_reference(raw, embeddings, K_LIST)
    return scores.numpy(), maps[:, 0].float().numpy(), features_s


def literal_estimate(bb, paths: list[Path], size: int, batch_size: int) -> tuple[float, float]:
    """(feature seconds, scoring seconds): the features measured, the scoring = one literal MSM pass
    (first layer, largest r) timed × (layers · |r_list|) passes, which all cost the same."""
    t0 = time.perf_counter()
    per_layer, _ = literal_features(bb, paths, size, batch_size)
    features_s = time.perf_counter() - t0
    with torch.inference_mode():
        t0 = time.perf_counter()
        msm_reference(lnamd_reference(per_layer[0], max(R_LIST)), 0.3)
        one_pass_s = time.perf_counter() - t0
    return features_s, one_pass_s * len(per_layer) * len(R_LIST)


def run_point(key: str, root: Path, batch_size: int, max_memory_gb: float) -> dict:
    name, size, n, literal = POINTS[key]
    t0 = time.perf_counter()
    bb = build_backbone(name, pretrained="false", seed=0)
    build_s = time.perf_counter() - t0
    paths = _noise_images(root / key, n, size)
    cfg = MuScConfig(image_size=size, r_list=list(R_LIST), batch_size=batch_size, max_memory_gb=max_memory_gb,
                     cache_features=True)
    musc = MuSc(cfg, RunContext(backbone=name, pretrained="false", progress=False, cache_dir=root / "cache"),
                backbone=bb)
    with PeakRss() as mem:
        t0 = time.perf_counter()
        ours = musc.score(paths)
        ours_s = time.perf_counter() - t0
    row = {"point": key, "backbone": name, "weights": "random-init", "image_size": size, "n": n,
           "grid": musc.meta()["grid"], "chunk_plan": musc.meta()["chunk_plan"], "max_memory_gb": max_memory_gb,
           "build_s": round(build_s, 1), "ours_s": round(ours_s, 2), "ours_ms_per_image": round(1000 * ours_s / n, 1),
           "ours_peak_mib": round(mem.above_base, 1), "ours_features_s": musc.meta()["features_s"],
           "ours_scoring_s": musc.meta()["scoring_s"]}
    t0 = time.perf_counter()
    rerun = musc.score(paths)
    row["rerun_ms_per_image"] = round(1000 * (time.perf_counter() - t0) / n, 1)
    assert np.array_equal(rerun.maps, ours.maps), "cached features changed the maps"
    if literal == "full":
        with PeakRss() as mem:
            t0 = time.perf_counter()
            literal_scores, literal_maps, features_s = literal_pipeline(bb, paths, size, batch_size)
            literal_s = time.perf_counter() - t0
        row |= {"literal": "ran", "literal_peak_mib": round(mem.above_base, 1),
                "max_abs_diff_maps": float(np.abs(ours.maps - literal_maps).max()),
                "max_abs_diff_scores": float(np.abs(ours.scores - literal_scores).max())}
    else:
        features_s, scoring_s = literal_estimate(bb, paths, size, batch_size)
        literal_s = features_s + scoring_s
        row |= {"literal": "estimated: one of the equal-cost MSM passes timed"}
    row |= {"literal_s": round(literal_s, 2), "literal_ms_per_image": round(1000 * literal_s / n, 1),
            "literal_features_s": round(features_s, 2), "literal_scoring_s": round(literal_s - features_s, 2),
            "speedup": round(literal_s / ours_s, 2),
            "scoring_speedup": round((literal_s - features_s) / row["ours_scoring_s"], 2),
            "rerun_speedup": round(1000 * literal_s / n / row["rerun_ms_per_image"], 2),
            "bound": round(literal_s / row["ours_features_s"], 2)}
    return row


def _table(rows: list[dict]) -> str:
    head = ("| backbone @ size | N | ours ms/img | ours features / scoring s | ours peak MiB | re-run ms/img | "
            "literal ms/img | literal features / scoring s | literal peak MiB | speedup e2e / scoring / re-run "
            "(bound) | max abs diff maps / scores |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        ran = r["literal"] == "ran"
        est = "" if ran else " est."
        diff = f"{r['max_abs_diff_maps']:.1e} / {r['max_abs_diff_scores']:.1e}" if ran else "–"
        lines.append(f"| {r['backbone']} @ {r['image_size']} | {r['n']} | {r['ours_ms_per_image']} | "
                     f"{r['ours_features_s']} / {r['ours_scoring_s']} | {r['ours_peak_mib']} | "
                     f"{r['rerun_ms_per_image']} | {r['literal_ms_per_image']}{est} | "
                     f"{r['literal_features_s']} / {r['literal_scoring_s']}{est} | "
                     f"{r['literal_peak_mib'] if ran else '–'} | {r['speedup']}x / {r['scoring_speedup']}x / "
                     f"{r['rerun_speedup']}x ({r['bound']}x) | {diff} |")
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

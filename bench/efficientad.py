"""EfficientAD speed: inference ms/image at 256×256 (torch eager vs ONNX Runtime, CPU, batch 1)
and training steps/s, for EfficientAD-S and -M (random-init weights; speed does not depend on them).

    python bench/efficientad.py [--quick] [--threads N]

Prints a table and writes bench/results/efficientad.json. Numbers on a shared machine are noisy:
compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ad_pipeline.components.student_teacher.data import PenaltyImages
from ad_pipeline.components.student_teacher.model import EfficientADModel
from ad_pipeline.components.student_teacher.train import train_student_autoencoder
from ad_pipeline.export.formats import export_onnx, onnx_session

RESULTS = Path(__file__).parent / "results" / "efficientad.json"
IMAGE = 256


def _time_ms(fn, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.mean(times)


def bench_inference(size: str, warmup: int, runs: int, workdir: Path, threads: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = EfficientADModel(size, IMAGE).eval()
    x = torch.randn(1, 3, IMAGE, IMAGE)
    with torch.inference_mode():
        eager = _time_ms(lambda: model(x), warmup, runs)
    path = export_onnx(model, x, workdir / f"effad_{size}.onnx", input_names=["image"],
                       output_names=["anomaly_map", "score"])
    session = onnx_session(path, threads=threads)
    feed = {"image": x.numpy()}
    ort_ms = _time_ms(lambda: session.run(None, feed), warmup, runs)
    return {"torch_eager_ms": eager, "onnxruntime_ms": ort_ms, "speedup": eager / ort_ms}


def bench_training(size: str, steps: int, workdir: Path) -> float:
    rng = np.random.default_rng(0)
    penalty_paths = []
    for i in range(2):
        p = workdir / f"penalty_{i}.png"
        Image.fromarray(rng.integers(0, 255, (IMAGE, IMAGE, 3), dtype=np.uint8)).save(p)
        penalty_paths.append(p)
    torch.manual_seed(0)
    model = EfficientADModel(size, IMAGE)
    images = torch.from_numpy(rng.integers(0, 255, (4, 3, IMAGE, IMAGE), dtype=np.uint8))
    gen = torch.Generator().manual_seed(0)
    penalty = PenaltyImages(penalty_paths, IMAGE)
    label = f"EfficientAD-{size[0].upper()}"
    train_student_autoencoder(model, images, penalty, label=label, steps=1, gen=gen, progress=False)  # warm-up
    t0 = time.perf_counter()
    train_student_autoencoder(model, images, penalty, label=label, steps=steps, gen=gen, progress=False)
    return steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions (CI smoke)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="intra-op threads (torch and ORT)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warmup, runs, steps = (2, 5, 2) if args.quick else (10, 50, 10)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in ("small", "medium"):
            rows[size] = bench_inference(size, warmup, runs, Path(tmp), args.threads)
            rows[size]["train_steps_per_s"] = bench_training(size, steps, Path(tmp))
    print(f"EfficientAD at {IMAGE}×{IMAGE}, CPU, batch 1, {args.threads} thread(s), "
          f"{warmup} warm-up + {runs} runs, {steps} train steps")
    print(f"{'model':8} {'torch ms/img':>13} {'ORT ms/img':>11} {'ORT speed-up':>13} {'train steps/s':>14}")
    for size, r in rows.items():
        print(f"{size:8} {r['torch_eager_ms']:13.1f} {r['onnxruntime_ms']:11.1f} {r['speedup']:12.2f}× "
              f"{r['train_steps_per_s']:14.3f}")
    result = {"image_size": IMAGE, "device": "cpu", "cpu": platform.processor() or platform.machine(),
              "threads": args.threads, "load_avg_1min": os.getloadavg()[0], "quick": args.quick,
              "warmup": warmup, "runs": runs, "train_steps": steps, "torch": torch.__version__, "results": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()

"""What each CPU numerics knob costs in time and whether it changes the bits.

    python bench/numerics.py [--quick]

Each knob set (ad_pipeline/numerics.py) runs in its own fresh process (the knobs are read when the
libraries load), all of them at once, with three tiny workloads on random images: a PatchCore fit + score (random-init
efficientnet_lite0, 128², coreset, faiss kNN), EfficientAD-S student/autoencoder training steps
(128²), UniAD training steps (efficientnet_lite0 features, 128²). Per workload: median wall and
CPU seconds (the cost to compare: the processes share the cores) and a SHA-256 of the result
(image scores / trained weights): equal digests = bit-identical. Prints a table and writes
bench/results/numerics.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "numerics.json"
REPO = Path(__file__).resolve().parents[1]


def knob_sets() -> dict[str, dict[str, str]]:
    """Name → environment. Threads default to 2 (the portable profile's)."""
    from ad_pipeline.numerics import COMMON_KNOBS, LEVEL_KNOBS, NumericsConfig, profile_env

    avx2 = LEVEL_KNOBS["avx2"]
    two = {"OMP_NUM_THREADS": "2"}
    return {
        "native": two,
        "native 1 thread": {"OMP_NUM_THREADS": "1"},
        "ATEN_CPU_CAPABILITY=avx2": two | {"ATEN_CPU_CAPABILITY": "avx2"},
        "DNNL_MAX_CPU_ISA=AVX2": two | {"DNNL_MAX_CPU_ISA": "AVX2"},
        "MKL_CBWR=COMPATIBLE": two | {"MKL_CBWR": COMMON_KNOBS["MKL_CBWR"]},
        "numpy/OpenBLAS/faiss AVX2": two | {k: avx2[k] for k in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES",
                                                                   "FAISS_SIMD_LEVEL")},
        "portable (all, 2 threads)": profile_env(NumericsConfig(), "avx2"),
        "portable on a pre-AVX2 CPU": profile_env(NumericsConfig(), "sse4"),
    }


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def _median_s(fn, repeats: int):
    """(median wall seconds, median CPU seconds of this process over ``repeats`` calls after one
    warm-up, the last result). CPU seconds hold up better than wall time on a loaded machine."""
    result = fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return sorted(wall)[len(wall) // 2], sorted(cpu)[len(cpu) // 2], result


def worker(quick: bool) -> dict:
    """The three workloads in this process (its environment holds the knobs)."""
    import numpy as np
    import torch
    from PIL import Image

    from ad_pipeline.components.student_teacher.model import EfficientADModel
    from ad_pipeline.components.student_teacher.train import train_student_autoencoder
    from ad_pipeline.methods.base import RunContext
    from ad_pipeline.methods.patchcore import PatchCore, PatchCoreConfig
    from ad_pipeline.methods.uniad.config import Config
    from ad_pipeline.methods.uniad.distributed import DistInfo
    from ad_pipeline.methods.uniad.features import build_feature_extractor, extract_aligned_features
    from ad_pipeline.methods.uniad.model import build_model
    from ad_pipeline.methods.uniad.train import train_epoch
    from ad_pipeline.seed import seed_everything

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    repeats, n_images, steps = (1, 4, 2) if quick else (3, 8, 4)
    out = {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="bench-numerics-") as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(n_images):
            paths.append(Path(tmp) / f"{i}.png")
            Image.fromarray(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(paths[-1])
        ctx = RunContext(backbone="efficientnet_lite0", pretrained="false", progress=False)

        def patchcore():
            seed_everything(0)
            method = PatchCore(PatchCoreConfig(resize=128, image_size=128, coreset_ratio=0.1), ctx)
            method.fit(paths[: n_images // 2], [])
            s = method.score(paths[n_images // 2:])
            return _digest(s.scores, s.maps)

        def efficientad():
            seed_everything(0)
            model = EfficientADModel("small", 128)
            images = torch.from_numpy(rng.integers(0, 255, (4, 3, 128, 128), dtype=np.uint8))
            train_student_autoencoder(model, images, None, label="EfficientAD-S", steps=steps,
                                      gen=torch.Generator().manual_seed(0), progress=False)
            return _digest(*(p.detach().numpy() for p in model.parameters()))

        cfg = Config(image_size=128, hidden=64, heads=4, ffn=128, enc_layers=2, dec_layers=2, batch_size=4,
                     num_workers=0)
        features = extract_aligned_features(build_feature_extractor(cfg, ctx), paths, image_size=128,
                                            batch_size=4, progress=False)

        def uniad():
            seed_everything(0)
            model = build_model(cfg, tuple(features.shape[1:]))
            optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            info = DistInfo(0, 1, torch.device("cpu"), owns_group=False)
            for epoch in range(steps):
                train_epoch(model, features, list(range(4)), epoch, cfg, 0, optimizer, info)
            return _digest(*(p.detach().numpy() for p in model.parameters()))

        for name, fn in (("patchcore fit+score", patchcore), ("efficientad train steps", efficientad),
                         ("uniad train steps", uniad)):
            seconds, cpu_seconds, digest = _median_s(fn, repeats)
            out[name] = {"s": round(seconds, 3), "cpu_s": round(cpu_seconds, 3), "sha256": digest}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images, steps and repeats")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.quick)))
        return
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ATEN_", "DNNL_", "ONEDNN_", "MKL_", "OMP_",
                                                                       "OPENBLAS_", "NPY_", "FAISS_"))}
    cmd = [sys.executable, __file__, "--worker", *(["--quick"] if args.quick else [])]
    procs = {name: (env, subprocess.Popen(cmd, env=base | env | {"PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                                          text=True)) for name, env in knob_sets().items()}
    rows = {}
    for name, (env, proc) in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"{name}: worker failed with exit {proc.returncode}")
        rows[name] = json.loads(out.splitlines()[-1]) | {"env": env}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"quick": args.quick, "load_avg_1min": os.getloadavg()[0],
                                   "cpu": _cpu(), "results": rows}, indent=2) + "\n")
    loads = [k for k, v in rows["native"].items() if isinstance(v, dict) and "sha256" in v]
    print(f"{'knob set':<30}{'ATen':>8}" + "".join(f"{w + ' (CPU s, x, bits)':>40}" for w in loads))
    for name, r in rows.items():
        cells = "".join(f"{r[w]['cpu_s']:>24.2f} {r[w]['cpu_s'] / rows['native'][w]['cpu_s']:>5.2f}x "
                        f"{'same' if r[w]['sha256'] == rows['native'][w]['sha256'] else 'DIFF':>8}" for w in loads)
        print(f"{name:<30}{r['torch_cpu_capability']:>8}{cells}")
    print(f"wrote {RESULTS} (x: CPU time relative to native; same/DIFF: bit-identical to native or not)")


def _cpu() -> str:
    from ad_pipeline.numerics import _cpu_model

    return _cpu_model()


if __name__ == "__main__":
    main()

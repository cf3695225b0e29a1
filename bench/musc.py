"""Benchmark of MuSc: ours (symmetric chunked MSM) vs the literal per-pair implementation, or,
with ``--official``, vs the official code itself.

    python bench/musc.py [--quick] [--threads T] [--points 16,64,256,518]
    python bench/musc.py --official /path/to/MuSc [--official-n 16,64,200] [--rounds R] [--threads T]

Side by side (``--official``): ours and the official MuSc (github.com/xrli-U/MuSc, run by
bench/musc_official.py from the checkout, ``--official-mode openai``: its OpenAI loader with the
download replaced by the local file, QuickGELU at 224) each run in a fresh process, interleaved
per round, on the same random-noise 224 px images in MVTec layout and the same weights file (seed-0
open_clip ViT-B-16 init rounded to float16 precision, written once to ``--work-dir``; ours loads
it from ``weights_dir`` like a user's file). Per N: ms/img of the scoring call (images to final
scores; model build excluded), the process' peak RSS (``ru_maxrss``: load + score) and the sampled
peak above the RSS before scoring, ours' predicted scoring peak (the docs/musc.md formula), and the
max |Δ| of maps and final scores against the official outputs of the same round. ``--estimate-n``
(N too large to run the official code on a shared CPU): both sides estimated from the largest
measured N's per-image costs (forward; official LNAMD from its own log) plus the N-dependent MSM
timed at that N on random unit tokens (official: 3 query images of one pass; ours: one full pass),
× the 12 (layer, r) passes. Writes bench/results/musc_vs_official.json.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from musc_official import PeakRss, process_peak_mib  # noqa: E402
from musc_reference import lnamd_reference, msm_reference, musc_reference, rscin_reference  # noqa: E402

from ad_pipeline.backbones import EMBEDDING, build_backbone  # noqa: E402
from ad_pipeline.backbones.features import load_images  # noqa: E402
from ad_pipeline.methods.base import RunContext  # noqa: E402
from ad_pipeline.methods.musc.method import MuSc, MuScConfig  # noqa: E402
from ad_pipeline.methods.musc.lnamd import lnamd_features  # noqa: E402
from ad_pipeline.methods.musc.msm import mutual_scores, plan_chunks  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "musc.json"
RESULTS_OFFICIAL = RESULTS.with_name("musc_vs_official.json")
OFFICIAL_DRIVER = Path(__file__).resolve().parent / "musc_official.py"
LAYERS = (2, 5, 8, 11)
# point: backbone, size, N, literal ("full" | "one pass": one (layer, r) MSM pass timed and multiplied)
POINTS = {"16": ("ViT-B-16", 224, 16, "full"), "64": ("ViT-B-16", 224, 64, "full"),
          "256": ("ViT-B-16", 224, 256, "one pass"), "518": ("ViT-L-14-336", 518, 8, "full")}
QUICK_POINTS = ("16",)
R_LIST = (1, 3, 5)
K_LIST = (1, 2, 3)


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


def _weights_file(work_dir: Path, name: str = "ViT-B-16") -> Path:
    """``<work_dir>/weights/<name>.pt``: seed-0 open_clip init, every tensor rounded to float16
    precision (the official OpenAI loader rounds to float16; pre-rounded weights load losslessly)."""
    path = work_dir / "weights" / f"{name}.pt"
    if not path.is_file():
        import open_clip

        path.parent.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        state = open_clip.create_model(name).state_dict()
        torch.save({k: v.half().float() if v.is_floating_point() else v for k, v in state.items()}, path)
    return path


def _mvtec_layout(root: Path, n: int, size: int) -> Path:
    """``root/bench/test/{defect,good}/NNNN.png`` noise images + all-zero masks the official loader needs."""
    if not root.is_dir():
        for p in _noise_images(root / "bench" / "test", n, size):
            if p.parent.name != "good":
                mask = root / "bench" / "ground_truth" / p.parent.name / f"{p.stem}_mask.png"
                mask.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.zeros((size, size), np.uint8)).save(mask)
    return root


def _official_order(data_root: Path) -> list[Path]:
    """Test images as the official loader lists them: defect types sorted, then file names."""
    test = data_root / "bench" / "test"
    return [p for d in sorted(test.iterdir()) for p in sorted(d.iterdir())]


def ours_worker(cfg: dict) -> None:
    """One side-by-side run of ours in this (fresh) process; writes ``cfg["out"]`` (.npz)."""
    torch.set_num_threads(cfg["threads"])
    paths = _official_order(Path(cfg["data_root"]))
    musc_cfg = MuScConfig(image_size=cfg["size"], r_list=list(R_LIST), layers=list(LAYERS),
                          batch_size=cfg["batch_size"], max_memory_gb=cfg["max_memory_gb"],
                          clip_activation=cfg["activation"])
    musc = MuSc(musc_cfg, RunContext(backbone="ViT-B-16", pretrained="true", weights_dir=Path(cfg["weights_dir"]),
                                     progress=False))
    t0 = time.perf_counter()
    bb = musc.backbone()
    build_s = time.perf_counter() - t0
    with PeakRss() as mem:
        t0 = time.perf_counter()
        out = musc.score(paths)
        score_s = time.perf_counter() - t0
    meta = musc.meta()
    n, (h, w) = len(paths), meta["grid"]
    plan = plan_chunks(n, h * w, cfg["max_memory_gb"] * 2**30)
    width = bb.model.conv1.out_channels
    predicted = (n * h * w * width * 4 * (len(LAYERS) + 2) + plan.peak_bytes(n, h * w) + n * cfg["size"] ** 2 * 4)
    timing = {"build_s": round(build_s, 3), "score_s": round(score_s, 3), "n": n,
              "features_s": meta["features_s"], "scoring_s": meta["scoring_s"], "activation": meta["activation"],
              "peak_rss_mib": round(process_peak_mib(), 1), "scoring_peak_mib": round(mem.above_base, 1),
              "predicted_scoring_peak_mib": round(predicted / 2**20, 1), "chunk_plan": meta["chunk_plan"],
              "torch_threads": torch.get_num_threads()}
    np.savez(cfg["out"], maps=out.maps, raw=out.extras["raw_scores"], scores=out.scores,
             paths=np.array([str(p) for p in paths]), timing=json.dumps(timing))
    print(json.dumps(timing))


def _run(cmd: list[str], log: Path) -> dict:
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return json.loads(log.read_text().strip().splitlines()[-1])


def official_point(n: int, args: argparse.Namespace, work: Path) -> dict:
    """Ours and the official code on the same N images, ``args.rounds`` interleaved rounds."""
    size = 224
    data_root = _mvtec_layout(work / f"data_{n}", n, size)
    weights = _weights_file(work)
    activation = "quick_gelu" if args.official_mode == "openai" else "gelu"
    runs: dict[str, list[dict]] = {"ours": [], "official": []}
    diffs = {"maps": 0.0, "raw": 0.0, "scores": 0.0}
    for rnd in range(args.rounds):
        ours_out, off_out = work / f"ours_{n}_{rnd}.npz", work / f"official_{n}_{rnd}.npz"
        ours_cfg = {"data_root": str(data_root), "weights_dir": str(weights.parent), "size": size, "threads": args.threads,
                    "batch_size": 4, "max_memory_gb": args.max_memory_gb, "activation": activation, "out": str(ours_out)}
        ours_cmd = [sys.executable, __file__, "--worker-ours", json.dumps(ours_cfg)]
        off_cmd = [sys.executable, str(OFFICIAL_DRIVER), "--checkout", str(args.official), "--data-root",
                   str(data_root), "--category", "bench", "--weights", str(weights), "--mode", args.official_mode,
                   "--image-size", str(size), "--threads", str(args.threads), "--out", str(off_out)]
        order = [("ours", ours_cmd), ("official", off_cmd)]
        for side, cmd in order if rnd % 2 == 0 else order[::-1]:
            runs[side].append(_run(cmd, work / f"{side}_{n}_{rnd}.log"))
            print(side, n, rnd, json.dumps(runs[side][-1]), flush=True)
        ours, off = np.load(ours_out), np.load(off_out)
        row_of = {p: i for i, p in enumerate(ours["paths"])}
        idx = [row_of[p] for p in off["paths"]]
        diffs["maps"] = max(diffs["maps"], float(np.abs(ours["maps"][idx] - off["maps"]).max()))
        diffs["raw"] = max(diffs["raw"], float(np.abs(ours["raw"][idx] - off["raw"]).max()))
        diffs["scores"] = max(diffs["scores"], float(np.abs(ours["scores"][idx] - off["scores"]).max()))
    med = {side: {k: float(np.median([r[k] for r in rs])) for k in ("score_s", "peak_rss_mib", "scoring_peak_mib")}
           for side, rs in runs.items()}
    phases = _official_phases(work / f"official_{n}_{args.rounds - 1}.log")
    return {"n": n, "backbone": "ViT-B-16", "image_size": size, "official_mode": args.official_mode,
            "activation": activation, "rounds": args.rounds, "threads": args.threads,
            "official_ms_per_image": round(1000 * med["official"]["score_s"] / n, 1),
            "ours_ms_per_image": round(1000 * med["ours"]["score_s"] / n, 1),
            "ratio": round(med["official"]["score_s"] / med["ours"]["score_s"], 2),
            "ours_features_s": [r["features_s"] for r in runs["ours"]],
            "ours_scoring_s": [r["scoring_s"] for r in runs["ours"]],
            "official_s": [r["score_s"] for r in runs["official"]], "ours_s": [r["score_s"] for r in runs["ours"]],
            "official_peak_rss_mib": med["official"]["peak_rss_mib"], "ours_peak_rss_mib": med["ours"]["peak_rss_mib"],
            "official_scoring_peak_mib": med["official"]["scoring_peak_mib"],
            "ours_scoring_peak_mib": med["ours"]["scoring_peak_mib"],
            "ours_predicted_scoring_peak_mib": runs["ours"][0]["predicted_scoring_peak_mib"],
            "chunk_plan": runs["ours"][0]["chunk_plan"],
            "max_abs_diff_maps": diffs["maps"], "max_abs_diff_raw_scores": diffs["raw"],
            "max_abs_diff_scores": diffs["scores"], "official_phases_ms_per_image": phases}


def _official_phases(log: Path) -> dict[str, float]:
    """The official code's own per-image timings from its log: extract, LNAMD (all r), MSM (all r)."""
    phases = {"extract": 0.0, "lnamd": 0.0, "msm": 0.0}
    for line in log.read_text(errors="replace").splitlines():
        for key, prefix in (("extract", "extract time:"), ("lnamd", "LNAMD-"), ("msm", "MSM:")):
            if line.startswith(prefix) and line.endswith("ms per image"):
                phases[key] += float(line.split(":")[1].split("ms")[0])
    return {k: round(v, 1) for k, v in phases.items()}


def estimate_point(n: int, args: argparse.Namespace, base: dict) -> dict:
    """N too large to run the official code here: both sides = per-image costs measured in the
    ``base`` row (forward; the official LNAMD) + the N-dependent MSM timed at N on random unit
    tokens (official: 3 query images of one pass, ours: one full pass) × the 12 passes."""
    torch.set_num_threads(args.threads)
    cmd = [sys.executable, str(OFFICIAL_DRIVER), "--checkout", str(args.official), "--time-msm", str(n),
           "--threads", str(args.threads)]
    official_query_s = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True)
                                  .stdout.strip().splitlines()[-1])["s_per_query_pass"]
    passes = len(LAYERS) * len(R_LIST)
    z = F.normalize(torch.randn(n, 196, 768, generator=torch.Generator().manual_seed(0)), dim=-1)
    fmap = torch.randn(n, 768, 14, 14, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        t0 = time.perf_counter()
        mutual_scores(z, int(0.3 * (n - 1)), max_memory_bytes=args.max_memory_gb * 2**30)
        ours_pass_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for r in R_LIST:
            lnamd_features(fmap, r)
        ours_lnamd_s = (time.perf_counter() - t0) * len(LAYERS)
    phases = base.get("official_phases_ms_per_image") or _official_phases(
        Path(args.work_dir) / f"official_{base['n']}_{base['rounds'] - 1}.log")
    official_s = n * (phases["extract"] + phases["lnamd"]) / 1000 + passes * n * official_query_s
    ours_s = n * float(np.median(base["ours_features_s"])) / base["n"] + passes * ours_pass_s + ours_lnamd_s
    return {"n": n, "estimated_from_n": base["n"], "backbone": "ViT-B-16", "image_size": 224,
            "threads": args.threads, "official_query_pass_s": round(official_query_s, 3),
            "ours_msm_pass_s": round(ours_pass_s, 2), "ours_lnamd_s": round(ours_lnamd_s, 2),
            "official_ms_per_image": round(1000 * official_s / n, 1), "ours_ms_per_image": round(1000 * ours_s / n, 1),
            "ratio": round(official_s / ours_s, 2)}


def _official_table(rows: list[dict]) -> str:
    head = ("| N | official ms/img | ours ms/img | ratio | ours features / scoring s | peak RSS official / ours MiB | "
            "scoring peak official / ours (predicted) MiB | max abs diff maps / scores |")
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['n']} | {r['official_ms_per_image']} | {r['ours_ms_per_image']} | {r['ratio']}x | "
                     f"{np.median(r['ours_features_s']):.1f} / {np.median(r['ours_scoring_s']):.1f} | "
                     f"{r['official_peak_rss_mib']:.0f} / {r['ours_peak_rss_mib']:.0f} | "
                     f"{r['official_scoring_peak_mib']:.0f} / {r['ours_scoring_peak_mib']:.0f} "
                     f"({r['ours_predicted_scoring_peak_mib']:.0f}) | "
                     f"{r['max_abs_diff_maps']:.1e} / {r['max_abs_diff_scores']:.1e} |")
    return "\n".join(lines)


def side_by_side(args: argparse.Namespace) -> None:
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [int(v) for v in args.official_n.split(",") if v]:
        rows.append(official_point(n, args, work))
        print(json.dumps(rows[-1]), flush=True)
    if rows:
        print(_official_table(rows))
    kept = json.loads(RESULTS_OFFICIAL.read_text())["rows"] if RESULTS_OFFICIAL.is_file() else []
    if args.estimate_n:
        measured = [r for r in rows + kept if "estimated_from_n" not in r]
        base = max(measured, key=lambda r: r["n"])
        for n in [int(v) for v in args.estimate_n.split(",")]:
            rows.append(estimate_point(n, args, base))
            print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        row["command"] = " ".join(["python", *sys.argv])
    merged = [r for r in kept if r["n"] not in {row["n"] for row in rows}] + rows
    RESULTS_OFFICIAL.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_OFFICIAL.write_text(json.dumps({"torch": torch.__version__, "official_commit": _commit(args.official),
                                            "rows": merged}, indent=2) + "\n")


def _commit(checkout: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only N=16 at 224")
    parser.add_argument("--points", default=",".join(POINTS), help=f"comma list of {sorted(POINTS)}")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-memory-gb", type=float, default=2.0)
    parser.add_argument("--official", type=Path, help="checkout of github.com/xrli-U/MuSc: side-by-side mode")
    parser.add_argument("--official-mode", choices=("openai", "file"), default="openai")
    parser.add_argument("--official-n", default="16,64,200")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--estimate-n", default="", help="N to estimate from the largest measured N (e.g. 200)")
    parser.add_argument("--work-dir", default=str(Path(tempfile.gettempdir()) / "musc_bench"),
                        help="images, the weights file (600 MB) and the runs' outputs")
    parser.add_argument("--worker-ours", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_ours:
        return ours_worker(json.loads(args.worker_ours))
    if args.official:
        return side_by_side(args)
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

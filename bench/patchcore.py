"""PatchCore speed: greedy coreset (fast vs the literal loop) and exact kNN (faiss brute force vs
torch chunks vs principal-subspace pruning, its bound in bfloat16 where the CPU has it and in float32).

    python bench/patchcore.py [--quick] [--official /path/to/patchcore-inspection]

Each case runs in a fresh process so its peak RSS is its own. Prints a table and writes
bench/results/patchcore.json. Targets (2 CPU cores): coreset 50k×1024 at 10% in <= 10 s; kNN
200×784 queries vs a 20k×1024 bank >= 4x faster than 134 s (i.e. <= 33 s), exact.

kNN data: "random" = Gaussian noise (nothing to prune); "real bottle" = efficientnet_lite0
(packaged ImageNet weights) PatchCore embeddings of the shipped MVTec AD bottle images: bank =
greedy coreset of the 20 train images and their flips / 180° rotation (62,720 patches -> 20k),
queries = the 83 test images, flipped copies up to 200 images (quick: 5k bank of the plain train
patches, 20 test images). Pruned and faiss run in the same process; "same_idx" counts queries whose
nearest row equals faiss's, "near_ties" those that differ only by float32 rounding of equal distances.
When anomalib is importable, its own PatchCore scoring (``PatchcoreModel.nearest_neighbors``) runs on
the same bank and queries in the same process and the table gets its row and ``speedup_vs_anomalib``
(anomalib is not a dependency: e.g. a venv that sees the project's packages, see README).
With ``--official`` (a checkout of amazon-science/patchcore-inspection; its ``src/`` is imported,
nothing of it is in this repo), the official code runs beside ours in the same process on the same
data: its ``ApproximateGreedyCoresetSampler`` (cases up to 50k rows; ours with ``rng="global"`` from
the same global seeds, so the picks must agree) and its ``NearestNeighbourScorer`` with ``FaissNN``
(fit + predict, k = 1, torch's thread count as its ``num_workers``); rows get ``vs_official``
(official seconds / ours), and the results go to bench/results/patchcore_vs_official.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing as mp
import os
import resource
import sys
import time
from pathlib import Path

import torch

from ad_pipeline.components.coreset import greedy_coreset, literal_greedy_coreset
from ad_pipeline.components.knn import REL_TOL

BOTTLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real" / "mvtec_ad" / "bottle"


def _case(kind: str, n: int, dim: int, ratio: float, queries: int, official: str | None, queue) -> None:
    features = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    out: dict = {}
    if official:
        sys.path.insert(0, str(Path(official) / "src"))
    t0 = time.perf_counter()
    if kind == "official_coreset":
        out = _official_coreset(features, ratio)
    elif kind == "coreset":
        picks = greedy_coreset(features, ratio, seed=0)
        out["picks"] = picks.tolist()
    elif kind == "literal":
        out["picks"] = literal_greedy_coreset(features, ratio, seed=0)
    elif kind == "knn_torch":
        from ad_pipeline.components.knn import TorchKnnIndex

        q = torch.randn(queries, dim, generator=torch.Generator().manual_seed(1))
        t0 = time.perf_counter()
        d, idx = TorchKnnIndex(features).search(q, 1)
        out["idx"] = idx[:, 0].tolist()
    elif kind in ("knn_random", "knn_real"):
        if kind == "knn_real":
            features, q, out["weights"] = _real_bottle_features(n, queries)
        else:
            q = torch.randn(queries, dim, generator=torch.Generator().manual_seed(1))
        out |= _compare_pruned_with_faiss(features, q)
        out |= _official_scoring(features, q, out) if official else {}
    out.setdefault("seconds", time.perf_counter() - t0)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(out)


def _compare_pruned_with_faiss(bank: torch.Tensor, queries: torch.Tensor) -> dict:
    from ad_pipeline.components.knn import FaissKnnIndex, PrunedKnnIndex

    t0 = time.perf_counter()
    ref_d, ref_i = FaissKnnIndex(bank).search(queries, 1)
    t_faiss = time.perf_counter() - t0
    t0 = time.perf_counter()
    index = PrunedKnnIndex(bank)
    t_build = time.perf_counter() - t0
    d, i = index.search(queries, 1)
    t_pruned = time.perf_counter() - t0
    differ = i[:, 0] != ref_i[:, 0]
    scale = REL_TOL * (queries.square().sum(1) + bank.square().sum(1).max())
    bound = {"bound_dtype": str(index.bound_dtype).removeprefix("torch.")}
    if index.bound_dtype != torch.float32:  # the float32 bound beside it, same process
        t0 = time.perf_counter()
        _, i32 = PrunedKnnIndex(bank, bound_dtype="float32").search(queries, 1)
        bound |= {"float32_bound_seconds": time.perf_counter() - t0, "float32_bound_same_idx": int((i32 == i).sum())}
    near_ties = int((differ & ((d - ref_d)[:, 0].abs() <= scale)).sum())
    return bound | {"seconds": t_pruned, "build_seconds": t_build, "faiss_seconds": t_faiss,
                    "pruned_fraction": index.stats.pruned_fraction, "same_idx": int((~differ).sum()),
                    "near_ties": near_ties, "queries": len(queries),
                    "faiss_idx": ref_i[:, 0].tolist()} | _anomalib_scoring(bank, queries, ref_i[:, 0])


def _anomalib_scoring(bank: torch.Tensor, queries: torch.Tensor, faiss_idx: torch.Tensor) -> dict:
    """anomalib's own PatchCore patch scoring (``PatchcoreModel.nearest_neighbors``, k = 1, its
    chunked ``euclidean_dist``) on the same bank and queries, when anomalib is importable (it is
    not a project dependency: run this script with a Python that has it, see README)."""
    if importlib.util.find_spec("anomalib") is None:
        return {}
    import anomalib
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    model = PatchcoreModel(layers=["layer2"], backbone="resnet18", pre_trained=False, num_neighbors=1).eval()
    model.memory_bank = bank
    t0 = time.perf_counter()
    with torch.inference_mode():
        _, idx = model.nearest_neighbors(queries, n_neighbors=1)
    return {"anomalib_seconds": time.perf_counter() - t0, "anomalib_version": anomalib.__version__,
            "anomalib_same_idx": int((idx == faiss_idx).sum())}


def _official_coreset(features: torch.Tensor, ratio: float) -> dict:
    """The official ``ApproximateGreedyCoresetSampler`` and ours (``rng="global"``), each from the same
    global torch / numpy seeds (projection and start points), on the same features."""
    import numpy as np
    from patchcore.sampler import ApproximateGreedyCoresetSampler

    sampler = ApproximateGreedyCoresetSampler(ratio, torch.device("cpu"))
    torch.manual_seed(0), np.random.seed(0)
    t0 = time.perf_counter()
    theirs = sampler.run(features)
    t_official = time.perf_counter() - t0
    torch.manual_seed(0), np.random.seed(0)
    t0 = time.perf_counter()
    picks = greedy_coreset(features, ratio, rng="global")
    t_ours = time.perf_counter() - t0
    same = torch.equal(features[picks], theirs)
    return {"seconds": t_ours, "official_seconds": t_official, "same_picks_as_official": same, "picks": picks.tolist()}


def _official_scoring(bank: torch.Tensor, queries: torch.Tensor, res: dict) -> dict:
    """The official ``NearestNeighbourScorer(1, FaissNN)`` (fit on the bank + predict) on the same data."""
    from patchcore.common import FaissNN, NearestNeighbourScorer

    scorer = NearestNeighbourScorer(1, FaissNN(False, torch.get_num_threads()))
    t0 = time.perf_counter()
    scorer.fit([bank.numpy()])
    _, _, idx = scorer.predict([queries.numpy()])
    seconds = time.perf_counter() - t0
    return {"official_seconds": seconds, "official_same_idx": int((idx[:, 0] == res["faiss_idx"]).sum())}


def _real_bottle_features(bank_rows: int, n_images: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Bank [bank_rows, 1024] (greedy coreset), queries [n_images·784, 1024] of real bottle images,
    and the backbone's weights mode."""
    import tempfile

    from PIL import Image

    from ad_pipeline.methods.base import RunContext
    from ad_pipeline.methods.patchcore import PatchCore, PatchCoreConfig

    train, test = sorted((BOTTLE / "train" / "good").glob("*.png")), sorted((BOTTLE / "test").glob("*/*.png"))
    views = {"id": None, "hflip": Image.Transpose.FLIP_LEFT_RIGHT, "vflip": Image.Transpose.FLIP_TOP_BOTTOM,
             "rot180": Image.Transpose.ROTATE_180}
    quick = bank_rows < 20_000
    method = PatchCore(PatchCoreConfig(), RunContext(backbone="efficientnet_lite0", pretrained="auto", progress=False))
    with tempfile.TemporaryDirectory() as tmp:
        def viewed(paths, view):
            out = []
            for p in paths:
                out.append(Path(tmp) / f"{p.parent.name}_{p.stem}_{view}.png")
                img = Image.open(p).convert("RGB")
                (img if views[view] is None else img.transpose(views[view])).save(out[-1])
            return out

        train_views = ["id"] if quick else list(views)
        bank = method.embed([v for view in train_views for v in viewed(train, view)]).flatten(0, 2)
        query_paths = [v for view in ("id", "hflip", "vflip") for v in viewed(test, view)][:n_images]
        queries = method.embed(query_paths).flatten(0, 2)
    keep = greedy_coreset(bank, (bank_rows + 0.5) / len(bank), seed=0)
    return bank[keep].contiguous(), queries, method.backbone.weights


def run(kind: str, n: int, dim: int = 1024, ratio: float = 0.1, queries: int = 0, official: str | None = None) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(kind, n, dim, ratio, queries, official, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases (minutes -> seconds)")
    parser.add_argument("--official", type=Path, help="checkout of amazon-science/patchcore-inspection to time beside ours")
    parser.add_argument("--knn-only", action="store_true", help="only the kNN cases (random and real bottle bank)")
    args = parser.parse_args()
    q, official = args.quick, (str(args.official.resolve()) if args.official else None)
    if official and not (args.official / "src" / "patchcore" / "sampler.py").is_file():
        parser.error(f"--official {args.official}: no src/patchcore/sampler.py there (a patchcore-inspection checkout)")
    if official:
        os.environ["TQDM_DISABLE"] = "1"  # read by tqdm at import in the case processes: the official per-pick bar
    rows = []

    def add(case: str, res: dict, **extra) -> dict:
        row = {"case": case, "seconds": round(res["seconds"], 3), "peak_rss_mb": round(res["peak_rss_mb"], 1)} | extra
        rows.append(row)
        print(f"{case:<48} {row['seconds']:>9.2f} s {row['peak_rss_mb']:>9.0f} MiB  "
              + " ".join(f"{k}={v}" for k, v in extra.items()), flush=True)
        return row

    print(f"torch threads: {torch.get_num_threads()}")
    if not args.knn_only:
        n_small, r_small = (5_000, 0.05) if q else (10_000, 0.05)
        fast, lit = run("coreset", n_small, ratio=r_small), run("literal", n_small, ratio=r_small)
        n_sel = len(fast["picks"])
        add(f"coreset fast {n_small}x1024 @{r_small:.0%}", fast, ms_per_point=round(1e3 * fast["seconds"] / n_sel, 3),
            same_indices_as_literal=fast["picks"] == lit["picks"])
        add(f"coreset literal {n_small}x1024 @{r_small:.0%}", lit, ms_per_point=round(1e3 * lit["seconds"] / n_sel, 3))
        for n, ratio in ([(50_000, 0.1)] if q else [(50_000, 0.1), (200_000, 0.1)]):
            res = run("coreset", n, ratio=ratio)
            add(f"coreset fast {n}x1024 @{ratio:.0%}", res, ms_per_point=round(1e3 * res["seconds"] / int(n * ratio), 3))
        if official:  # the official sampler is the literal loop: 200k rows would take many minutes
            for n, ratio in ([(n_small, r_small), (50_000, 0.1)]):
                res = run("official_coreset", n, ratio=ratio, official=official)
                add(f"coreset ours rng=global vs official {n}x1024 @{ratio:.0%}", res,
                    official_s=round(res["official_seconds"], 2),
                    vs_official=round(res["official_seconds"] / res["seconds"], 2),
                    same_picks_as_official=res["same_picks_as_official"])
    n_images = 20 if q else 200
    n_queries = n_images * 784
    if q:  # brute-force torch vs faiss (why faiss is the CPU default); quick only, the ratio is stable
        torch_res, faiss_res = run("knn_torch", 20_000, queries=n_queries), run("knn_random", 20_000, queries=n_queries)
        add(f"kNN torch brute {n_queries} q vs 20000x1024 random", torch_res,
            est_200x784_s=round(torch_res["seconds"] * 200 / n_images, 1),
            faiss_s=round(faiss_res["faiss_seconds"], 2),
            same_as_faiss=torch_res["idx"] == faiss_res["faiss_idx"])
    real_rows = 5_000 if q else 20_000
    for kind, bank_rows, label in [("knn_random", 20_000, "random"), ("knn_real", real_rows, "real bottle")]:
        res = run(kind, bank_rows, queries=n_queries if kind == "knn_random" else n_images, official=official)
        add(f"kNN faiss brute {res['queries']} q vs {bank_rows}x1024 {label}", {**res, "seconds": res["faiss_seconds"]},
            est_200x784_s=round(res["faiss_seconds"] * 200 * 784 / res["queries"], 1))
        if "anomalib_seconds" in res:
            add(f"kNN anomalib {res['anomalib_version']} {res['queries']} q vs {bank_rows}x1024 {label}",
                {**res, "seconds": res["anomalib_seconds"]},
                est_200x784_s=round(res["anomalib_seconds"] * 200 * 784 / res["queries"], 1),
                same_idx_as_faiss=f"{res['anomalib_same_idx']}/{res['queries']}")
        add(f"kNN pruned {res['queries']} q vs {bank_rows}x1024 {label}", res,
            est_200x784_s=round(res["seconds"] * 200 * 784 / res["queries"], 1),
            speedup_vs_faiss=round(res["faiss_seconds"] / res["seconds"], 2),
            speedup_vs_134s=round(134 / (res["seconds"] * 200 * 784 / res["queries"]), 2),
            build_s=round(res["build_seconds"], 2),  # included in seconds: the index is built once per model
            bound=res["bound_dtype"],
            **({"float32_bound_s": round(res["float32_bound_seconds"], 2),
                "float32_bound_same_idx": f"{res['float32_bound_same_idx']}/{res['queries']}"}
               if "float32_bound_seconds" in res else {}),
            **({"speedup_vs_anomalib": round(res["anomalib_seconds"] / res["seconds"], 2),
                "search_speedup_vs_anomalib": round(res["anomalib_seconds"] / (res["seconds"] - res["build_seconds"]), 2)}
               if "anomalib_seconds" in res else {}),
            **({"official_s": round(res["official_seconds"], 2),
                "vs_official": round(res["official_seconds"] / res["seconds"], 2),
                "official_same_idx_as_faiss": f"{res['official_same_idx']}/{res['queries']}"}
               if "official_seconds" in res else {}),
            pruned_fraction=round(res["pruned_fraction"], 4), same_idx=f"{res['same_idx']}/{res['queries']}",
            near_ties=res["near_ties"], **({"weights": res["weights"]} if "weights" in res else {}))
    name = ("patchcore_vs_official" if official else "patchcore") + ("_knn" if args.knn_only else "")
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": q, "torch_threads": torch.get_num_threads(), "rows": rows}
                              | ({"official": _official_commit(args.official)} if official else {}), indent=2) + "\n")
    print(f"wrote {out}")


def _official_commit(checkout: Path) -> dict:
    import subprocess

    head = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    return {"repo": "amazon-science/patchcore-inspection", "commit": head.strip(), "path": str(checkout)}


if __name__ == "__main__":
    main()

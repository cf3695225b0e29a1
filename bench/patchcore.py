"""PatchCore speed: greedy coreset (fast vs the literal loop) and exact kNN (torch chunks vs faiss).

    python bench/patchcore.py [--quick]

Each case runs in a fresh process so its peak RSS is its own. Prints a table and writes
bench/results/patchcore.json. Targets (2 CPU cores): coreset 50k×1024 at 10% in <= 10 s; kNN
200×784 queries vs a 20k×1024 bank >= 4x faster than 134 s (i.e. <= 33 s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time
from pathlib import Path

import torch

from ad_pipeline.methods.patchcore.coreset import greedy_coreset, project


def _literal_k_center(features: torch.Tensor, ratio: float, seed: int) -> torch.Tensor:
    """The reference rule written literally: one full distance column per selected point."""
    import numpy as np

    x = project(features, 128, seed)

    def dist(a, b):
        return (-2 * a @ b.T + (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None]).clamp(min=0).sqrt()

    starts = np.random.default_rng(seed).choice(len(x), 10, replace=False)
    min_d = dist(x, x[starts]).mean(dim=1, keepdim=True)
    picks = []
    for _ in range(int(len(x) * ratio)):
        j = int(torch.argmax(min_d))
        picks.append(j)
        min_d = torch.minimum(min_d, dist(x, x[j:j + 1]))
    return torch.tensor(picks)


def _case(kind: str, n: int, dim: int, ratio: float, queries: int, queue) -> None:
    features = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    out: dict = {}
    t0 = time.perf_counter()
    if kind == "coreset":
        picks = greedy_coreset(features, ratio, seed=0)
        out["picks"] = picks.tolist()
    elif kind == "literal":
        out["picks"] = _literal_k_center(features, ratio, seed=0).tolist()
    elif kind == "knn_torch":
        from ad_pipeline.methods.patchcore.knn import nearest_sq_distances

        q = torch.randn(queries, dim, generator=torch.Generator().manual_seed(1))
        t0 = time.perf_counter()
        d, idx = nearest_sq_distances(q, features, 1, backend="torch")
        out["idx"] = idx[:, 0].tolist()
    elif kind == "knn_faiss":
        import faiss

        q = torch.randn(queries, dim, generator=torch.Generator().manual_seed(1))
        t0 = time.perf_counter()
        index = faiss.IndexFlatL2(dim)
        index.add(features.numpy())
        _, idx = index.search(q.numpy(), 1)
        out["idx"] = idx[:, 0].tolist()
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(out)


def run(kind: str, n: int, dim: int = 1024, ratio: float = 0.1, queries: int = 0) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_case, args=(kind, n, dim, ratio, queries, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller cases (minutes -> seconds)")
    args = parser.parse_args()
    q = args.quick
    rows = []

    def add(case: str, res: dict, **extra) -> dict:
        row = {"case": case, "seconds": round(res["seconds"], 3), "peak_rss_mb": round(res["peak_rss_mb"], 1)} | extra
        rows.append(row)
        print(f"{case:<48} {row['seconds']:>9.2f} s {row['peak_rss_mb']:>9.0f} MiB  "
              + " ".join(f"{k}={v}" for k, v in extra.items()), flush=True)
        return row

    print(f"torch threads: {torch.get_num_threads()}")
    n_small, r_small = (5_000, 0.05) if q else (10_000, 0.05)
    fast, lit = run("coreset", n_small, ratio=r_small), run("literal", n_small, ratio=r_small)
    n_sel = len(fast["picks"])
    add(f"coreset fast {n_small}x1024 @{r_small:.0%}", fast, ms_per_point=round(1e3 * fast["seconds"] / n_sel, 3),
        same_indices_as_literal=fast["picks"] == lit["picks"])
    add(f"coreset literal {n_small}x1024 @{r_small:.0%}", lit, ms_per_point=round(1e3 * lit["seconds"] / n_sel, 3))
    for n, ratio in ([(50_000, 0.1)] if q else [(50_000, 0.1), (200_000, 0.1)]):
        res = run("coreset", n, ratio=ratio)
        add(f"coreset fast {n}x1024 @{ratio:.0%}", res, ms_per_point=round(1e3 * res["seconds"] / int(n * ratio), 3))
    n_queries = 20 * 784 if q else 200 * 784
    torch_res, faiss_res = run("knn_torch", 20_000, queries=n_queries), run("knn_faiss", 20_000, queries=n_queries)
    scale = 200 * 784 / n_queries
    add(f"kNN torch {n_queries} q vs 20000x1024", torch_res, est_200x784_s=round(torch_res["seconds"] * scale, 1),
        same_as_faiss=torch_res["idx"] == faiss_res["idx"])
    add(f"kNN faiss {n_queries} q vs 20000x1024", faiss_res, est_200x784_s=round(faiss_res["seconds"] * scale, 1))
    out = Path(__file__).parent / "results" / "patchcore.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"quick": q, "torch_threads": torch.get_num_threads(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

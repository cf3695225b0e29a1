"""Stage ``fuse@<dataset>``: combine methods' dumps with validation-only normalisation.

Writes ``artifacts/<dataset>/fused/<category>/`` dumps that ``evaluate@`` treats like any
method's.
"""

from __future__ import annotations

import numpy as np

from ad_pipeline.errors import ArtifactError
from ad_pipeline.fusion import fuse, resize_maps
from ad_pipeline.io import atomic_dir, read_json, read_scores, write_json, write_scores
from stages.common import load_manifests, method_dir, params, skip_absent

MAX_MAP_VALUES = 1_000_000  # validation map pixels used to fit a map normalisation (seeded subsample)


def run(dataset: str) -> None:
    p = params()
    cfg = p.fuse
    if skip_absent(f"fuse@{dataset}", dataset, method_dir(dataset, "fused")):
        return
    with atomic_dir(method_dir(dataset, "fused")) as out:
        if dataset not in cfg.datasets:
            (out / "NO_FUSION").write_text(f"fuse.datasets does not list {dataset}; nothing fused.\n")
            return
        if len(cfg.methods) < 2:
            raise ArtifactError(f"fuse.methods lists {cfg.methods}; fusion needs at least two methods")
        rng = np.random.default_rng(p.seed)
        for manifest in load_manifests(dataset):
            dumps = {m: _dumps(dataset, m, manifest) for m in cfg.methods}
            scores = fuse([d["test"][0] for d in dumps.values()], [d["validation"][0] for d in dumps.values()],
                          cfg.normalization, cfg.weights)
            maps = None
            if all(d["test"][1] is not None and d["validation"][1] is not None for d in dumps.values()):
                size = (cfg.map_size, cfg.map_size)
                test_maps = [resize_maps(d["test"][1], size) for d in dumps.values()]
                val_maps = [_subsample(resize_maps(d["validation"][1], size), rng) for d in dumps.values()]
                maps = fuse(test_maps, val_maps, cfg.normalization, cfg.weights)
            cat_dir = out / manifest.category
            write_scores(cat_dir, "test", manifest.fingerprint("test"), scores, maps, writer=f"fuse@{dataset}")
            weights = {read_json(method_dir(dataset, m) / manifest.category / "meta.json").get("weights")
                       for m in cfg.methods}
            write_json(cat_dir / "meta.json", {
                "method": "fused", "members": cfg.methods, "normalization": cfg.normalization,
                "weights_per_member": cfg.weights, "weights": weights.pop() if len(weights) == 1 else "mixed",
            })


def _dumps(dataset: str, method: str, manifest) -> dict:
    root = method_dir(dataset, method) / manifest.category
    if not (root / "validation_index.json").exists():
        raise ArtifactError(f"{method} has no validation dumps; fusion normalises with validation scores only",
                            path=root, fix=f"use methods that score the validation split, or run {method}@{dataset}")
    return {split: read_scores(root, split, manifest.fingerprint(split)) for split in ("test", "validation")}


def _subsample(maps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flat = maps.ravel()
    return flat if flat.size <= MAX_MAP_VALUES else rng.choice(flat, MAX_MAP_VALUES, replace=False)

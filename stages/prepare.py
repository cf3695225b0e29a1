"""Stage ``prepare@<dataset>``: validate the layout, run the preflight of the dataset's recipe
(stages/preflight.py: stops with the list of what is missing) and write one manifest per category."""

from __future__ import annotations

import difflib
from pathlib import Path

from ad_pipeline.data.layouts import build_manifest, list_categories
from ad_pipeline.errors import LayoutError
from ad_pipeline.io import atomic_dir, write_json
from stages import preflight
from stages.common import OPTIONS, log, manifest_dir, params


def run(dataset: str) -> None:
    p = params()
    if dataset not in p.datasets:
        close = difflib.get_close_matches(dataset, p.datasets, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise LayoutError(f"no dataset {dataset!r} in params.yaml.{hint} Known: {', '.join(p.datasets)}")
    ds = p.datasets[dataset]
    root = Path(ds.root)
    available = list_categories(ds.format, root)
    categories = available if ds.categories == "all" else list(ds.categories)
    for cat in categories:
        if cat not in available:
            close = difflib.get_close_matches(cat, available, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise LayoutError(f"unknown category {cat!r}.{hint} Found: {', '.join(available)}", path=root,
                              fix=f"fix datasets.{dataset}.categories in params.yaml")
    log.info("%s", preflight.require(p, dataset))  # everything the recipe needs, before any training
    with atomic_dir(manifest_dir(dataset)) as out:
        for cat in categories:
            manifest = build_manifest(dataset, ds.format, root, cat, val_fraction=ds.val_fraction, seed=p.seed,
                                      progress=not OPTIONS.quiet, require_masks=ds.require_masks)
            manifest.save(out / f"{cat}.json")
        write_json(out / "index.json", {"dataset": dataset, "format": ds.format, "categories": categories})

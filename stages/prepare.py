"""Stage ``prepare@<dataset>``: validate the layout and write one manifest per category.

cifar10: the pickles are decoded and written as PNGs to ``<manifest dir>/images/``, the
root of all four split manifests (so the manifests point at files every stage can load).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ad_pipeline.data.layouts import build_manifest, cifar10, list_categories
from ad_pipeline.errors import LayoutError
from ad_pipeline.io import atomic_dir, write_json
from stages.common import OPTIONS, manifest_dir, params


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
    with atomic_dir(manifest_dir(dataset)) as out:
        if ds.format == cifar10.NAME:
            data = cifar10.read_cifar10(root)
            cifar10.write_images(data, out / "images")
            for cat in categories:  # root: where atomic_dir moves the images
                cifar10.build_manifest(dataset, data, manifest_dir(dataset) / "images", cat,
                                       val_fraction=ds.val_fraction, seed=p.seed).save(out / f"{cat}.json")
        else:
            for cat in categories:
                manifest = build_manifest(dataset, ds.format, root, cat, val_fraction=ds.val_fraction, seed=p.seed,
                                          progress=not OPTIONS.quiet, require_masks=ds.require_masks)
                manifest.save(out / f"{cat}.json")
        write_json(out / "index.json", {"dataset": dataset, "format": ds.format, "categories": categories})

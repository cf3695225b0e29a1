"""Stage ``prepare@<dataset>``: validate the layout, run the preflight of the dataset's recipe
(stages/preflight.py: stops with the list of what is missing) and write one manifest per category.

Writes ``artifacts/<dataset>/manifest/`` (``index.json`` + ``<category>.json``, content-addressed:
see :mod:`ad_pipeline.data.manifest`) and ``artifacts/<dataset>/ground_truth/<category>.json``
(the masks' sha256, apart so that a changed mask re-runs evaluation only). A dataset whose data
were never put in place (root missing or holding only ``PUT_DATASET_HERE.md``) is not an error:
the index says ``{"absent": true, "categories": [], "missing": "<what and where>"}``, a loud
warning says what to download and where, and every downstream stage writes an ABSENT marker.

cifar10: the pickles are decoded and written as PNGs to ``<manifest dir>/images/``, the
root of all four split manifests (so the manifests point at files every stage can load).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ad_pipeline.data.layouts import absent_dataset, build_manifest, cifar10, list_categories
from ad_pipeline.errors import LayoutError
from ad_pipeline.io import atomic_dir, write_json
from stages import preflight
from stages.common import OPTIONS, ground_truth_dir, log, manifest_dir, params, warn_absent


def run(dataset: str) -> None:
    p = params()
    if dataset not in p.datasets:
        close = difflib.get_close_matches(dataset, p.datasets, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise LayoutError(f"no dataset {dataset!r} in params.yaml.{hint} Known: {', '.join(p.datasets)}")
    ds = p.datasets[dataset]
    root = Path(ds.root)
    missing = absent_dataset(ds.format, root)
    if missing is not None:
        warn_absent(f"prepare@{dataset}", dataset, f"dataset root {root}: {missing}")
        with atomic_dir(manifest_dir(dataset)) as out:
            write_json(out / "index.json", {"dataset": dataset, "format": ds.format, "absent": True,
                                            "categories": [], "missing": f"{root}: {missing}"})
        with atomic_dir(ground_truth_dir(dataset)) as out:
            (out / "ABSENT").write_text(f"{dataset}: data absent\n")
        return
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
        if ds.format == cifar10.NAME:
            data = cifar10.read_cifar10(root)
            cifar10.write_images(data, out / "images")
            images = manifest_dir(dataset) / "images"  # where atomic_dir moves them
            manifests = [cifar10.build_manifest(dataset, data, images, cat, val_fraction=ds.val_fraction, seed=p.seed)
                         for cat in categories]
        else:
            manifests = [build_manifest(dataset, ds.format, root, cat, val_fraction=ds.val_fraction, seed=p.seed,
                                        progress=not OPTIONS.quiet, require_masks=ds.require_masks)
                         for cat in categories]
        for manifest in manifests:
            manifest.save(out / f"{manifest.category}.json")
        write_json(out / "index.json", {"dataset": dataset, "format": ds.format, "categories": categories})
    with atomic_dir(ground_truth_dir(dataset)) as out:
        for manifest in manifests:
            write_json(out / f"{manifest.category}.json", manifest.mask_digests())

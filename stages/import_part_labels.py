"""``ad-pipeline import-part-labels``: PSAD's few-shot part labels into a dataset's category.

Writes ``<root>/<category>/aux/part_labels/train/good/<stem>.png`` (uint8 class id per pixel,
0 = background; the folder is replaced as a whole) and ``aux/parts.json`` (``num_classes``
incl. background, ``class_names``, ``source``; existing ``variants`` are kept). Each label must
be named like a ``train/good`` image and have its size. ``from_pseudo_labels`` bootstraps the
labels from CSAD's pseudo-labels of the same images (the first ``shots`` of its supervised
"good" subset; run ``pseudo_labels@<dataset>`` first); ``source`` then says so, and the part
segmenter's meta.json records it.
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ad_pipeline.errors import LayoutError, UserError
from ad_pipeline.io import atomic_dir, atomic_path
from ad_pipeline.segmentation.part_labels import BACKGROUND, PartLabels, read_part_labels
from ad_pipeline.segmentation.pseudo_labels import PseudoLabels
from stages.common import method_dir, params

PSEUDO_SOURCE = "csad-pseudo-labels"


def from_pseudo_labels(dataset: str, category: str, shots: int) -> PartLabels:
    pl_dir = method_dir(dataset, "pseudo_labels") / category
    if not (pl_dir / "pseudo_labels.json").exists():
        raise UserError(f"no CSAD pseudo-labels for {dataset}/{category}", path=pl_dir,
                        fix=f"run `dvc repro pseudo_labels@{dataset}` first (csad must list {dataset})")
    labels = PseudoLabels.load(pl_dir)
    rows = [int(i) for i in labels.good_indices][:shots]
    return PartLabels({Path(labels.paths[i]).stem: labels.label_maps[i] for i in rows},
                      [BACKGROUND, *[f"pseudo_{k}" for k in range(1, labels.num_classes)]])


def _check_against_images(labels: PartLabels, good: Path) -> None:
    images = {q.stem: q for q in good.iterdir() if q.is_file()} if good.is_dir() else {}
    for stem, mask in labels.masks.items():
        if stem not in images:
            raise LayoutError(f"label {stem!r} names no training image", path=good,
                              fix="name each label after its train/good image (same stem)")
        with Image.open(images[stem]) as im:
            if im.size != (mask.shape[1], mask.shape[0]):
                raise LayoutError(f"label {stem!r} is {mask.shape[1]}x{mask.shape[0]}, the image "
                                  f"{im.size[0]}x{im.size[1]}", path=images[stem],
                                  fix="annotate the original image (no resizing)")


def run(dataset: str, category: str, fmt: str | None, source: Path | None, classes: list[str] | None,
        pseudo: bool, shots: int) -> PartLabels:
    p = params()
    if dataset not in p.datasets:
        raise UserError(f"no dataset {dataset!r} in params.yaml", fix=f"known: {', '.join(p.datasets)}")
    if pseudo == (fmt is not None):
        raise UserError("give either --format and --source, or --from-pseudo-labels")
    cat_root = Path(p.datasets[dataset].root) / category
    if pseudo:
        labels, origin = from_pseudo_labels(dataset, category, shots), PSEUDO_SOURCE
    else:
        if source is None:
            raise UserError("--format needs --source (the exported annotation file or folder)")
        labels, origin = read_part_labels(fmt, source, classes), f"{fmt}:{source}"
    _check_against_images(labels, cat_root / "train" / "good")
    with atomic_dir(cat_root / "aux" / "part_labels" / "train" / "good") as out:
        for stem, mask in labels.masks.items():
            Image.fromarray(mask).save(out / f"{stem}.png")
    parts_path = cat_root / "aux" / "parts.json"
    old = json.loads(parts_path.read_text()) if parts_path.exists() else {}
    info = {"num_classes": labels.num_classes, "class_names": labels.class_names, "source": origin}
    info |= {"variants": old["variants"]} if "variants" in old else {}
    with atomic_path(parts_path) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return labels

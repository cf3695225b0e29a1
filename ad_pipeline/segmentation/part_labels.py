"""PSAD's few-shot part labels from the formats people annotate with.

Every reader returns :class:`PartLabels`: per image stem a uint8 class map [H,W] (0 =
background, 1..K the parts) and the class names by id. Formats:

* ``labelme``: a folder of LabelMe JSON files (``imagePath``, ``imageHeight``/``imageWidth``,
  ``shapes`` of ``shape_type`` polygon / rectangle with ``label`` and ``points``), rasterised
  with PIL in file order (a later shape paints over an earlier one);
* ``coco``: one COCO JSON (``images``, ``annotations`` with polygon or RLE ``segmentation``,
  ``categories``), rasterised with pycocotools; annotations paint in file order;
* ``cvat``: CVAT's "Segmentation mask 1.1" export (``labelmap.txt`` + ``SegmentationClass/*.png``
  in the label colours);
* ``png``: a folder of single-channel (indexed or grayscale) PNGs holding class ids.

Label names map to ids by ``class_names`` when given (index = id; a ``background`` first
entry is id 0), else integer labels are the ids themselves (PSAD's own annotations), else the
sorted distinct names get 1..K (COCO: the categories in id order get 1..K).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ad_pipeline.errors import LayoutError

FORMATS = ("labelme", "coco", "cvat", "png")
BACKGROUND = "background"


@dataclass
class PartLabels:
    masks: dict[str, np.ndarray]  # image stem → uint8 [H,W] class ids
    class_names: list[str]  # index = class id; [0] = background

    @property
    def num_classes(self) -> int:
        """Classes incl. background: max(names, highest id + 1)."""
        top = max((int(m.max()) for m in self.masks.values()), default=0)
        return max(len(self.class_names), top + 1)


def _class_ids(names: Sequence[str], class_names: Sequence[str] | None,
               source: Path) -> tuple[dict[str, int], list[str]]:
    if class_names:
        ordered = list(class_names) if class_names[0] == BACKGROUND else [BACKGROUND, *class_names]
        unknown = sorted(set(names) - set(ordered))
        if unknown:
            raise LayoutError(f"labels {', '.join(unknown)} are not in the class list", path=source,
                              fix=f"add them to --classes (now: {', '.join(ordered[1:])})")
        return {n: i for i, n in enumerate(ordered)}, ordered
    if all(n.isdigit() for n in names):
        top = max((int(n) for n in names), default=0)
        return {n: int(n) for n in names}, [BACKGROUND, *[str(i) for i in range(1, top + 1)]]
    ordered = [BACKGROUND, *sorted(set(names) - {BACKGROUND})]
    return {n: i for i, n in enumerate(ordered)}, ordered


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise LayoutError(f"cannot read annotation JSON ({e})", path=path, fix="export the file again") from None


def from_labelme(folder: Path, class_names: Sequence[str] | None = None) -> PartLabels:
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise LayoutError("no LabelMe .json files", path=folder, fix="point --source at the folder of LabelMe files")
    docs = {f: _json(f) for f in files}
    ids, names = _class_ids([s["label"] for d in docs.values() for s in d.get("shapes", [])], class_names, Path(folder))
    masks = {}
    for f, doc in docs.items():
        if "imageWidth" not in doc or "imageHeight" not in doc:
            raise LayoutError("LabelMe file without imageWidth/imageHeight", path=f, fix="save it with LabelMe ≥ 4")
        canvas = Image.new("L", (int(doc["imageWidth"]), int(doc["imageHeight"])), 0)
        draw = ImageDraw.Draw(canvas)
        for shape in doc.get("shapes", []):
            points = [tuple(map(float, p)) for p in shape["points"]]
            kind = shape.get("shape_type", "polygon")
            if kind == "polygon":
                draw.polygon(points, fill=ids[shape["label"]])
            elif kind == "rectangle":
                (x0, y0), (x1, y1) = points
                draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], fill=ids[shape["label"]])
            else:
                raise LayoutError(f"shape_type {kind!r} is not an area", path=f, fix="use polygons or rectangles")
        masks[Path(doc.get("imagePath") or f.name).stem] = np.asarray(canvas, dtype=np.uint8)
    return PartLabels(masks, names)


def from_coco(path: Path, class_names: Sequence[str] | None = None) -> PartLabels:
    from pycocotools import mask as mask_utils

    doc = _json(Path(path))
    cats = {c["id"]: c["name"] for c in doc.get("categories", [])}
    if class_names is None:
        class_names = [cats[i] for i in sorted(cats)]  # categories by COCO id → 1..K
    ids, names = _class_ids(list(cats.values()), class_names, Path(path))
    images = {im["id"]: im for im in doc.get("images", [])}
    maps = {i: np.zeros((int(im["height"]), int(im["width"])), np.uint8) for i, im in images.items()}
    for ann in doc.get("annotations", []):
        im = images.get(ann["image_id"])
        if im is None:
            raise LayoutError(f"annotation {ann.get('id')} names unknown image_id {ann['image_id']}", path=path)
        h, w = int(im["height"]), int(im["width"])
        seg = ann["segmentation"]
        if isinstance(seg, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = seg
        maps[ann["image_id"]][mask_utils.decode(rle).astype(bool)] = ids[cats[ann["category_id"]]]
    return PartLabels({Path(images[i]["file_name"]).stem: m for i, m in maps.items()}, names)


def from_cvat(folder: Path, class_names: Sequence[str] | None = None) -> PartLabels:
    folder = Path(folder)
    labelmap = folder / "labelmap.txt"
    if not labelmap.is_file():
        raise LayoutError("no labelmap.txt (CVAT 'Segmentation mask 1.1' export)", path=folder,
                          fix="export the task as 'Segmentation mask 1.1' and unzip it there")
    colours: dict[tuple[int, int, int], str] = {}
    for line in labelmap.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, rgb = line.split(":")[:2]
            colours[tuple(int(v) for v in rgb.split(","))] = name
    ids, names = _class_ids([n for n in colours.values() if n != BACKGROUND], class_names, labelmap)
    ids[BACKGROUND] = 0
    masks = {}
    for f in sorted((folder / "SegmentationClass").glob("*.png")):
        rgb = np.asarray(Image.open(f).convert("RGB"))
        out = np.zeros(rgb.shape[:2], np.uint8)
        known = np.zeros(rgb.shape[:2], bool)
        for colour, name in colours.items():
            hit = np.all(rgb == colour, axis=-1)
            out[hit], known[hit] = ids[name], True
        if not known.all():
            raise LayoutError(f"{int((~known).sum())} pixels have a colour not in labelmap.txt", path=f,
                              fix="export again without anti-aliasing")
        masks[f.stem] = out
    return PartLabels(masks, names)


def from_png(folder: Path, class_names: Sequence[str] | None = None) -> PartLabels:
    masks = {}
    for f in sorted(Path(folder).glob("*.png")):
        image = Image.open(f)
        if image.mode not in ("P", "L"):
            raise LayoutError(f"label PNG has mode {image.mode}, expected one channel of class ids (P or L)", path=f,
                              fix="save the class ids as an indexed or grayscale PNG (CVAT exports: --format cvat)")
        masks[f.stem] = np.asarray(image, dtype=np.uint8)
    if not masks:
        raise LayoutError("no .png label files", path=folder, fix="point --source at the folder of label PNGs")
    top = max(int(m.max()) for m in masks.values())
    names = list(class_names) if class_names else [BACKGROUND, *[str(i) for i in range(1, top + 1)]]
    return PartLabels(masks, names if names[0] == BACKGROUND else [BACKGROUND, *names])


READERS = {"labelme": from_labelme, "coco": from_coco, "cvat": from_cvat, "png": from_png}


def read_part_labels(fmt: str, source: Path, class_names: Sequence[str] | None = None) -> PartLabels:
    if fmt not in READERS:
        raise LayoutError(f"unknown label format {fmt!r}", fix=f"use one of {', '.join(FORMATS)}")
    return READERS[fmt](Path(source), class_names)

"""VisA: the 1cls preprocessing of the raw archive into an MVTec-like tree, and that tree's layout.

Converted tree: ``<object>/{train,test}/{good,bad}/<name>.JPG`` and
``<object>/ground_truth/bad/<image stem>.png`` (binary 0/255; the raw masks hold region ids).
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image
from tqdm import tqdm

from ad_pipeline.data.images import open_image
from ad_pipeline.data.layouts.common import LayoutSpec, listed
from ad_pipeline.errors import LayoutError
from ad_pipeline.io import atomic_dir

SPLIT_CSV = "split_csv/1cls.csv"
_COLUMNS = ("object", "split", "label", "image", "mask")
_CLASS_FOLDER = {"normal": "good", "anomaly": "bad"}

SPEC = LayoutSpec(
    name="visa",
    how_to_get="extract VisA_20220922.tar into the dataset's raw_root and run prepare, which converts it "
    "(convert_visa)",
    image_exts=(".jpg", ".jpeg", ".png"),
    mask_suffixes=("",),
    sketch="""  <root>/<object>/
    train/good/*.JPG
    test/good/*.JPG
    test/bad/*.JPG
    ground_truth/bad/<image stem>.png   0/255""",
)


@dataclass(frozen=True)
class _Row:
    """One line of 1cls.csv; ``image``/``mask`` are relative to the raw VisA root."""

    object: str
    split: str
    label: str
    image: str
    mask: str

    @property
    def folder(self) -> str:
        return f"{self.split}/{_CLASS_FOLDER[self.label]}"


def _read_split_csv(raw_root: Path) -> list[_Row]:
    """Rows of ``split_csv/1cls.csv`` after checking columns, values and referenced files."""
    path = raw_root / SPLIT_CSV
    fix = f"point raw_root at the extracted VisA archive (the folder holding {SPLIT_CSV} and the object folders)"
    if not path.is_file():
        raise LayoutError("VisA split file not found", path=path, fix=fix)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        header = [c.strip() for c in reader.fieldnames or []]
        if any(c not in header for c in _COLUMNS):
            raise LayoutError(f"expected the columns {','.join(_COLUMNS)}, got {','.join(header) or 'nothing'}",
                              path=path, fix=fix)
        reader.fieldnames = header
        rows = [_Row(*((r[c] or "").strip() for c in _COLUMNS)) for r in reader]
    if not rows:
        raise LayoutError("no rows", path=path, fix=fix)
    for line, row in enumerate(rows, start=2):
        problem = _row_problem(row)
        if problem:
            raise LayoutError(f"line {line}: {problem}", path=path, fix=f"fix the line or re-extract the archive; {fix}")
    missing = [f for r in rows for f in (r.image, r.mask) if f and not (raw_root / f).is_file()]
    if missing:
        raise LayoutError(f"{len(missing)} file(s) listed in {SPLIT_CSV} do not exist: {listed(missing)}",
                          path=raw_root, fix=f"re-extract the archive completely; {fix}")
    clashes = [k for k, n in Counter((r.object, r.folder, PurePosixPath(r.image).name) for r in rows).items() if n > 1]
    if clashes:
        raise LayoutError(f"rows map to the same output file: {listed(['/'.join(c) for c in clashes])}",
                          path=path, fix="remove the duplicate rows")
    return rows


def _row_problem(row: _Row) -> str | None:
    if not row.object or "/" in row.object or row.object.startswith("."):
        return f"bad object name {row.object!r}"
    if row.split not in ("train", "test"):
        return f"split must be train or test, got {row.split!r}"
    if row.label not in _CLASS_FOLDER:
        return f"label must be normal or anomaly, got {row.label!r}"
    if row.label == "anomaly" and row.split == "train":
        return "an anomaly in the train split (1cls trains on normal images only)"
    if not row.image:
        return "empty image path"
    if row.label == "anomaly" and not row.mask:
        return f"anomalous image {row.image} has no mask"
    return None


def _write_binary_mask(src: Path, dest: Path) -> None:
    """Write ``src`` (region ids 1, 2, … in any mode) as an 8-bit PNG: non-zero → 255."""
    ids = np.asarray(open_image(src))
    anomalous = ids.any(axis=-1) if ids.ndim == 3 else ids != 0
    Image.fromarray(anomalous.astype(np.uint8) * 255).save(dest)


def convert_visa(raw_root: Path, out_root: Path, *, progress: bool = True) -> dict[str, dict[str, int]]:
    """Convert raw VisA into the 1cls MVTec-like tree at ``out_root`` (replaced atomically as a whole).

    Returns the image counts per object and folder, e.g. ``{"candle": {"train/good": 900,
    "test/good": 100, "test/bad": 100}}``. Re-running gives the same tree.
    """
    raw_root, out_root = Path(raw_root), Path(out_root)
    rows = _read_split_csv(raw_root)
    counts: dict[str, Counter] = {}
    with atomic_dir(out_root) as tmp:
        for row in tqdm(rows, desc="converting VisA", unit="img", disable=not progress):
            image = PurePosixPath(row.image)
            dest = tmp / row.object / row.folder / image.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(raw_root / row.image, dest)
            if row.label == "anomaly":
                mask_dir = tmp / row.object / "ground_truth" / "bad"
                mask_dir.mkdir(parents=True, exist_ok=True)
                _write_binary_mask(raw_root / row.mask, mask_dir / f"{image.stem}.png")
            counts.setdefault(row.object, Counter())[row.folder] += 1
    return {obj: dict(sorted(c.items())) for obj, c in sorted(counts.items())}

"""VisA 1cls preprocessing on a tiny fake raw tree: counts, binary masks, idempotence, the
converted tree as a `visa` manifest, and bad csv/missing files -> LayoutError."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ad_pipeline.data.layouts import build_manifest, convert_visa, list_categories
from ad_pipeline.errors import LayoutError
from test_layouts import write_image

HEADER = "object,split,label,image,mask\n"
SIZE = (12, 20)  # (height, width): non-square like VisA


def region_ids(size: tuple[int, int] = SIZE) -> np.ndarray:
    """A raw VisA-style mask: region 1 top-left, region 2 bottom-right, 0 elsewhere."""
    ids = np.zeros(size, dtype=np.uint8)
    ids[:3, :4] = 1
    ids[-2:, -5:] = 2
    return ids


def make_raw_visa(root: Path, objects: tuple[str, ...] = ("candle", "pcb1")) -> Path:
    """Per object: 5 train normal, 2 test normal, 2 test anomalies (multi-valued masks)."""
    lines = [HEADER]
    for obj in objects:
        images = root / obj / "Data/Images"
        for i in range(7):
            write_image(images / "Normal" / f"{i:04d}.JPG", SIZE, value=100 + i, fmt="JPEG")
            lines.append(f"{obj},{'train' if i < 5 else 'test'},normal,{obj}/Data/Images/Normal/{i:04d}.JPG,\n")
        for i in range(2):
            write_image(images / "Anomaly" / f"{i:03d}.JPG", SIZE, value=50, fmt="JPEG")
            mask = root / obj / "Data/Masks/Anomaly" / f"{i:03d}.png"
            mask.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(region_ids()).save(mask)
            lines.append(f"{obj},test,anomaly,{obj}/Data/Images/Anomaly/{i:03d}.JPG,{obj}/Data/Masks/Anomaly/{i:03d}.png\n")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv/1cls.csv").write_text("".join(lines))
    return root


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def raw(tmp_path) -> Path:
    return make_raw_visa(tmp_path / "raw")


def test_convert_counts_layout_and_binary_masks(raw, tmp_path):
    out = tmp_path / "visa"
    counts = convert_visa(raw, out, progress=False)
    expected = {"test/bad": 2, "test/good": 2, "train/good": 5}
    assert counts == {"candle": expected, "pcb1": expected}
    assert (out / "candle/train/good/0004.JPG").read_bytes() == (raw / "candle/Data/Images/Normal/0004.JPG").read_bytes()
    assert sorted(p.name for p in (out / "pcb1/test/bad").iterdir()) == ["000.JPG", "001.JPG"]
    mask = np.asarray(Image.open(out / "pcb1/ground_truth/bad/001.png"))
    assert mask.dtype == np.uint8 and mask.shape == SIZE
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert np.array_equal(mask == 255, region_ids() != 0)
    assert list_categories("visa", out) == ["candle", "pcb1"]


def test_reconversion_is_idempotent_and_replaces_stale_files(raw, tmp_path):
    out = tmp_path / "visa"
    convert_visa(raw, out, progress=False)
    first = tree_digest(out)
    write_image(out / "candle/train/good/stale.JPG", fmt="JPEG")
    convert_visa(raw, out, progress=False)
    assert tree_digest(out) == first
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp dirs left


def test_converted_tree_builds_a_visa_manifest(raw, tmp_path):
    out = tmp_path / "visa"
    convert_visa(raw, out, progress=False)
    m = build_manifest("visa", "visa", out, "candle", val_fraction=0.2, progress=False)
    assert [len(m.split(s)) for s in ("train", "validation", "test")] == [4, 1, 4]
    assert [(s.path, s.label, s.mask_paths) for s in m.split("test")] == [
        ("test/good/0005.JPG", 0, ()), ("test/good/0006.JPG", 0, ()),
        ("test/bad/000.JPG", 1, ("ground_truth/bad/000.png",)), ("test/bad/001.JPG", 1, ("ground_truth/bad/001.png",))]


def test_missing_csv(tmp_path):
    with pytest.raises(LayoutError, match="VisA split file not found") as e:
        convert_visa(tmp_path, tmp_path / "out", progress=False)
    assert "split_csv/1cls.csv" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_malformed_header(raw, tmp_path):
    (raw / "split_csv/1cls.csv").write_text("object,split,image\ncandle,train,x.JPG\n")
    with pytest.raises(LayoutError, match="expected the columns object,split,label,image,mask, got object,split,image"):
        convert_visa(raw, tmp_path / "out", progress=False)


@pytest.mark.parametrize("row, message", [
    ("candle,val,normal,candle/Data/Images/Normal/0000.JPG,", "line 2: split must be train or test, got 'val'"),
    ("candle,test,broken,candle/Data/Images/Normal/0000.JPG,", "line 2: label must be normal or anomaly"),
    ("candle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,", "line 2: anomalous image .* has no mask"),
    ("candle,train,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png",
     "line 2: an anomaly in the train split"),
])
def test_bad_rows(raw, tmp_path, row, message):
    (raw / "split_csv/1cls.csv").write_text(HEADER + row + "\n")
    with pytest.raises(LayoutError, match=message):
        convert_visa(raw, tmp_path / "out", progress=False)


def test_missing_referenced_file_leaves_previous_output_untouched(raw, tmp_path):
    out = tmp_path / "visa"
    convert_visa(raw, out, progress=False)
    before = tree_digest(out)
    (raw / "pcb1/Data/Masks/Anomaly/001.png").unlink()
    with pytest.raises(LayoutError, match=r"1 file\(s\) listed in split_csv/1cls.csv do not exist: "
                                          r"pcb1/Data/Masks/Anomaly/001\.png"):
        convert_visa(raw, out, progress=False)
    assert tree_digest(out) == before


def test_duplicate_rows(raw, tmp_path):
    csv = raw / "split_csv/1cls.csv"
    csv.write_text(csv.read_text() + "candle,train,normal,candle/Data/Images/Normal/0000.JPG,\n")
    with pytest.raises(LayoutError, match="rows map to the same output file: candle/train/good/0000.JPG"):
        convert_visa(raw, tmp_path / "out", progress=False)

"""PSAD part labels: each import format round-trips a hand-made example; bad input → the documented error."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from ad_pipeline.errors import LayoutError, UserError
from ad_pipeline.segmentation.part_labels import read_part_labels
from ad_pipeline.segmentation.pseudo_labels import PseudoLabels

H, W = 16, 20


def _truth() -> np.ndarray:
    """Class 1 = rows 3..8 × cols 2..7, class 2 = rows 5..12 × cols 6..15 painted over it."""
    m = np.zeros((H, W), np.uint8)
    m[3:9, 2:8] = 1
    m[5:13, 6:16] = 2
    return m


def _rect(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def test_labelme_polygons_and_rectangles_paint_in_file_order(tmp_path):
    # PIL fills polygon corners inclusively: pixels 2..7 need corners at 2 and 7
    doc = {"imagePath": "000.png", "imageHeight": H, "imageWidth": W, "shapes": [
        {"label": "lid", "points": _rect(2, 3, 7, 8), "shape_type": "polygon"},
        {"label": "orange", "points": [[6, 5], [15, 12]], "shape_type": "rectangle"}]}
    (tmp_path / "000.json").write_text(json.dumps(doc))
    labels = read_part_labels("labelme", tmp_path, ["lid", "orange"])
    np.testing.assert_array_equal(labels.masks["000"], _truth())
    assert labels.class_names == ["background", "lid", "orange"] and labels.num_classes == 3


def test_labelme_integer_labels_are_the_class_ids(tmp_path):
    doc = {"imagePath": "x/007.png", "imageHeight": H, "imageWidth": W,
           "shapes": [{"label": "4", "points": _rect(2, 3, 7, 8)}]}
    (tmp_path / "a.json").write_text(json.dumps(doc))
    labels = read_part_labels("labelme", tmp_path)
    assert labels.masks["007"].max() == 4 and labels.num_classes == 5


def test_labelme_label_outside_the_class_list_is_named(tmp_path):
    doc = {"imagePath": "000.png", "imageHeight": H, "imageWidth": W,
           "shapes": [{"label": "banana", "points": _rect(2, 3, 7, 8)}]}
    (tmp_path / "000.json").write_text(json.dumps(doc))
    with pytest.raises(LayoutError, match="labels banana are not in the class list"):
        read_part_labels("labelme", tmp_path, ["lid"])


def test_coco_polygons_and_rle_round_trip(tmp_path):
    from pycocotools import mask as mask_utils

    truth = _truth()
    rle = mask_utils.encode(np.asfortranarray((truth == 2).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    doc = {"images": [{"id": 7, "file_name": "000.png", "height": H, "width": W}],
           "categories": [{"id": 3, "name": "lid"}, {"id": 9, "name": "orange"}],
           "annotations": [  # pycocotools fills pixel centres inside the polygon: corners at 2 and 8
               {"id": 1, "image_id": 7, "category_id": 3, "segmentation": [sum(_rect(2, 3, 8, 9), [])]},
               {"id": 2, "image_id": 7, "category_id": 9, "segmentation": rle}]}
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    labels = read_part_labels("coco", tmp_path / "coco.json")
    np.testing.assert_array_equal(labels.masks["000"], truth)
    assert labels.class_names == ["background", "lid", "orange"]


def test_cvat_segmentation_masks_round_trip(tmp_path):
    colours = {0: (0, 0, 0), 1: (250, 50, 83), 2: (36, 179, 83)}
    (tmp_path / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                           "lid:250,50,83::\norange:36,179,83::\n")
    (tmp_path / "SegmentationClass").mkdir()
    rgb = np.array([colours[int(v)] for v in _truth().ravel()], np.uint8).reshape(H, W, 3)
    Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / "000.png")
    labels = read_part_labels("cvat", tmp_path)
    np.testing.assert_array_equal(labels.masks["000"], _truth())
    rgb[0, 0] = (1, 2, 3)
    Image.fromarray(rgb).save(tmp_path / "SegmentationClass" / "000.png")
    with pytest.raises(LayoutError, match="1 pixels have a colour not in labelmap.txt"):
        read_part_labels("cvat", tmp_path)


def test_indexed_png_round_trips_and_rgb_is_refused(tmp_path):
    im = Image.fromarray(_truth(), mode="L").convert("P")
    im.save(tmp_path / "000.png")
    labels = read_part_labels("png", tmp_path)
    np.testing.assert_array_equal(labels.masks["000"], _truth())
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(tmp_path / "001.png")
    with pytest.raises(LayoutError, match="mode RGB, expected one channel"):
        read_part_labels("png", tmp_path)


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    """A one-category dataset with three train/good images of W×H, and its params file."""
    good = tmp_path / "data" / "ds" / "cat" / "train" / "good"
    good.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((H, W, 3), 40 * i, np.uint8)).save(good / f"{i:03d}.png")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"datasets": {"ds": {"root": "data/ds", "format": "mvtec_loco", "profile": {}}}}))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "data" / "ds" / "cat"


def _import(*args):
    from typer.testing import CliRunner

    from stages.cli import app

    return CliRunner().invoke(app, ["--quiet", "import-part-labels", *args], catch_exceptions=False)


def test_import_writes_labels_and_parts_json(dataset, tmp_path):
    src = tmp_path / "export"
    src.mkdir()
    Image.fromarray(_truth(), mode="L").save(src / "001.png")
    result = _import("ds", "cat", "--format", "png", "--source", str(src), "--classes", "lid,orange")
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.asarray(Image.open(dataset / "aux/part_labels/train/good/001.png")), _truth())
    parts = json.loads((dataset / "aux/parts.json").read_text())
    assert parts == {"num_classes": 3, "class_names": ["background", "lid", "orange"], "source": f"png:{src}"}


def test_import_refuses_a_label_without_its_image_or_of_another_size(dataset, tmp_path):
    src = tmp_path / "export"
    src.mkdir()
    Image.fromarray(_truth(), mode="L").save(src / "042.png")
    with pytest.raises(LayoutError, match="label '042' names no training image"):
        _import("ds", "cat", "--format", "png", "--source", str(src))
    os.remove(src / "042.png")
    Image.fromarray(_truth()[:8], mode="L").save(src / "000.png")
    with pytest.raises(LayoutError, match="label '000' is 20x8, the image 20x16"):
        _import("ds", "cat", "--format", "png", "--source", str(src))
    assert not (dataset / "aux").exists()  # nothing half-written


def test_bootstrap_from_csad_pseudo_labels_is_recorded(dataset, tmp_path):
    maps = [np.full((H, W), k, np.uint8) for k in range(3)]
    PseudoLabels(paths=[str(dataset / f"train/good/{i:03d}.png") for i in range(3)], label_maps=maps,
                 histograms=np.ones((3, 2), np.float32) / 2, good_indices=np.array([2, 0])).save(
        tmp_path / "artifacts" / "ds" / "pseudo_labels" / "cat")
    assert _import("ds", "cat", "--from-pseudo-labels", "--shots", "1").exit_code == 0
    assert sorted(p.name for p in (dataset / "aux/part_labels/train/good").iterdir()) == ["002.png"]
    assert json.loads((dataset / "aux/parts.json").read_text())["source"] == "csad-pseudo-labels"


def test_bootstrap_without_pseudo_labels_says_which_stage_to_run(dataset):
    with pytest.raises(UserError, match=r"no CSAD pseudo-labels for ds/cat(?s:.*)dvc repro pseudo_labels@ds"):
        _import("ds", "cat", "--from-pseudo-labels")


def test_missing_labels_give_the_documented_error(dataset):
    from stages.part_segmenter import pick_shots

    class Fake:  # what pick_shots reads from a Manifest
        root = dataset

        def paths(self, split):
            return sorted((dataset / "train" / "good").iterdir())

    with pytest.raises(LayoutError, match=r"no few-shot part labels found(?s:.*)aux/parts.json"):
        pick_shots(Fake(), 5)

"""Dataset layout loaders: happy paths per format, ordering/holdout determinism, every bad
input -> its LayoutError, and images of any mode loading as RGB. Trees are a few 16×16 PNGs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ad_pipeline.data.images import load_rgb
from ad_pipeline.data.layouts import FORMATS, LAYOUTS, build_manifest, list_categories
from ad_pipeline.data.layouts.common import holdout_names
from ad_pipeline.errors import LayoutError, ParamsError

SIZE = (16, 16)  # (height, width)


def write_image(path: Path, size: tuple[int, int] = SIZE, value: int = 128, fmt: str | None = None) -> Path:
    """An RGB image filled with ``value`` (format from the extension unless ``fmt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(path, format=fmt)
    return path


def write_mask(path: Path, size: tuple[int, int] = SIZE, value: int = 255) -> Path:
    """A single-channel mask: ``value`` in the top-left quarter, 0 elsewhere."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros(size, dtype=np.uint8)
    arr[: size[0] // 2, : size[1] // 2] = value
    Image.fromarray(arr).save(path)
    return path


def make_mvtec(root: Path, category: str = "widget", *, train: int = 10, test_good: int = 2,
               defects: dict[str, int] | None = None, reverse: bool = False) -> Path:
    """MVTec AD tree ``root/category`` with ``000.png…`` names; ``reverse`` creates files in reverse order."""
    defects = {"scratch": 2, "hole": 1} if defects is None else defects
    cat = root / category
    jobs = [(cat / "train/good" / f"{i:03d}.png", None) for i in range(train)]
    jobs += [(cat / "test/good" / f"{i:03d}.png", None) for i in range(test_good)]
    for defect, n in defects.items():
        jobs += [(cat / "test" / defect / f"{i:03d}.png", cat / "ground_truth" / defect / f"{i:03d}_mask.png")
                 for i in range(n)]
    for image, mask in reversed(jobs) if reverse else jobs:
        write_image(image)
        if mask is not None:
            write_mask(mask)
    return cat


LOCO_CONFIG = [
    {"defect_name": "missing_part", "pixel_value": 251, "saturation_threshold": 1.0, "relative_saturation": True},
    {"defect_name": "scratch", "pixel_value": 252, "saturation_threshold": 120, "relative_saturation": False},
]


def make_loco(root: Path, category: str = "tray") -> Path:
    """LOCO tree: 4 train, 2 validation, 2 test good, 2 logical (001 has two channels), 1 structural."""
    cat = root / category
    for split, n in (("train/good", 4), ("validation/good", 2), ("test/good", 2)):
        for i in range(n):
            write_image(cat / split / f"{i:03d}.png")
    for kind, n in (("logical_anomalies", 2), ("structural_anomalies", 1)):
        for i in range(n):
            write_image(cat / "test" / kind / f"{i:03d}.png")
            write_mask(cat / "ground_truth" / kind / f"{i:03d}" / "000.png", value=251)
    write_mask(cat / "ground_truth/logical_anomalies/001/001.png", value=252)
    (cat / "defects_config.json").write_text(json.dumps(LOCO_CONFIG))
    return cat


def build(root: Path, category: str = "widget", fmt: str = "mvtec_ad", **kw):
    return build_manifest("ds", fmt, root, category, progress=False, **kw)


def rows(manifest) -> list[tuple]:
    return [(s.path, s.split, s.label, s.defect_type, s.mask_paths, s.holdout) for s in manifest.samples]


# ---------------------------------------------------------------- happy paths


def test_formats_match_layout_registry():
    assert FORMATS == ("mvtec_ad", "mvtec_loco", "visa", "btad", "folder", "cifar10")
    assert tuple(LAYOUTS) == FORMATS[:-1]  # cifar10 is read from pickles, not checked as a folder tree


def test_mvtec_ad_counts_labels_masks_and_order(tmp_path):
    cat = make_mvtec(tmp_path)
    m = build(tmp_path)
    assert m.root == cat and m.format == "mvtec_ad" and m.category == "widget" and m.extras == {}
    assert [len(m.split(s)) for s in ("train", "validation", "test")] == [9, 1, 5]
    assert all(s.holdout for s in m.split("validation")) and not any(s.holdout for s in m.split("train"))
    test = m.split("test")
    assert [s.path for s in test] == ["test/good/000.png", "test/good/001.png", "test/hole/000.png",
                                      "test/scratch/000.png", "test/scratch/001.png"]
    assert m.labels("test") == [0, 0, 1, 1, 1]
    assert test[3].mask_paths == ("ground_truth/scratch/000_mask.png",)
    assert test[0].mask_paths == ()
    assert all((m.root / p).is_file() for s in m.samples for p in (s.path, *s.mask_paths))
    # train then validation then test; within train, names sorted
    assert [s.split for s in m.samples] == ["train"] * 9 + ["validation"] + ["test"] * 5
    train_names = [s.path for s in m.split("train")]
    assert train_names == sorted(train_names)


def test_manifest_roundtrip_through_json(tmp_path):
    make_mvtec(tmp_path)
    m = build(tmp_path)
    m.save(tmp_path / "manifest.json")
    again = type(m).load(tmp_path / "manifest.json")
    assert rows(again) == rows(m) and again.fingerprint("test") == m.fingerprint("test")


def test_holdout_is_seeded_and_sized(tmp_path):
    names = [f"{i:03d}.png" for i in range(20)]
    assert holdout_names(names, 0.25, 7) == holdout_names(list(reversed(names)), 0.25, 7)
    assert len(holdout_names(names, 0.25, 7)) == 5
    assert holdout_names(names, 0.25, 7) != holdout_names(names, 0.25, 8)
    assert len(holdout_names(names[:10], 0.3, 0)) == 3  # 0.3·10 is 3.0000000000000004 in floats
    assert len(holdout_names(names[:10], 0.15, 0)) == 2  # ceil(1.5): EfficientAD keeps int(0.85·10) = 8
    assert holdout_names(names, 0.0, 0) == set()
    perm = np.random.default_rng(7).permutation(20)[:5]
    assert holdout_names(names, 0.25, 7) == {names[i] for i in perm}


def test_val_fraction_zero_gives_no_validation_split(tmp_path):
    make_mvtec(tmp_path)
    m = build(tmp_path, val_fraction=0.0)
    assert len(m.split("train")) == 10 and m.split("validation") == []


@pytest.mark.parametrize("fraction", [1.0, -0.1, 0.95])
def test_bad_val_fraction_is_a_params_error(tmp_path, fraction):
    make_mvtec(tmp_path)
    with pytest.raises(ParamsError, match="val_fraction"):
        build(tmp_path, val_fraction=fraction)


def test_order_and_holdout_independent_of_creation_order(tmp_path):
    make_mvtec(tmp_path / "a", train=20)
    make_mvtec(tmp_path / "b", train=20, reverse=True)
    a, b = build(tmp_path / "a", seed=3), build(tmp_path / "b", seed=3)
    assert rows(a) == rows(b)
    assert a.fingerprint("validation") == b.fingerprint("validation")
    assert rows(build(tmp_path / "a", seed=3)) == rows(a)
    assert [s.path for s in build(tmp_path / "a", seed=4).split("validation")] != [s.path for s in a.split("validation")]


def test_list_categories_sorted_and_filtered(tmp_path):
    make_mvtec(tmp_path, "zipper")
    make_mvtec(tmp_path, "bottle")
    (tmp_path / "docs").mkdir()
    (tmp_path / ".cache" / "train").mkdir(parents=True)
    (tmp_path / "readme.txt").write_text("x")
    assert list_categories("mvtec_ad", tmp_path) == ["bottle", "zipper"]


def test_mvtec_loco_validation_folder_channels_and_config(tmp_path):
    cat = make_loco(tmp_path)
    m = build(tmp_path, "tray", "mvtec_loco", val_fraction=0.5)
    assert [len(m.split(s)) for s in ("train", "validation", "test")] == [4, 2, 5]
    assert [s.path for s in m.split("validation")] == ["validation/good/000.png", "validation/good/001.png"]
    assert not any(s.holdout for s in m.samples)
    assert m.extras == {"defects_config": "defects_config.json"} and (m.root / m.extras["defects_config"]).is_file()
    by_path = {s.path: s for s in m.samples}
    assert by_path["test/logical_anomalies/001.png"].mask_paths == (
        "ground_truth/logical_anomalies/001/000.png", "ground_truth/logical_anomalies/001/001.png")
    assert by_path["test/structural_anomalies/000.png"].defect_type == "structural_anomalies"
    assert [s.defect_type for s in m.split("test")] == ["good", "good", "logical_anomalies", "logical_anomalies",
                                                        "structural_anomalies"]
    assert m.root == cat


def test_btad_ok_ko_with_mixed_bmp_png_masks(tmp_path):
    cat = tmp_path / "01"
    for i in range(5):
        write_image(cat / "train/ok" / f"{i:04d}.bmp")
    write_image(cat / "test/ok/0000.bmp")
    write_image(cat / "test/ko/0000.bmp")
    write_image(cat / "test/ko/0001.png")
    write_mask(cat / "ground_truth/ko/0000.png")
    write_mask(cat / "ground_truth/ko/0001.bmp")
    m = build(tmp_path, "01", "btad", val_fraction=0.2)
    assert [len(m.split(s)) for s in ("train", "validation", "test")] == [4, 1, 3]
    test = m.split("test")
    assert [(s.defect_type, s.label) for s in test] == [("ok", 0), ("ko", 1), ("ko", 1)]
    assert [s.mask_paths for s in test] == [(), ("ground_truth/ko/0000.png",), ("ground_truth/ko/0001.bmp",)]


def test_folder_format_jpg_tif_webp_images_and_both_mask_namings(tmp_path):
    cat = tmp_path / "my_part"
    for i in range(4):
        write_image(cat / "train/good" / f"img{i}.jpg")
    write_image(cat / "test/good/ok1.JPEG", fmt="JPEG")
    write_image(cat / "test/dent/a.jpg")
    write_image(cat / "test/dent/b.tif")
    write_image(cat / "test/dent/c.webp")
    write_mask(cat / "ground_truth/dent/a.png")
    write_mask(cat / "ground_truth/dent/b_mask.PNG")
    write_mask(cat / "ground_truth/dent/c.png")
    m = build(tmp_path, "my_part", "folder", val_fraction=0.25)
    assert [len(m.split(s)) for s in ("train", "validation", "test")] == [3, 1, 4]
    assert [(s.path, s.mask_paths) for s in m.split("test")] == [
        ("test/good/ok1.JPEG", ()), ("test/dent/a.jpg", ("ground_truth/dent/a.png",)),
        ("test/dent/b.tif", ("ground_truth/dent/b_mask.PNG",)), ("test/dent/c.webp", ("ground_truth/dent/c.png",))]


def test_mvtec_ad_rejects_jpg(tmp_path):
    make_mvtec(tmp_path)
    write_image(tmp_path / "widget/train/good/extra.jpg")
    with pytest.raises(LayoutError, match=r"unexpected entries extra\.jpg; expected only images \(\.png\)"):
        build(tmp_path)


# ---------------------------------------------------------------- bad inputs


def test_missing_root_says_where_and_sketches_layout(tmp_path):
    with pytest.raises(LayoutError) as e:
        build(tmp_path / "nowhere")
    msg = str(e.value)
    assert "nowhere: dataset root not found" in msg
    assert "MVTec AD" in msg and "ground_truth/<defect>/000_mask.png" in msg and "params.yaml" in msg
    with pytest.raises(LayoutError, match="dataset root not found"):
        list_categories("btad", tmp_path / "nowhere")


def test_placeholder_root_without_categories(tmp_path):
    (tmp_path / "PUT_DATASET_HERE.md").write_text("put it here")
    with pytest.raises(LayoutError, match="no dataset categories found here") as e:
        build(tmp_path, "01", "btad")
    assert "train/ok" in str(e.value)


def test_unknown_category_lists_valid_and_suggests(tmp_path):
    make_mvtec(tmp_path, "widget")
    make_mvtec(tmp_path, "bottle")
    with pytest.raises(LayoutError, match="unknown category 'widgt'") as e:
        build(tmp_path, "widgt")
    assert "did you mean 'widget'?" in str(e.value) and "valid categories: bottle, widget" in str(e.value)


def test_unknown_format(tmp_path):
    with pytest.raises(LayoutError, match="(?s)unknown dataset format 'mvtec'.*did you mean 'mvtec_ad'"):
        build(tmp_path, fmt="mvtec")


def test_empty_category(tmp_path):
    make_mvtec(tmp_path, "bottle")
    (tmp_path / "widget").mkdir()
    with pytest.raises(LayoutError, match="empty category"):
        build(tmp_path)


def test_empty_and_missing_split_folders(tmp_path):
    cat = make_mvtec(tmp_path)
    shutil.rmtree(cat / "test/good")
    with pytest.raises(LayoutError, match="missing folder") as e:
        build(tmp_path)
    assert "test/good" in str(e.value)
    (cat / "test/good").mkdir()
    with pytest.raises(LayoutError, match="empty folder: no images"):
        build(tmp_path)


def test_test_split_without_defects(tmp_path):
    make_mvtec(tmp_path, defects={})
    with pytest.raises(LayoutError, match="no defect folders"):
        build(tmp_path)


def test_defect_image_without_mask_is_named(tmp_path):
    cat = make_mvtec(tmp_path)
    (cat / "ground_truth/scratch/001_mask.png").unlink()
    with pytest.raises(LayoutError, match=r"1 defect image\(s\) without mask: 001\.png") as e:
        build(tmp_path)
    assert "ground_truth/scratch" in str(e.value) and "<image stem>_mask" in str(e.value)


def test_mask_without_image_is_named(tmp_path):
    cat = make_mvtec(tmp_path)
    write_mask(cat / "ground_truth/scratch/007_mask.png")
    with pytest.raises(LayoutError, match=r"masks without a matching image: 007_mask\.png"):
        build(tmp_path)
    (cat / "ground_truth/scratch/007_mask.png").unlink()
    write_mask(cat / "ground_truth/crack/000_mask.png")
    with pytest.raises(LayoutError, match="no test/crack folder"):
        build(tmp_path)


def test_mask_for_good_image(tmp_path):
    cat = make_mvtec(tmp_path)
    write_mask(cat / "ground_truth/good/000_mask.png")
    with pytest.raises(LayoutError, match=r"masks for good images: 000_mask\.png"):
        build(tmp_path)


def test_two_masks_for_one_image_in_folder_format(tmp_path):
    cat = make_mvtec(tmp_path)
    write_mask(cat / "ground_truth/hole/000.png")
    with pytest.raises(LayoutError, match=r"several masks for one image: 000\.png / 000_mask\.png"):
        build(tmp_path, fmt="folder")


def test_mask_size_differs_from_image(tmp_path):
    cat = make_mvtec(tmp_path)
    write_mask(cat / "ground_truth/hole/000_mask.png", size=(8, 12))
    with pytest.raises(LayoutError, match="mask is 12×8 but its image is 16×16") as e:
        build(tmp_path, check_images=False)
    assert "hole/000_mask.png" in str(e.value)


def test_corrupt_image_found_only_when_decoding(tmp_path):
    cat = make_mvtec(tmp_path)
    good = (cat / "test/good/001.png").read_bytes()
    (cat / "test/good/001.png").write_bytes(good[: len(good) // 2])  # header intact, pixels truncated
    (cat / "test/scratch/001.png").write_bytes(good[: len(good) // 2])  # later in manifest order
    assert len(build(tmp_path, check_images=False).samples) == 15
    with pytest.raises(LayoutError, match="unreadable or corrupt image") as e:
        build(tmp_path)
    assert "test/good/001.png" in str(e.value)  # the first bad file in manifest order, despite threads


def test_loco_unknown_pixel_value(tmp_path):
    cat = make_loco(tmp_path)
    write_mask(cat / "ground_truth/structural_anomalies/000/000.png", value=7)
    with pytest.raises(LayoutError, match=r"pixel value\(s\) \[7\] not in defects_config.json \(known: \[251, 252\]\)"):
        build(tmp_path, "tray", "mvtec_loco")
    assert len(build(tmp_path, "tray", "mvtec_loco", check_images=False).samples) == 11


def test_loco_defects_config_missing_or_malformed(tmp_path):
    cat = make_loco(tmp_path)
    (cat / "defects_config.json").unlink()
    with pytest.raises(LayoutError, match="defects_config.json is missing"):
        build(tmp_path, "tray", "mvtec_loco", check_images=False)
    (cat / "defects_config.json").write_text("[{")
    with pytest.raises(LayoutError, match="not valid JSON"):
        build(tmp_path, "tray", "mvtec_loco")
    (cat / "defects_config.json").write_text(json.dumps([{"defect_name": "x", "pixel_value": 3}]))
    with pytest.raises(LayoutError, match="entry 0 lacks key.*saturation_threshold, relative_saturation"):
        build(tmp_path, "tray", "mvtec_loco")
    bad_value = [dict(LOCO_CONFIG[0], pixel_value=0)]
    (cat / "defects_config.json").write_text(json.dumps(bad_value))
    with pytest.raises(LayoutError, match="pixel_value must be an integer in 1..255, got 0"):
        build(tmp_path, "tray", "mvtec_loco")


def test_loco_empty_mask_folder_and_missing_validation(tmp_path):
    cat = make_loco(tmp_path)
    (cat / "ground_truth/structural_anomalies/000/000.png").unlink()
    with pytest.raises(LayoutError, match=r"defect image\(s\) without mask: 000\.png"):
        build(tmp_path, "tray", "mvtec_loco")
    write_mask(cat / "ground_truth/structural_anomalies/000/000.png", value=252)
    shutil.rmtree(cat / "validation")
    with pytest.raises(LayoutError, match="missing folder") as e:
        build(tmp_path, "tray", "mvtec_loco")
    assert "validation/good" in str(e.value)


# ---------------------------------------------------------------- any image mode loads as RGB


def _save(path: Path, im: Image.Image) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def test_image_modes_load_as_rgb_uint8(tmp_path):
    grey16 = Image.fromarray(np.full((8, 10), 65535, dtype=np.uint16))
    assert grey16.mode.startswith("I;16")
    palette = Image.new("P", (10, 8), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    cases = {
        "grey16.png": (grey16, (255, 255, 255)),
        "grey.png": (Image.new("L", (10, 8), 100), (100, 100, 100)),
        "rgba.png": (Image.new("RGBA", (10, 8), (10, 20, 30, 255)), (10, 20, 30)),
        "palette.png": (palette, (10, 200, 30)),
    }
    for name, (im, rgb) in cases.items():
        loaded = np.asarray(load_rgb(_save(tmp_path / name, im)))
        assert loaded.dtype == np.uint8 and loaded.shape == (8, 10, 3), name
        assert (loaded == np.array(rgb, dtype=np.uint8)).all(), name


def test_manifest_of_mixed_mode_images_loads_as_rgb(tmp_path):
    cat = make_mvtec(tmp_path, train=4)
    _save(cat / "train/good/000.png", Image.fromarray(np.full(SIZE, 4096, dtype=np.uint16)))
    _save(cat / "train/good/001.png", Image.new("L", SIZE[::-1], 7))
    _save(cat / "train/good/002.png", Image.new("RGBA", SIZE[::-1], (1, 2, 3, 128)))
    m = build(tmp_path, val_fraction=0.0)
    for path in m.paths("train"):
        arr = np.asarray(load_rgb(path))
        assert arr.shape == (*SIZE, 3) and arr.dtype == np.uint8


def test_images_sharing_a_stem_cannot_be_matched_to_masks(tmp_path):
    cat = make_mvtec(tmp_path)
    write_image(cat / "test/hole/000.jpg")
    with pytest.raises(LayoutError, match=r"images share a file stem.*: 000\.jpg, 000\.png"):
        build(tmp_path, fmt="folder")

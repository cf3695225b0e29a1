"""The embedded synthetic datasets: layout, counts, masks, part labels, rules, determinism."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from ad_pipeline.data.synthetic import generate_all, loco
from ad_pipeline.data.synthetic.ad import CATEGORIES as AD_CATEGORIES
from ad_pipeline.errors import UserError

SEED = 7


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("synthetic") / "out"
    return root, generate_all(root, SEED, progress=False)


def read_manifest(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tree_digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


# ---- counts and summary ----

def test_summary_counts(generated):
    root, summary = generated
    assert summary["synthetic_ad"]["weave"] == {"train/good": 40, "test/good": 12, "test/scratch": 6,
                                                "test/hole": 6, "test/stain": 6}
    for cat in ("tray", "connectors"):
        assert summary["synthetic_loco"][cat] == {"train/good": 48, "validation/good": 12, "test/good": 16,
                                                  "test/logical_anomalies": 12, "test/structural_anomalies": 12}
    assert summary["visa_raw"] == {"pcb": {"train/normal": 12, "test/normal": 4, "test/anomaly": 4}}
    assert sum(summary["generic_images"].values()) == 64 and 4 <= len(summary["generic_images"]) <= 8
    for dataset in ("synthetic_ad", "synthetic_loco"):
        rows = read_manifest(root / dataset / "manifest.csv")
        assert list(rows[0]) == ["category", "split", "type", "path", "mask_paths", "rule_violated"]
        assert len(rows) == sum(sum(c.values()) for c in summary[dataset].values())


# ---- MVTec AD layout ----

def test_ad_layout_and_masks(generated):
    root = generated[0] / "synthetic_ad"
    for cat in AD_CATEGORIES:
        base = root / cat.name
        assert sorted(p.name for p in (base / "test").iterdir()) == sorted(["good", *cat.defects])
        assert sorted(p.name for p in (base / "ground_truth").iterdir()) == sorted(cat.defects)
        assert [p.name for p in sorted((base / "train" / "good").iterdir())] == [f"{i:03d}.png" for i in range(40)]
        for image_path in base.glob("t*/*/*.png"):
            with Image.open(image_path) as im:
                assert im.mode == ("L" if cat.grayscale else "RGB") and im.size == (160, 160)
        for defect in cat.defects:
            for image_path in sorted((base / "test" / defect).iterdir()):
                mask = pixels(base / "ground_truth" / defect / f"{image_path.stem}_mask.png")
                assert mask.shape == (160, 160) and set(np.unique(mask)) == {0, 255}
    rows = read_manifest(root / "manifest.csv")
    for r in rows:
        masks = [m for m in r["mask_paths"].split(";") if m]
        assert (r["type"] == "good") == (not masks) == (r["rule_violated"] == "")
        assert all((root / m).is_file() for m in masks) and (root / r["path"]).is_file()


# ---- MVTec LOCO layout, masks, defects_config ----

@pytest.mark.parametrize("cat", loco.CATEGORIES, ids=lambda c: c.name)
def test_loco_layout_and_masks(generated, cat):
    root = generated[0] / "synthetic_loco"
    base = root / cat.name
    config = json.loads((base / "defects_config.json").read_text())
    assert {tuple(sorted(d)) for d in config} == {("defect_name", "pixel_value", "relative_saturation",
                                                  "saturation_threshold")}
    assert {d["relative_saturation"] for d in config} == {True, False}
    value_of = {d["defect_name"]: d["pixel_value"] for d in config}
    assert len(set(value_of.values())) == len(config) and 0 not in value_of.values()
    assert sorted(p.name for p in (base / "test").iterdir()) == ["good", "logical_anomalies", "structural_anomalies"]
    assert sorted(p.name for p in (base / "ground_truth").iterdir()) == ["logical_anomalies", "structural_anomalies"]
    rows = [r for r in read_manifest(root / "manifest.csv") if r["category"] == cat.name]
    for r in rows:
        with Image.open(root / r["path"]) as im:
            assert im.mode == "RGB" and im.size == (cat.width, cat.height) and cat.width != cat.height
        masks = [m for m in r["mask_paths"].split(";") if m]
        if r["type"] == "good":
            assert not masks and r["rule_violated"] == ""
            continue
        stem = Path(r["path"]).stem
        folder = base / "ground_truth" / r["type"] / stem
        assert sorted(p.name for p in folder.iterdir()) == [f"{k:03d}.png" for k in range(len(masks))]
        for mask_path, defect in zip(masks, r["rule_violated"].split(";")):
            mask = pixels(root / mask_path)
            assert mask.shape == (cat.height, cat.width)
            assert set(np.unique(mask)) == {0, value_of[defect]}
            assert defect in (cat.logical if r["type"] == "logical_anomalies" else cat.structural)
    multi = [r for r in rows if ";" in r["mask_paths"]]
    assert multi, "some structural images must carry two defect channels"


# ---- part labels and the logical rules they encode ----

def components(labels: np.ndarray, class_id: int) -> int:
    return ndimage.label(labels == class_id)[1]


@pytest.mark.parametrize("cat", loco.CATEGORIES, ids=lambda c: c.name)
def test_part_labels_cover_every_image(generated, cat):
    root = generated[0] / "synthetic_loco"
    parts = json.loads((root / cat.name / "aux" / "parts.json").read_text())
    assert parts["num_classes"] == len(parts["class_names"]) == len(cat.class_names)
    assert parts["class_names"][0] == "background"
    rows = [r for r in read_manifest(root / "manifest.csv") if r["category"] == cat.name]
    for r in rows:
        rel = Path(r["path"]).relative_to(cat.name)
        labels = pixels(root / cat.name / "aux" / "part_labels" / rel)
        assert labels.shape == (cat.height, cat.width) and labels.dtype == np.uint8
        assert labels.max() < parts["num_classes"]
    if cat.variants:
        assert set(parts["variants"]) == {Path(r["path"]).relative_to(cat.name).as_posix() for r in rows}
        train = [v for k, v in parts["variants"].items() if k.startswith("train/")]
        assert {v: train.count(v) for v in cat.variants} == {v: 16 for v in cat.variants}
    else:
        assert "variants" not in parts


def test_tray_normal_images_obey_count_rules(generated):
    base = generated[0] / "synthetic_loco" / "tray"
    for path in sorted((base / "aux" / "part_labels" / "train" / "good").iterdir()):
        labels = pixels(path)
        assert [components(labels, c) for c in (1, 2, 3)] == [2, 3, 1], path.name


def test_tray_logical_anomalies_break_a_rule(generated):
    root = generated[0] / "synthetic_loco"
    rows = [r for r in read_manifest(root / "manifest.csv") if r["category"] == "tray" and r["type"] == "logical_anomalies"]
    assert {r["rule_violated"] for r in rows} == set(loco.CATEGORIES[0].logical)
    for r in rows:
        labels = pixels(root / "tray" / "aux" / "part_labels" / Path(r["path"]).relative_to("tray"))
        counts = [components(labels, c) for c in (1, 2, 3)]
        if r["rule_violated"] == "missing_component":
            assert sum(counts) == 5
        elif r["rule_violated"] == "extra_component":
            assert sum(counts) == 7
        elif r["rule_violated"] in ("swapped_pairing", "wrong_size", "misplaced_component"):
            assert counts == [2, 3, 1]


def test_connectors_pin_count_follows_variant(generated):
    base = generated[0] / "synthetic_loco" / "connectors"
    variants = json.loads((base / "aux" / "parts.json").read_text())["variants"]
    pins = {"two_pin": 2, "three_pin": 3, "five_pin": 5}
    for rel, variant in variants.items():
        if rel.startswith("train/"):
            labels = pixels(base / "aux" / "part_labels" / rel)
            assert components(labels, 2) == 2 * pins[variant], rel
            assert components(labels, 1) == 2 and components(labels, 3) == 1, rel


# ---- VisA, BTAD, generic images ----

def test_visa_raw_tree(generated):
    root = generated[0] / "visa_raw"
    rows = read_manifest(root / "split_csv" / "1cls.csv")
    assert list(rows[0]) == ["object", "split", "label", "image", "mask"]
    assert (root / "pcb" / "image_anno.csv").is_file()
    values = set()
    for r in rows:
        assert (root / r["image"]).is_file() and r["image"].endswith(".JPG")
        assert (r["label"] == "normal") == (r["mask"] == "") and r["split"] in ("train", "test")
        if r["mask"]:
            mask = pixels(root / r["mask"])
            with Image.open(root / r["image"]) as im:
                assert mask.shape == (im.size[1], im.size[0]) and im.size[0] != im.size[1]
            values |= set(np.unique(mask).tolist())
    assert values == {0, 1, 2}


def test_btad_layout(generated):
    base = generated[0] / "btad_like" / "01"
    assert {p.suffix for p in (base / "train" / "ok").iterdir()} == {".bmp"}
    ko = sorted((base / "test" / "ko").iterdir())
    assert {p.suffix for p in ko} == {".bmp", ".png"}
    for p in ko:
        assert set(np.unique(pixels(base / "ground_truth" / "ko" / f"{p.stem}.png"))) == {0, 255}


def test_generic_images_are_an_image_folder(generated):
    root = generated[0] / "generic_images"
    files = sorted(root.glob("*/*.png"))
    assert len(files) == 64
    with Image.open(files[0]) as im:
        assert im.size == (128, 128) and im.mode == "RGB"


# ---- content: not trivially solvable, defects of sensible size ----

@pytest.mark.parametrize("cat", loco.CATEGORIES, ids=lambda c: c.name)
def test_logical_anomalies_not_solved_by_mean_difference(generated, cat):
    """Score = max |image − mean train image|: logical anomalies must not be separable by it."""
    base = generated[0] / "synthetic_loco" / cat.name
    mean = np.mean([pixels(p).astype(np.float32) for p in sorted((base / "train" / "good").iterdir())], axis=0)

    def scores(kind: str) -> list[float]:
        return [float(np.abs(pixels(p) - mean).max()) for p in sorted((base / "test" / kind).iterdir())]

    good, logical = scores("good"), scores("logical_anomalies")
    assert roc_auc_score([0] * len(good) + [1] * len(logical), good + logical) < 0.95


@pytest.mark.parametrize("cat", loco.CATEGORIES, ids=lambda c: c.name)
def test_structural_masks_are_local_but_visible(generated, cat):
    folder = generated[0] / "synthetic_loco" / cat.name / "ground_truth" / "structural_anomalies"
    for mask_path in sorted(folder.glob("*/*.png")):
        area = float(np.mean(pixels(mask_path) > 0))
        assert 20 / (cat.width * cat.height) < area < 0.1, mask_path


# ---- determinism ----

def test_same_seed_same_bytes_different_seed_different(generated, tmp_path):
    """Re-render one LOCO category with fewer images: each image is keyed by its own
    (seed, split, type, index), so the shared files must be byte-identical to the full run."""
    cat = loco.CATEGORIES[0]
    small = loco.LocoCounts(train=3, validation=1, test_good=1, logical=3, structural=4)
    loco.write_category(tmp_path / "same", SEED, cat, small)
    loco.write_category(tmp_path / "other", SEED + 1, cat, small)
    same, full = tree_digest(tmp_path / "same" / cat.name), tree_digest(generated[0] / "synthetic_loco" / cat.name)
    assert len(same) > 20 and all(full[k] == v for k, v in same.items())
    other = tree_digest(tmp_path / "other" / cat.name)
    assert other["train/good/000.png"] != same["train/good/000.png"]


@pytest.mark.slow
def test_generate_all_twice_is_byte_identical(generated, tmp_path):
    generate_all(tmp_path / "again", SEED, progress=False)
    assert tree_digest(tmp_path / "again") == tree_digest(generated[0])


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_is_a_user_error(tmp_path, seed):
    with pytest.raises(UserError, match="seed"):
        generate_all(tmp_path / "x", seed, progress=False)
    assert not (tmp_path / "x").exists()

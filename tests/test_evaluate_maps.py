"""evaluate-maps and evaluate_category on tiny MVTec AD / LOCO trees written under tmp_path."""

import json

import numpy as np
import pytest
import tifffile
from PIL import Image

from ad_pipeline.errors import UserError
from ad_pipeline.metrics import evaluate_category, mean_over_categories
from ad_pipeline.metrics.map_folder import official_test_manifest
from ad_pipeline.metrics.reference import literal_area, literal_spro_curve
from ad_pipeline.metrics.spro import parse_defects_config
from stages.evaluate_maps import evaluate_maps
from tests.test_metrics import DEFECTS, GT_A, R1, R2, A, B

DEFECTS_JSON = [
    {"defect_name": "abs2", "pixel_value": 1, "saturation_threshold": 2, "relative_saturation": False},
    {"defect_name": "rel1", "pixel_value": 2, "saturation_threshold": 1.0, "relative_saturation": True},
]


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def _tiff(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.asarray(array, dtype=np.float32))


@pytest.fixture
def mvtec_tree(tmp_path):
    root, maps = tmp_path / "mvtec", tmp_path / "maps"
    _png(root / "toy/test/good/000.png", np.zeros((4, 4)))
    _png(root / "toy/test/crack/000.png", np.zeros((4, 4)))
    _png(root / "toy/ground_truth/crack/000_mask.png", GT_A * 255)
    _tiff(maps / "toy/test/good/000.tiff", B)
    (maps / "toy/test/crack").mkdir(parents=True)
    np.save(maps / "toy/test/crack/000.npy", A.astype(np.float32))
    return root, maps


@pytest.fixture
def loco_tree(tmp_path):
    root, maps = tmp_path / "loco", tmp_path / "maps"
    cat = root / "box"
    (cat).mkdir(parents=True)
    (cat / "defects_config.json").write_text(json.dumps(DEFECTS_JSON))
    for split in ("good", "logical_anomalies", "structural_anomalies"):
        _png(cat / f"test/{split}/000.png", np.zeros((4, 4)))
    _png(cat / "ground_truth/logical_anomalies/000/000.png", R1 * 1)
    _png(cat / "ground_truth/logical_anomalies/000/001.png", R2 * 2)
    _png(cat / "ground_truth/structural_anomalies/000/000.png", R2 * 2)
    _tiff(maps / "box/test/good/000.tiff", B)
    _tiff(maps / "box/test/logical_anomalies/000.tiff", A)
    _tiff(maps / "box/test/structural_anomalies/000.tiff", A * 0.5)
    return root, maps


def test_evaluate_maps_mvtec_matches_worked_example(mvtec_tree, tmp_path):
    root, maps = mvtec_tree
    out = tmp_path / "out.json"
    result = evaluate_maps("mvtec_ad", root, "toy", maps, output=out)
    assert result == pytest.approx({"image_auroc": 1.0, "pixel_auroc": 0.964286, "aupro": 0.880952}, abs=1e-6)
    assert json.loads(out.read_text()) == pytest.approx(result)
    assert evaluate_maps("mvtec_ad", root, "toy", maps, integration_limit=0.05)["aupro"] == pytest.approx(0.476190,
                                                                                                        abs=1e-6)


def test_evaluate_maps_loco_splits(loco_tree, tmp_path):
    root, maps = loco_tree
    result = evaluate_maps("mvtec_loco", root, "box", maps)
    assert result["spro"]["logical"] == pytest.approx(0.642857, abs=1e-6)  # good + logical only
    fpr, y = literal_spro_curve([[(R2, 2)], []], [A * 0.5, B], DEFECTS)
    structural = literal_area(fpr, y, 0.05)
    assert result["spro"]["structural"] == pytest.approx(structural, abs=1e-9)
    assert result["spro"]["mean"] == pytest.approx(0.5 * (0.642857 + structural), abs=1e-6)
    # image scores: good 0.5, logical 0.9, structural 0.45
    assert result["image_auroc"] == pytest.approx({"logical": 1.0, "structural": 0.0, "mean": 0.5})
    at_03 = evaluate_maps("mvtec_loco", root, "box", maps, integration_limit=0.3)
    assert at_03["spro"]["logical"] == pytest.approx(0.940476, abs=1e-6)


def test_evaluate_category_loco_keys(loco_tree):
    root, _ = loco_tree
    manifest = official_test_manifest("mvtec_loco", root, "box")
    types = [s.defect_type for s in manifest.split("test")]
    maps = np.stack([{"good": B, "logical_anomalies": A, "structural_anomalies": A * 0.5}[t] for t in types])
    metrics = evaluate_category(manifest, maps.max((1, 2)), maps)
    splits = ("logical", "structural", "mean")
    expected = {f"image_auroc_{s}" for s in splits} | {f"spro_{s}" for s in splits} | {
        f"spro@{lim}_{s}" for lim in ("0.01", "0.1", "0.3", "1.0") for s in splits}
    assert set(metrics) == expected
    assert metrics["spro@1.0_logical"] == pytest.approx(0.982143, abs=1e-6)


def test_evaluate_category_resizes_maps_to_gt(mvtec_tree):
    root, _ = mvtec_tree
    manifest = official_test_manifest("mvtec_ad", root, "toy")  # order: crack/000, good/000
    maps = np.stack([A, B])
    upsampled = np.stack([np.kron(m, np.ones((2, 2))) for m in maps])  # bilinear 8->4 recovers A, B exactly
    at_gt = evaluate_category(manifest, np.array([0.9, 0.5]), maps)
    assert evaluate_category(manifest, np.array([0.9, 0.5]), upsampled) == pytest.approx(at_gt, abs=1e-7)
    assert at_gt["aupro"] == pytest.approx(0.880952, abs=1e-6)
    assert set(at_gt) == {"image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "aupro"}


def test_mean_over_categories_keeps_shared_keys():
    assert mean_over_categories({"a": {"x": 1.0, "y": 0.5}, "b": {"x": 0.0}}) == {"x": 0.5}


@pytest.mark.parametrize("damage, message", [
    (lambda maps: (maps / "toy/test/crack/000.npy").unlink(), "missing map"),
    (lambda maps: _tiff(maps / "toy/test/good/000.tiff", np.full((4, 4), np.nan)), "NaN"),
    (lambda maps: _tiff(maps / "toy/test/good/999.tiff", B), "extra map"),
    (lambda maps: _tiff(maps / "toy/test/good/000.tiff", np.zeros((2, 4, 4))), "single-channel"),
])
def test_evaluate_maps_bad_maps_write_nothing(mvtec_tree, tmp_path, damage, message):
    root, maps = mvtec_tree
    damage(maps)
    out = tmp_path / "out.json"
    with pytest.raises(UserError, match=message):
        evaluate_maps("mvtec_ad", root, "toy", maps, output=out)
    assert not out.exists()


def test_parse_defects_fixture_matches_json():
    assert parse_defects_config(DEFECTS_JSON) == DEFECTS

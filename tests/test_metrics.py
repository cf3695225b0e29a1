"""Metric values on the worked examples of spec/metrics.md, invariants, and literal references."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ad_pipeline.metrics import (
    MetricUndefinedError, aupro, f1_max, image_ap, image_auroc, loco_image_auroc, pixel_ap, pixel_auroc,
    pixel_f1_max, spro,
)
from ad_pipeline.metrics.curve import area_under_curve
from ad_pipeline.metrics.reference import literal_area, literal_pro_curve, literal_spro_curve
from ad_pipeline.metrics.spro import DefectSpec, parse_defects_config

A = np.array([[.90, .80, .10, 0], [.22, .20, .10, 0], [0, .10, .30, 0], [0, 0, 0, .45]])
GT_A = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=np.uint8)
B = np.array([[.05, .50, 0, 0], [0, 0, .25, 0], [0, 0, 0, 0], [.15, 0, 0, 0]])
MAPS = np.stack([A, B])
MASKS = np.stack([GT_A, np.zeros_like(GT_A)])
R1 = np.zeros((4, 4), bool)
R1[0, 0] = R1[0, 1] = R1[1, 0] = True
R2 = np.zeros((4, 4), bool)
R2[3, 3] = True
DEFECTS = parse_defects_config([
    {"defect_name": "abs2", "pixel_value": 1, "saturation_threshold": 2, "relative_saturation": False},
    {"defect_name": "rel1", "pixel_value": 2, "saturation_threshold": 1.0, "relative_saturation": True},
])


def test_image_metrics_worked_example():
    y, s = [0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9]
    assert image_auroc(y, s) == pytest.approx(8 / 9, abs=1e-12)
    assert image_ap(y, s) == pytest.approx(0.916667, abs=1e-6)
    assert f1_max(y, s) == pytest.approx(6 / 7, abs=1e-12)


def test_image_auroc_ties_count_half_not_loco_quirk():
    # the official LOCO tool reports 1.0 here
    assert image_auroc([0, 0, 1, 1], [1, 2, 2, 3]) == pytest.approx(0.875)
    split = loco_image_auroc(["good", "good", "logical_anomalies", "logical_anomalies", "structural_anomalies"],
                             [1, 2, 2, 3, 0])
    assert split == pytest.approx({"logical": 0.875, "structural": 0.0, "mean": 0.4375})


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1]])
def test_single_class_is_undefined(labels):
    for metric in (image_auroc, image_ap, f1_max):
        with pytest.raises(MetricUndefinedError, match="no (anomalous|normal) images"):
            metric(labels, np.arange(len(labels), dtype=float))
    maps = np.random.default_rng(0).random((len(labels), 3, 3))
    masks = np.full(maps.shape, labels[0], dtype=np.uint8)
    for metric in (pixel_auroc, aupro):
        with pytest.raises(MetricUndefinedError, match="pixels"):
            metric(masks, maps)


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="NaN"):
        image_auroc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="NaN"):
        aupro(MASKS, np.where(MASKS == 1, np.inf, MAPS))


def test_aupro_worked_example():
    assert aupro(MASKS, MAPS, 0.3) == pytest.approx(0.880952, abs=1e-6)
    assert aupro(MASKS, MAPS, 0.05) == pytest.approx(0.476190, abs=1e-6)
    assert aupro(MASKS, MAPS, 1.0) == pytest.approx(0.964286, abs=1e-6)
    # exact fractions from the hand-computed curve
    assert aupro(MASKS, MAPS, 0.3) == pytest.approx((1 / 28 / 3 + 2 / 28 * 5 / 6 + (0.3 - 3 / 28)) / 0.3, abs=1e-12)


def test_pixel_metrics_worked_example_and_sklearn():
    assert pixel_auroc(MASKS, MAPS) == pytest.approx(0.964286, abs=1e-6)
    assert pixel_ap(MASKS, MAPS) == pytest.approx(0.830357, abs=1e-6)
    assert pixel_f1_max(MASKS, MAPS) == pytest.approx(0.75, abs=1e-12)
    rng = np.random.default_rng(1)
    maps = np.round(rng.random((5, 9, 7)), 2)  # many ties
    masks = rng.random((5, 9, 7)) < 0.2
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert pixel_ap(masks, maps) == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_area_interpolates_the_strip_at_the_limit():
    fpr, y = np.array([0.0, 0.2, 0.6, 1.0]), np.array([0.0, 0.5, 1.0, 1.0])
    # area to 0.3: triangle 0.5*0.2*0.5 + strip 0.1 wide from 0.5 to 0.625
    assert area_under_curve(fpr, y, 0.3) == pytest.approx((0.05 + 0.1 * (0.5 + 0.625) / 2) / 0.3, abs=1e-12)
    assert area_under_curve(fpr, y, 0.2) == pytest.approx(0.05 / 0.2, abs=1e-12)  # limit is a curve point
    with pytest.raises(ValueError, match="limit"):
        area_under_curve(fpr, y, 0.0)


def test_regions_are_eight_connected():
    # defect pixels (0,0),(0,1) and (1,2): one 3-px region with 8-connectivity, {2 px, 1 px} with 4
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, 0, 0] = masks[0, 0, 1] = masks[0, 1, 2] = 1
    maps = np.where(masks == 1, 0.0, 0.5)
    maps[0, 1, 2] = 1.0
    # curve (0,0) (0,1/3) (1,1/3) (1,1): area 1/3; with 4-connectivity PRO would be (0 + 1)/2 -> 0.5
    assert aupro(masks, maps, 1.0) == pytest.approx(1 / 3, abs=1e-12)
    fpr, pro = literal_pro_curve(masks, maps)
    assert literal_area(fpr, pro, 1.0) == pytest.approx(1 / 3, abs=1e-12)


def test_spro_worked_example():
    channels = [[(R1, 1), (R2, 2)], []]
    result = spro(channels, [A, B], DEFECTS)
    assert result["0.05"] == pytest.approx(0.642857, abs=1e-6)
    assert result["0.3"] == pytest.approx(0.940476, abs=1e-6)
    assert result["1.0"] == pytest.approx(0.982143, abs=1e-6)
    assert set(result) == {"0.01", "0.05", "0.1", "0.3", "1.0"}


def test_spro_channel_is_one_defect_even_if_disjoint():
    # R1 and R2 as ONE channel of 4 px with absolute saturation 4: no connected components
    both = R1 | R2
    cfg = {1: DefectSpec("d", 1, 4, False)}
    fpr, y = literal_spro_curve([[(both, 1)], []], [A, B], cfg)
    assert spro([[(both, 1)], []], [A, B], cfg, limits=(0.3,))["0.3"] == pytest.approx(literal_area(fpr, y, 0.3))
    # top score 0.9 alone covers 1/4 of the single channel (per-blob averaging would give (1/3 + 0)/2)
    assert y[2] == pytest.approx(0.25)  # y[1]: t = 0.9 itself, nothing is > t


def test_saturation_areas():
    assert DefectSpec("a", 1, 2, False).saturation_area(3) == 2
    assert DefectSpec("a", 1, 500, False).saturation_area(3) == 3  # capped at the area
    assert DefectSpec("r", 1, 0.5, True).saturation_area(5) == 2  # floor(2.5)
    assert DefectSpec("r", 1, 0.1, True).saturation_area(5) == 1  # floor 0 -> at least one pixel
    with pytest.raises(ValueError, match="saturation_threshold"):
        parse_defects_config([{"defect_name": "x", "pixel_value": 1, "saturation_threshold": 2.0,
                               "relative_saturation": True}])


def test_spro_saturated_channel_reaches_one_early():
    # channel of 4 px, saturation 50 % -> 2 px: the two top pixels give full overlap
    mask = np.zeros((3, 3), bool)
    mask[0, :2] = mask[1, :2] = True
    score = np.array([[0.9, 0.8, 0.1], [0.2, 0.3, 0.0], [0.0, 0.0, 0.4]])
    cfg = {7: DefectSpec("r", 7, 0.5, True)}
    # thresholds: >0.8 -> 1/2, >0.4 -> 1 at FPR 0 (the 0.4 normal pixel is not yet positive)
    assert spro([[(mask, 7)]], [score], cfg, limits=(0.2,))["0.2"] == pytest.approx(1.0)


def test_invariant_under_monotone_transform_and_ties():
    rng = np.random.default_rng(3)
    maps = np.round(rng.random((4, 8, 8)), 1)  # heavy ties
    masks = np.zeros(maps.shape, np.uint8)
    masks[0, 2:5, 2:5] = 1
    masks[1, 0, :3] = 1
    masks[2, 6:, 6:] = 1
    transformed = np.exp(3 * maps) - 7
    for metric in (pixel_auroc, pixel_ap, aupro):
        assert metric(masks, maps) == pytest.approx(metric(masks, transformed), abs=1e-12)
    assert image_auroc([0, 1, 1, 0], maps.max((1, 2))) == image_auroc([0, 1, 1, 0], transformed.max((1, 2)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_fast_pro_equals_literal_definition(seed, limit):
    rng = np.random.default_rng(seed)
    maps = rng.random((3, 10, 10)).astype(np.float32)
    maps[0, :3] = 0.5  # a run of ties
    masks = (rng.random((3, 10, 10)) < 0.15).astype(np.uint8)
    fpr, pro = literal_pro_curve(masks, maps)
    assert aupro(masks, maps, limit) == pytest.approx(literal_area(fpr, pro, limit), abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_fast_spro_equals_literal_definition(seed):
    rng = np.random.default_rng(seed)
    maps = [np.round(rng.random((8, 8)), 2) for _ in range(3)]
    cfg = {1: DefectSpec("abs", 1, 3, False), 2: DefectSpec("rel", 2, 0.4, True)}
    first, second = rng.random((8, 8)) < 0.2, np.zeros((8, 8), bool)
    second[2:6, 3:7] = True  # overlaps ``first``
    channels = [[(first, 1), (second, 2)], [], [(rng.random((8, 8)) < 0.1, 2)]]
    fpr, y = literal_spro_curve(channels, maps, cfg)
    fast = spro(channels, maps, cfg)
    for limit in (0.01, 0.05, 0.1, 0.3, 1.0):
        assert fast[str(limit)] == pytest.approx(literal_area(fpr, y, limit), abs=1e-9)


def test_small_blocks_give_the_same_counts():
    from ad_pipeline.metrics.pixel import ap_of_pool, auroc_of_pool
    from ad_pipeline.metrics.pool import PixelPool

    rng = np.random.default_rng(5)
    maps = np.round(rng.random((4, 6, 5)), 2)
    masks = rng.random((4, 6, 5)) < 0.3
    pool = PixelPool(block_size=7)  # many blocks, images straddling block ends
    for mask, score_map in zip(masks, maps):
        pool.add(score_map[~mask], score_map[mask])
    pooled = pool.finish()
    assert len(pooled.negative_blocks) > 3
    assert auroc_of_pool(pooled) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert ap_of_pool(pooled) == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_pro_curve_is_the_curve_aupro_integrates():
    """The 4×4 example of metrics.md §3: the plotted curve has the hand-computed points."""
    from ad_pipeline.metrics import pro_curve

    a = np.array([[.9, .8, .1, 0], [.22, .2, .1, 0], [0, .1, .3, 0], [0, 0, 0, .45]])
    b = np.array([[.05, .5, 0, 0], [0, 0, .25, 0], [0, 0, 0, 0], [.15, 0, 0, 0]])
    ga = np.zeros((4, 4), bool)
    ga[0, 0] = ga[0, 1] = ga[1, 0] = ga[3, 3] = True
    fpr, pro = pro_curve(np.stack([ga, np.zeros_like(ga)]), np.stack([a, b]))
    assert fpr[0] == 0 and fpr[-1] == 1 and pro[-1] == 1
    assert np.isclose(pro[fpr <= 1 / 28 + 1e-9].max(), 5 / 6)

"""Report rendering: tables carry weights mode and published numbers; figures are written."""

from __future__ import annotations

import numpy as np

from ad_pipeline.report.figures import overlay_figure, pick_cases, pro_figure, roc_figure
from ad_pipeline.report.render import render_html, render_markdown

RESULT = {
    "dataset": "mvtec_ad", "format": "mvtec_ad", "published": "mvtec_ad",
    "methods": {
        "patchcore": {"weights": "pretrained", "mean": {"image_auroc": 0.9, "aupro": 0.8},
                      "categories": {"bottle": {"image_auroc": 0.9, "aupro": 0.8}}},
        "musc": {"weights": "random-init", "mean": {"image_auroc": 0.7},
                 "categories": {"bottle": {"image_auroc": 0.7}}},
    },
}


def test_markdown_has_ours_beside_published_and_weights_warning():
    md = render_markdown([RESULT])
    assert "| patchcore | 90.00 (pub. 99.16) | 80.00 (pub. 94.37) |" in md
    assert "| musc | 70.00 (pub. 97.77) | – |" in md
    assert "RANDOM-INIT for musc" in md
    assert "| bottle | 90.00 | 80.00 |" in md


def test_per_category_published_numbers_for_uniad_cifar10_splits():
    result = {"dataset": "cifar10", "format": "cifar10", "published": "cifar10",
              "methods": {"uniad": {"weights": "pretrained", "mean": {"image_auroc": 0.5},
                                    "categories": {"01234": {"image_auroc": 0.4}, "13579": {"image_auroc": 0.6}}}}}
    md = render_markdown([result])
    assert "| uniad | 50.00 (pub. 86.50) |" in md
    assert "| 01234 | 40.00 (pub. 84.40) |" in md and "| 13579 | 60.00 (pub. 89.10) |" in md
    page = render_html([result], {"cifar10": {"01234": ["img/vis_cifar10_01234_uniad_reconstruction.png"]}}, "now")
    assert "<td>40.00 <span class=\"pub\">pub. 84.40</span></td>" in page
    assert "<div class='overlays'><img src='img/vis_cifar10_01234_uniad_reconstruction.png'" in page


def test_html_is_offline_and_lists_figures():
    page = render_html([RESULT], {"mvtec_ad": {"bottle": ["img/roc_mvtec_ad_bottle.png", "img/cases_x.png"]}}, "now")
    assert "<script" not in page and "http" not in page
    assert "src='img/roc_mvtec_ad_bottle.png'" in page and "src='img/cases_x.png'" in page
    assert "class='warn'" in page


def test_pick_cases_best_and_worst():
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.2, 0.6, 0.9, 0.1, 0.5])
    assert pick_cases(labels, scores) == [
        (2, "best: highest-scored anomaly"), (3, "worst: lowest-scored anomaly"),
        (1, "worst: highest-scored normal image")]


def test_figures_are_png_files(tmp_path):
    roc_figure(np.array([0, 1, 0, 1]), {"a": np.array([0.1, 0.9, 0.2, 0.8])}, "t", tmp_path / "roc.png")
    pro_figure({"a": (np.array([0.0, 0.1, 1.0]), np.array([0.0, 0.8, 1.0]))}, 0.3, "t", tmp_path / "pro.png")
    rows = [{"image": np.zeros((8, 8, 3), np.uint8), "mask": None, "map": np.random.rand(8, 8), "caption": "c"}]
    overlay_figure(rows, "t", tmp_path / "ov.png")
    for name in ("roc.png", "pro.png", "ov.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


EXPORTS = {"synthetic_loco": {
    "formats": ["onnx"], "not_installed": ["openvino"], "skipped": {"musc": "transductive"},
    "rows": [{"method": "csad", "category": "tray", "format": "onnx",
              "auroc": {"image_auroc_logical": 91.25, "image_auroc_structural": 80.0, "image_auroc_mean": 85.625},
              "pytorch_auroc": {"image_auroc_logical": 91.25, "image_auroc_structural": 80.0, "image_auroc_mean": 85.625},
              "max_abs_diff_map": 2e-6, "max_rel_diff_map": 1e-6, "max_abs_diff_score": 0.5, "max_rel_diff_score": 1e-5,
              "cpu_ms_per_image": 12.34}]}}


def test_export_table_has_a_row_per_format_with_loco_aurocs_and_notes():
    md = render_markdown([], EXPORTS)
    assert ("| synthetic_loco | csad | tray | onnx | 91.250 / 80.000 / 85.625 | 91.250 / 80.000 / 85.625 "
            "| 2.0e-06 (1.0e-06) | 5.0e-01 (1.0e-05) | 12.3 |") in md
    assert "- synthetic_loco: musc not exported (transductive)" in md
    assert "- synthetic_loco: format(s) openvino not installed" in md
    assert "<li>synthetic_loco: musc not exported (transductive)</li>" in render_html([], {}, "now", EXPORTS)

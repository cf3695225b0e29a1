"""Runs that are not the paper recipe say so in meta.json, metrics/<dataset>.md and the report."""

from __future__ import annotations

import json

from stages.common import recipe_marks
from stages.evaluate import markdown_table, method_recipe
from stages.params import load_params
from ad_pipeline.report.render import render_markdown


def test_meta_marks_deviations_and_random_init(repo):
    p = load_params(repo / "params.yaml")
    assert recipe_marks(p.settings("efficientad", "mvtec_loco"), "pretrained") == {"paper_recipe": True, "deviations": {}}
    marks = recipe_marks(p.settings("efficientad", "mvtec_loco"), "random-init")
    assert marks == {"paper_recipe": False, "deviations": {"weights": "random-init"}}
    demo = recipe_marks(p.settings("efficientad", "synthetic_loco"), "pretrained")
    assert not demo["paper_recipe"] and demo["deviations"]["steps"] == "dataset profile"


def test_a_stage_on_a_non_recipe_upstream_is_not_the_recipe(repo, tmp_path):
    p = load_params(repo / "params.yaml")
    (tmp_path / "meta.json").write_text(json.dumps({"paper_recipe": False}))
    marks = recipe_marks(p.settings("puad", "mvtec_loco"), "n/a", {"efficientad": tmp_path})
    assert marks == {"paper_recipe": False, "deviations": {"upstream.efficientad": "not the paper recipe"}}
    (tmp_path / "meta.json").write_text(json.dumps({"paper_recipe": True}))
    assert recipe_marks(p.settings("puad", "mvtec_loco"), "n/a", {"efficientad": tmp_path})["paper_recipe"]


def test_method_recipe_collects_categories(tmp_path):
    for cat, meta in {"a": {"paper_recipe": True, "deviations": {}, "backbone": "wide_resnet50_2",
                            "params": {"steps": 70000, "image_size": 256}},
                      "b": {"paper_recipe": False, "deviations": {"lr": "dataset profile (category b)"},
                            "backbone": "wide_resnet50_2", "params": {"steps": 70000, "image_size": 256}}}.items():
        (tmp_path / cat).mkdir()
        (tmp_path / cat / "meta.json").write_text(json.dumps(meta))
    assert method_recipe(tmp_path, ["a", "b"]) == {
        "paper_recipe": False, "deviations": {"lr": "dataset profile (category b)"},
        "budget": {"backbone": "wide_resnet50_2", "steps": 70000, "image_size": 256}}
    assert method_recipe(tmp_path, ["a"])["paper_recipe"] is True


def _result(recipe):
    return {"dataset": "mvtec_ad", "format": "mvtec_ad", "published": "mvtec_ad", "methods": {"efficientad": {
        "weights": "pretrained", "recipe": recipe, "mean": {"image_auroc": 0.5}, "categories": {"bottle": {"image_auroc": 0.5}}}}}


def test_metrics_markdown_shows_published_per_category_and_the_recipe_mark():
    md = markdown_table(_result({"paper_recipe": False, "deviations": {"steps": "user override"},
                                 "budget": {"backbone": "n/a", "steps": 400}}))
    assert "NOT the paper recipe: steps (user override) — budget: backbone n/a, steps 400" in md
    assert "| bottle | 50.00 (pub. 99.9) |" in md and "| **mean** | 50.00 (pub. 99.0) |" in md


def test_report_names_the_methods_off_the_recipe():
    off = render_markdown([_result({"paper_recipe": False, "deviations": {"weights": "random-init"}, "budget": {}})])
    assert "_NOT the paper recipe: efficientad" in off and "| bottle | 50.00 (pub. 99.92) |" in off
    on = render_markdown([_result({"paper_recipe": True, "deviations": {}, "budget": {"steps": 70000}})])
    assert "_every method ran its paper recipe_" in on and "_paper recipe — budget: steps 70000_" in on

"""Effective settings: paper default ⊕ dataset profile ⊕ user override, with the source of each value."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from ad_pipeline.errors import ParamsError, UserError
from ad_pipeline.methods.registry import get_method
from stages.common import pretrained_mode
from stages.params import load_params, unwritten_profiles
from stages.settings import PAPER, PROFILE, USER, settings_table

FIXTURE = "tests/fixtures/synthetic_effective_settings.json"


def _params(tmp_path, repo, edit=None):
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    if edit:
        edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_params(path)


def test_synthetic_stages_keep_the_settings_they_had_before_profiles(repo):
    """The fixture holds every synthetic stage's Config and run context as computed from the
    flat params.yaml before dataset profiles existed (same settings → same committed metrics)."""
    p = load_params(repo / "params.yaml")
    before = json.loads((repo / FIXTURE).read_text())
    for key, old in before.items():
        stage, target = key.split("@")
        dataset, _, category = target.partition("/")
        eff = p.settings(stage, dataset, category or None)
        assert eff.config.model_dump(mode="json") == old["config"], key
        if "context" in old:
            assert pretrained_mode(p, dataset) == old["context"]["pretrained"], key
            if get_method(stage).pluggable_backbone:
                assert eff.backbone == old["context"]["backbone"], key
        if "grounded_sam" in old:
            g = p.pseudo_labels.grounded_sam.get(category, p.pseudo_labels.grounded_sam.get("default"))
            assert (g.model_dump(mode="json") if g else None) == old["grounded_sam"], key


def test_efficientad_on_mvtec_loco_is_the_paper_recipe(repo):
    p = load_params(repo / "params.yaml")
    eff = p.settings("efficientad", "mvtec_loco")
    assert (eff.config.steps, eff.config.image_size, eff.config.channels, eff.config.batch_size) == (70_000, 256, 384, 1)
    assert eff.config.pretrain_images == "data/imagenet"
    assert set(eff.sources.values()) == {PAPER} and eff.deviations() == {}
    teacher = p.settings("efficientad_teacher", "mvtec_loco").config
    assert (teacher.target_backbone, teacher.steps, teacher.target_image_size) == ("wide_resnet101_2", 60_000, 512)
    assert pretrained_mode(p, "mvtec_loco") == "true"  # missing weights are an error on a real dataset
    table = settings_table(p, "efficientad", "mvtec_loco")
    assert re.search(r"^steps +paper default +70000$", table, re.M) and table.endswith("paper recipe: yes")


def test_real_datasets_get_the_papers_backbones_and_budgets(repo):
    p = load_params(repo / "params.yaml")
    assert p.settings("patchcore", "mvtec_ad").backbone == "wide_resnet50_2"
    assert p.settings("musc", "visa").backbone == "ViT-L-14-336"
    assert p.settings("musc", "visa").config.image_size == 518
    uniad = p.settings("uniad", "mvtec_ad").config
    assert (uniad.backbone, uniad.epochs) == ("efficientnet_b4_lukemelas", 1000)
    for method in ("patchcore", "efficientad", "puad", "csad", "psad"):
        assert p.settings(method, "mvtec_loco").deviations() == {}, method


def test_per_category_paper_settings_and_their_source(repo):
    p = load_params(repo / "params.yaml")
    screw = p.settings("pseudo_labels", "mvtec_loco", "screw_bag")
    assert screw.config.bandwidth == 3.0 and screw.sources["bandwidth"] == f"{PAPER} (category screw_bag)"
    assert screw.deviations() == {}
    assert p.settings("psad", "mvtec_loco", "juice_bottle").config.num_classes == 9
    assert p.settings("csad", "mvtec_loco", "screw_bag").config.augment.min_distance == 0.1
    # the same category name on another format gets no LOCO value
    assert p.settings("pseudo_labels", "synthetic_loco", "screw_bag").config.bandwidth == 1.6


def test_layers_override_in_order_and_sources_name_the_layer(tmp_path, repo):
    def edit(raw):
        raw["datasets"]["mvtec_loco"]["profile"] = {"efficientad": {"steps": 5000, "categories": {"pushpins": {"lr": 2e-4}}}}
        raw["efficientad"]["image_size"] = 128
    p = _params(tmp_path, repo, edit)
    eff = p.settings("efficientad", "mvtec_loco", "pushpins")
    assert (eff.config.steps, eff.config.lr, eff.config.image_size) == (5000, 2e-4, 128)
    assert eff.sources["steps"] == PROFILE and eff.sources["lr"] == f"{PROFILE} (category pushpins)"
    assert eff.sources["image_size"] == USER
    assert set(eff.deviations()) == {"steps", "lr", "image_size"}
    assert p.settings("efficientad", "mvtec_loco", "screw_bag").config.lr == 1e-4
    assert p.settings("efficientad", "synthetic_loco").config.image_size == 128  # a user override is global
    assert p.settings("efficientad", "mvtec_ad").config.steps == 70_000  # a profile is not


def test_a_value_repeating_the_paper_keeps_the_paper_as_source(tmp_path, repo):
    p = _params(tmp_path, repo, lambda raw: raw["patchcore"].update(coreset_ratio=0.1))
    assert p.settings("patchcore", "mvtec_ad").sources["coreset_ratio"] == PAPER


def test_top_level_backbone_is_a_user_override_below_the_section(tmp_path, repo):
    p = _params(tmp_path, repo, lambda raw: raw.update(backbone="dinov2_vits14"))
    assert p.settings("patchcore", "mvtec_ad").backbone == "dinov2_vits14"
    assert p.settings("patchcore", "synthetic_ad").sources["backbone"] == f"{USER} (top-level backbone)"
    p = _params(tmp_path, repo, lambda raw: (raw.update(backbone="dinov2_vits14"), raw["patchcore"].update(backbone="resnet18")))
    assert p.settings("patchcore", "mvtec_ad").backbone == "resnet18"


def test_misspelt_profile_setting_names_dataset_and_section(tmp_path, repo):
    with pytest.raises(ParamsError, match=r"unknown setting\(s\) stepz for efficientad on mvtec_loco"):
        _params(tmp_path, repo, lambda raw: raw["datasets"]["mvtec_loco"].update(profile={"efficientad": {"stepz": 1}}))


def test_misspelt_profile_section_suggests_the_method(tmp_path, repo):
    with pytest.raises(ParamsError, match=r"unknown profile key 'efficentad'; did you mean 'efficientad'"):
        _params(tmp_path, repo, lambda raw: raw["datasets"]["mvtec_loco"].update(profile={"efficentad": {}}))


def test_wrong_type_in_profile_is_named(tmp_path, repo):
    with pytest.raises(ParamsError, match=r"efficientad on mvtec_loco: steps: Input should be a valid integer"):
        _params(tmp_path, repo, lambda raw: raw["datasets"]["mvtec_loco"].update(profile={"efficientad": {"steps": "x"}}))


def test_datasets_without_a_written_profile_key_are_found(tmp_path, repo):
    p = _params(tmp_path, repo, lambda raw: raw["datasets"]["mvtec_loco"].pop("profile"))
    assert unwritten_profiles(tmp_path / "params.yaml", p) == ["mvtec_loco"]
    assert unwritten_profiles(repo / "params.yaml", load_params(repo / "params.yaml")) == []


def test_dvc_dag_of_evaluate_mvtec_loco_is_the_recipe(repo):
    """Unmodified params.yaml: evaluate@mvtec_loco pulls in every LOCO method of the recipe."""
    import shutil
    import subprocess

    dvc = shutil.which("dvc")
    assert dvc, "dvc is in requirements.txt"
    out = subprocess.run([dvc, "dag", "--dot", "evaluate@mvtec_loco"], cwd=repo, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    stages = set(re.findall(r'^"([^"]+)";$', out, re.M))
    recipe = ("prepare", "patchcore", "efficientad_teacher", "efficientad", "puad", "efficientad_teacher_m",
              "efficientad_m", "puad_m", "pseudo_labels", "segmentor", "csad", "part_segmenter", "psad_segmenter",
              "psad", "fuse", "evaluate")
    assert {s for s in stages if "@" in s} == {f"{s}@mvtec_loco" for s in recipe}


def test_efficientad_and_puad_run_as_s_and_m_on_real_datasets_only(repo):
    """EfficientAD-S/-M and PUAD-S/-M are separate methods on MVTec LOCO / AD (the seeds evaluate
    both); the synthetic suite keeps its single S run. Each is the paper recipe; the M teacher is
    distilled with the teacher settings at the medium size."""
    from stages.efficientad_teacher import teacher_config

    p = load_params(repo / "params.yaml")
    for ds in ("mvtec_loco", "mvtec_ad"):
        assert {"efficientad", "efficientad_m", "puad", "puad_m"} <= set(p.methods_for(ds))
    assert {"efficientad", "puad"} <= set(p.methods_for("synthetic_loco"))
    assert not {"efficientad_m", "puad_m"} & set(p.methods_for("synthetic_loco"))
    for method, size in (("efficientad", "small"), ("efficientad_m", "medium")):
        eff = p.settings(method, "mvtec_loco")
        assert (eff.config.model_size, eff.config.steps, eff.config.pretrain_images) == (size, 70_000, "data/imagenet")
        assert eff.deviations() == {} and settings_table(p, method, "mvtec_loco").endswith("paper recipe: yes")
        assert re.search(rf'^model_size +paper default +"{size}"$', settings_table(p, method, "mvtec_loco"), re.M)
        _, teacher = teacher_config(p, "mvtec_loco", method)
        assert (teacher.model_size, teacher.steps, teacher.target_backbone) == (size, 60_000, "wide_resnet101_2")
    assert get_method("efficientad_m").requires == ("efficientad_teacher_m",)
    assert get_method("puad_m").requires == ("efficientad_m",) and get_method("puad").requires == ("efficientad",)
    assert p.settings("puad_m", "mvtec_loco").deviations() == {}
    with pytest.raises(UserError, match="no teacher stage for method 'puad'"):
        teacher_config(p, "mvtec_loco", "puad")


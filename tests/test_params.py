"""params.yaml schema: typos and wrong types give errors that name the key."""

from __future__ import annotations

import shutil

import pytest
import yaml

from ad_pipeline.errors import ParamsError
from stages.params import load_params


def _write(tmp_path, repo, edit):
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    edit(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_committed_params_are_valid(repo):
    p = load_params(repo / "params.yaml")
    assert p.datasets["synthetic_loco"].format == "mvtec_loco"
    assert set(p.summary_datasets) <= set(p.datasets)


def test_misspelt_top_level_key_suggests_the_valid_one(tmp_path, repo):
    path = _write(tmp_path, repo, lambda r: r.update(backbonee=r.pop("backbone")))
    with pytest.raises(ParamsError, match=r"unknown key 'backbonee'; did you mean 'backbone'\?"):
        load_params(path)


def test_misspelt_dataset_key_is_named_with_its_path(tmp_path, repo):
    path = _write(tmp_path, repo, lambda r: r["datasets"]["synthetic_ad"].update(categores=["a"]))
    with pytest.raises(ParamsError, match=r"datasets.synthetic_ad.categores.*did you mean 'datasets.synthetic_ad.categories'"):
        load_params(path)


def test_wrong_type_names_key_and_expected_type(tmp_path, repo):
    path = _write(tmp_path, repo, lambda r: r.update(seed="zero"))
    with pytest.raises(ParamsError, match=r"seed: Input should be a valid integer"):
        load_params(path)


def test_unknown_format_lists_the_valid_ones(tmp_path, repo):
    path = _write(tmp_path, repo, lambda r: r["datasets"]["synthetic_ad"].update(format="mvtec"))
    with pytest.raises(ParamsError, match=r"datasets.synthetic_ad.format: Input should be 'mvtec_ad', 'mvtec_loco'"):
        load_params(path)


def test_yaml_booleans_are_accepted_for_pretrained(tmp_path, repo):
    path = _write(tmp_path, repo, lambda r: r.update(pretrained=False))
    assert load_params(path).pretrained == "false"


def test_summary_must_name_known_datasets(tmp_path, repo):
    path = _write(tmp_path, repo, lambda r: r.update(summary_datasets=["synthetic_adx"]))
    with pytest.raises(ParamsError, match=r"unknown dataset 'synthetic_adx'. Did you mean 'synthetic_ad'"):
        load_params(path)


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(ParamsError, match="repository root"):
        load_params(tmp_path / "nope.yaml")


def test_uniad_vis_must_name_a_dataset_where_uniad_runs(tmp_path, repo):
    path = _write(tmp_path, repo, lambda raw: raw["uniad_vis"].update(datasets=["synthetic_loco"]))
    with pytest.raises(ParamsError, match="uniad_vis.datasets names 'synthetic_loco', where uniad does not run"):
        load_params(path)

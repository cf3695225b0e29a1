"""Preflight: a real dataset's recipe stops at prepare@ with the complete list of what to place."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from ad_pipeline.data.synthetic import loco
from ad_pipeline.data.synthetic.official import write_mvtec_loco
from ad_pipeline.errors import UserError
from stages.cli import app

TINY = loco.LocoCounts(train=2, validation=1, test_good=1, logical=1, structural=1)


@pytest.fixture
def project(tmp_path, monkeypatch, repo):
    write_mvtec_loco(tmp_path / "data" / "mvtec_loco", categories=("pushpins",), counts=TINY)
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    raw["datasets"] = {"mvtec_loco": raw["datasets"]["mvtec_loco"]}
    for method in ("patchcore", "efficientad", "efficientad_m", "puad", "puad_m", "csad", "psad", "musc", "uniad"):
        raw[method]["datasets"] = [d for d in raw[method]["datasets"] if d == "mvtec_loco"]
    raw["fuse"]["datasets"], raw["summary_datasets"], raw["uniad_vis"]["datasets"] = ["mvtec_loco"], [], []
    raw["weights_dir"] = str(tmp_path / "weights")  # empty: nothing placed
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no library cache either
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path, raw


def _prepare(tmp_path, raw):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return CliRunner().invoke(app, ["--quiet", "prepare", "mvtec_loco"], catch_exceptions=False)


def test_prepare_lists_every_missing_input_and_writes_nothing(project):
    tmp_path, raw = project
    with pytest.raises(UserError) as err:
        _prepare(tmp_path, raw)
    text = str(err.value)
    for item in ("[MISSING] patchcore: wide_resnet50_2 weights", "wide_resnet50_2-95faca4d.pth",
                 "(sha256 starts with 95faca4d)", "[MISSING] efficientad: efficientad.pretrain_images: images in "
                 "data/imagenet", "[MISSING] pseudo_labels: Grounded-SAM sam_hq", "[MISSING] psad: resnet101 weights",
                 "[distil ] efficientad_teacher: teacher", "[ok     ] part_segmenter: pushpins: few-shot part labels",
                 "efficientad_teacher"):
        assert item in text, item
    assert "estimated cost" in text and not (tmp_path / "artifacts" / "mvtec_loco" / "manifest").exists()


def test_random_init_allowed_explicitly_leaves_only_the_data_to_place(project):
    tmp_path, raw = project
    raw["datasets"]["mvtec_loco"]["profile"] = {"allow_random_init": True}
    with pytest.raises(UserError) as err:
        _prepare(tmp_path, raw)
    missing = [line for line in str(err.value).splitlines() if "[MISSING]" in line]
    assert missing and all("images in data/imagenet" in line for line in missing), missing
    (tmp_path / "data" / "imagenet").mkdir(parents=True)
    (tmp_path / "data" / "imagenet" / "a.png").write_bytes(
        (tmp_path / "data/mvtec_loco/pushpins/train/good/000.png").read_bytes())
    assert _prepare(tmp_path, raw).exit_code == 0
    index = json.loads((tmp_path / "artifacts/mvtec_loco/manifest/index.json").read_text())
    assert index["categories"] == ["pushpins"]

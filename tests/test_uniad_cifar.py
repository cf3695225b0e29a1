"""UniAD's CIFAR-10 setting: the official pickle folder → manifests of the four normal-class splits,
image-score post-processing, and prepare → uniad → evaluate on a generated folder."""

from __future__ import annotations

import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from ad_pipeline.data.layouts import cifar10, list_categories
from ad_pipeline.data.manifest import Manifest
from ad_pipeline.errors import LayoutError
from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.score import postprocess
from stages.cli import app
from tests.cifar_fixture import CLASSES, class_image, to_rows, write_cifar10


def test_splits_are_the_seeds_four_experiments():
    assert cifar10.SPLITS == {"01234": (0, 1, 2, 3, 4), "56789": (5, 6, 7, 8, 9),
                              "02468": (0, 2, 4, 6, 8), "13579": (1, 3, 5, 7, 9)}


def test_reader_decodes_the_official_row_layout(tmp_path):
    write_cifar10(tmp_path)
    data = cifar10.read_cifar10(tmp_path)
    assert data.classes == tuple(CLASSES)
    assert data.train.shape == (50, 32, 32, 3) and data.test.shape == (20, 32, 32, 3)
    assert data.train_labels.tolist() == list(range(10)) * 5 and data.test_labels.tolist() == list(range(10)) * 2
    # a row is R plane, G plane, B plane, each 32x32 row-major: pixel (y=1, x=2) green is row[1024 + 32 + 2]
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        rows = pickle.load(f, encoding="bytes")[b"data"]
    assert data.test[3, 1, 2, 1] == rows[3, 1024 + 32 + 2] and data.test[3, 31, 0, 2] == rows[3, 2048 + 31 * 32]
    assert np.array_equal(to_rows(data.test), rows)
    # the root may also be the batches folder itself
    assert cifar10.read_cifar10(tmp_path / "cifar-10-batches-py").classes == tuple(CLASSES)


def test_manifest_of_a_split(tmp_path):
    write_cifar10(tmp_path)
    data = cifar10.read_cifar10(tmp_path)
    m = cifar10.build_manifest("c10", data, tmp_path / "images", "13579", val_fraction=0.2, seed=0)
    normal = {CLASSES[c] for c in (1, 3, 5, 7, 9)}
    fit = m.split("train") + m.split("validation")
    assert len(fit) == 25 and len(m.split("validation")) == 5 and all(s.holdout for s in m.split("validation"))
    assert {s.path.split("/")[1] for s in fit} == normal and all(s.label == 0 for s in fit)
    test = m.split("test")
    assert len(test) == 20 and sorted(s.path for s in test) == sorted(
        cifar10.image_path(data, "test", i) for i in range(20))
    assert [s.label for s in test] == [0] * 10 + [1] * 10  # normal first, then anomalies
    assert all((s.label == 0) == (s.path.split("/")[1] in normal) for s in test)
    assert [s.defect_type for s in test[10:]] == [c for c in sorted(set(CLASSES) - normal) for _ in range(2)]
    assert {s.defect_type for s in test[:10]} == {"good"} and not any(s.mask_paths for s in test)
    assert m.extras == {"normal_classes": sorted(normal, key=CLASSES.index), "model_group": "13579"}
    assert Manifest.from_json(m.to_json()).samples == m.samples
    # the PNGs are the decoded pixels, losslessly
    cifar10.write_images(data, tmp_path / "images")
    assert np.array_equal(np.asarray(Image.open(m.root / test[-1].path)), data.test[int(test[-1].stem)])


def test_missing_or_broken_folder_says_where_to_put_it(tmp_path):
    with pytest.raises(LayoutError, match="dataset root not found") as e:
        list_categories("cifar10", tmp_path / "nowhere")
    assert "cifar-10-batches-py" in e.value.fix and "https://www.cs.toronto.edu/~kriz/cifar.html" in e.value.fix
    with pytest.raises(LayoutError, match="no cifar-10-batches-py folder here"):
        list_categories("cifar10", tmp_path)
    folder = write_cifar10(tmp_path)
    assert list_categories("cifar10", tmp_path) == ["01234", "56789", "02468", "13579"]
    (folder / "test_batch").unlink()
    with pytest.raises(LayoutError, match="missing file.*test_batch"):
        list_categories("cifar10", tmp_path)
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(LayoutError, match="not a CIFAR-10 pickle") as e:
        cifar10.read_cifar10(tmp_path)
    assert e.value.path.endswith("test_batch")
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f, protocol=2)
    with pytest.raises(LayoutError, match=r"uint8 \[N, 3072\]"):
        cifar10.read_cifar10(tmp_path)


def test_postprocessing_rules_on_a_hand_made_map():
    m = torch.zeros(1, 4, 4)
    m[0, 0, 0] = 8.0
    m[0, 3, 3] = 4.0
    # max of the 2x2 box average: the corner windows hold 8/4 = 2 and 4/4 = 1
    assert postprocess(m, "max", pool=2).tolist() == [2.0]
    assert postprocess(m, "mean").tolist() == [0.75]  # 12 / 16
    # population std: sqrt(E[x^2] - mean^2) = sqrt(80/16 - 0.5625) = sqrt(4.4375)
    assert postprocess(m, "std").item() == pytest.approx(4.4375 ** 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="unknown image score rule 'median'"):
        postprocess(m, "median")


def test_auto_score_rule_is_the_papers_per_dataset():
    assert Config().score_rule("cifar10") == "mean" and Config().score_rule("mvtec_ad") == "max"
    assert Config(image_score="std").score_rule("cifar10") == "std"


UNIAD_TINY = {"datasets": ["cifar10"], "backbone": "efficientnet_lite0",
              "feature_blocks": ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"],  # 5 blocks as the seed
              "image_size": 64, "resample": "lanczos", "hidden": 16, "heads": 2, "ffn": 32, "enc_layers": 1,
              "dec_layers": 1, "neighbor_size": 3, "epochs": 2, "lr_step": 1, "batch_size": 16, "lr": 1e-3,
              "checkpoint_every": 1, "num_workers": 0, "map_size": 32}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, ["--quiet", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


VIS_TINY = {"datasets": ["cifar10"], "planes": [16, 8, 8, 8], "blocks": [1, 1, 1, 1], "epochs": 15, "lr": 3e-3,
            "batch_size": 8}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar10(root / "data" / "cifar10")
    params = {"seed": 0, "pretrained": "false",
              "datasets": {"cifar10": {"root": "data/cifar10", "format": "cifar10", "published": "cifar10",
                                       "profile": {"allow_random_init": True}}},
              "uniad": UNIAD_TINY, "uniad_vis": VIS_TINY, "summary_datasets": ["cifar10"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    old = os.getcwd()
    os.chdir(root)
    try:
        invoke("prepare", "cifar10")
        invoke("uniad", "cifar10")
        invoke("evaluate", "cifar10")
        yield root
    finally:
        os.chdir(old)


def test_prepare_uniad_evaluate_on_the_official_layout(workdir):
    index = yaml.safe_load((workdir / "artifacts/cifar10/manifest/index.json").read_text())
    assert index["categories"] == ["01234", "56789", "02468", "13579"]
    assert len(list((workdir / "artifacts/cifar10/manifest/images").rglob("*.png"))) == 70
    metrics = yaml.safe_load((workdir / "metrics/cifar10.json").read_text())
    uniad = metrics["methods"]["uniad"]
    assert list(uniad["categories"]) == ["01234", "56789", "02468", "13579"]
    assert set(uniad["mean"]) == {"image_auroc", "image_ap", "image_f1_max"}  # no masks: no pixel metrics
    per_split = [c["image_auroc"] for c in uniad["categories"].values()]
    assert uniad["mean"]["image_auroc"] == pytest.approx(np.mean(per_split))
    out = workdir / "artifacts/cifar10/uniad"
    for split in cifar10.SPLITS:  # one model per split, trained on that split's normal classes only
        meta = yaml.safe_load((out / split / "meta.json").read_text())
        assert meta["categories"] == [split] and meta["n_train"] == 22 and meta["params"]["image_score"] == "auto"
        maps = np.load(out / split / "test_maps.npy")
        scores = np.load(out / split / "test_scores.npy")
        assert maps.shape == (20, 32, 32) and scores.shape == (20,)
    assert not np.array_equal(np.load(out / "01234/test_scores.npy"), np.load(out / "56789/test_scores.npy"))
    assert (workdir / "artifacts/checkpoints/uniad/cifar10/02468/checkpoint.pth").exists()


@pytest.mark.slow  # ≈ 20 s: four decoders and the report
def test_vis_stage_and_report_show_reconstructions(workdir):
    invoke("uniad-vis", "cifar10")
    vis = workdir / "artifacts/vis/uniad/cifar10"
    summary = yaml.safe_load((vis / "vis.json").read_text())
    assert list(summary["groups"]) == list(cifar10.SPLITS)
    for split, group in summary["groups"].items():
        assert group["categories"] == [split] and group["n_images"] == 20  # the split's test images (seed)
        assert group["loss_after"] < group["loss_before"] and len(group["loss_history"]) == 15
        assert [c for _, c in group["cases"][split]] == ["best: highest-scored anomaly", "worst: lowest-scored anomaly",
                                                        "worst: highest-scored normal image"]
        for name in ("reconstruction.png", "queries.png"):
            assert Image.open(vis / split / name).size[0] > 300
    invoke("report")
    page = (workdir / "report/index.html").read_text()
    for split in cifar10.SPLITS:
        assert f"src='img/vis_cifar10_{split}_uniad_reconstruction.png'" in page
        assert (workdir / f"report/img/vis_cifar10_{split}_uniad_queries.png").exists()
    assert "pub. 86.50" in page  # the published mean beside ours


def test_prepare_without_the_data_names_the_folder(tmp_path, monkeypatch):
    """An empty folder is an absent dataset (loud, exit 0, no results); a folder holding something
    else is a broken layout: one error naming the folder, nothing written."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"datasets": {"cifar10": {"root": "data/cifar10", "format": "cifar10"}}}))
    (tmp_path / "data/cifar10").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    invoke("prepare", "cifar10")
    index = json.loads((tmp_path / "artifacts/cifar10/manifest/index.json").read_text())
    assert index["absent"] and index["categories"] == [] and "cifar-10-python.tar.gz" in index["missing"]

    (tmp_path / "data/cifar10/notes.txt").write_text("not the data")
    shutil.rmtree(tmp_path / "artifacts")
    result = CliRunner().invoke(app, ["--quiet", "prepare", "cifar10"])
    assert result.exit_code != 0
    err = str(result.exception) if result.exception else result.output
    assert "no cifar-10-batches-py folder here" in err and "cifar-10-python.tar.gz" in err
    assert not (tmp_path / "artifacts/cifar10/manifest").exists()  # no partial artifact


def test_class_image_fixture_differs_by_class():
    rng = np.random.default_rng(0)
    assert np.abs(class_image(0, rng).astype(int) - class_image(5, rng).astype(int)).mean() > 20


@pytest.mark.slow  # ≈ 1 min: DVC on a clone of HEAD
def test_dvc_repro_evaluate_cifar10_on_a_generated_folder(tmp_path):
    import subprocess
    import sys

    from tests.conftest import REPO

    root = tmp_path / "repo"
    env = os.environ | {"PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}

    def sh(*cmd: str) -> str:
        done = subprocess.run(cmd, cwd=root if root.exists() else REPO, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout + done.stderr

    sh("git", "clone", "-q", str(REPO), str(root))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["pretrained"] = "false"
    params["datasets"]["cifar10"]["profile"]["allow_random_init"] = True
    params["uniad"] |= {k: v for k, v in UNIAD_TINY.items() if k != "datasets"}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_cifar10(root / "data" / "cifar10")
    out = sh("dvc", "repro", "evaluate@cifar10")
    assert "Running stage 'uniad@cifar10'" in out and "Running stage 'uniad@synthetic_ad'" not in out
    metrics = yaml.safe_load((root / "metrics/cifar10.json").read_text())
    assert metrics["published"] == "cifar10" and list(metrics["methods"]) == ["uniad"]
    assert list(metrics["methods"]["uniad"]["categories"]) == list(cifar10.SPLITS)
    assert "Running stage" not in sh("dvc", "repro", "evaluate@cifar10")  # cached

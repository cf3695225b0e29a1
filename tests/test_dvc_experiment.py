"""`dvc repro` and `dvc exp run -S backbone=…` end to end on a tiny configuration (slow: runs DVC).

Works on a clone of the committed HEAD, so it checks what CI and users get: with no target
(every stage, real datasets absent), params errors stopped by check_params before any output
is touched, and a failing stage that keeps the last good outputs (persist)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
BACKBONE_EXP = ("dvc", "exp", "run", "-S", "backbone=dinov2_vits14")  # verbatim: no target


def run(*cmd: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def sh(*cmd: str, cwd: Path, env: dict) -> str:
    done = run(*cmd, cwd=cwd, env=env)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def outputs(root: Path) -> dict[str, bytes]:
    """Bytes of the results a user keeps: metrics, headline, manifests and dumps."""
    files = [root / "metrics.json", root / "headline.json", *sorted((root / "metrics").glob("*")),
             *sorted((root / "artifacts").glob("synthetic_ad/*/disc/*.npy"))]
    return {str(f.relative_to(root)): f.read_bytes() for f in files}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp") / "repo"
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}
    sh("git", "clone", "-q", str(REPO), str(root), cwd=REPO, env=env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section in params.values():  # every method (and fuse, uniad_vis …) off but the two below
        if isinstance(section, dict) and "datasets" in section and isinstance(section["datasets"], list):
            section["datasets"] = []
    del params["datasets"]["real_bottle"]  # its root lies outside the clone (see README)
    params["backbone"] = "efficientnet_lite0"  # a top-level choice (the committed null = each paper's / profile's)
    params["datasets"]["synthetic_ad"]["categories"] = ["disc"]
    params["patchcore"] |= {"datasets": ["synthetic_ad"], "resize": 112, "image_size": 112,
                            "pretrain_embed_dim": 64, "target_embed_dim": 64}
    params["summary_datasets"] = ["synthetic_ad", "mvtec_ad"]  # mvtec_ad: absent in a fresh clone
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "commit", "-qam", "tiny", cwd=root, env=env)
    sh("dvc", "repro", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)  # as a user does: commit dvc.lock and the metrics
    sh("git", "commit", "-qm", "baseline run", cwd=root, env=env)
    return root, env


def test_absent_datasets_are_reported_not_failed(project):
    root, _ = project
    absent = json.loads((root / "metrics/mvtec_loco.json").read_text())
    assert absent["absent"] is True and "data/mvtec_loco" in absent["missing"] and "methods" not in absent
    assert json.loads((root / "headline.json").read_text())["mvtec_ad"] == {"absent": True}
    assert "mvtec_ad: DATA ABSENT" in (root / "report/results.md").read_text()
    assert (root / "data/visa/PUT_DATASET_HERE.md").exists()  # visa_convert without the raw archive


def test_second_repro_runs_nothing(project):
    root, env = project
    out = sh("dvc", "repro", cwd=root, env=env)
    assert "Running stage" not in out


def test_backbone_experiment_reruns_only_what_reads_backbone(project):
    root, env = project
    out = sh(*BACKBONE_EXP, cwd=root, env=env)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert "patchcore@synthetic_ad" in ran and "evaluate@synthetic_ad" in ran
    # check_params re-validates any params edit; its output is constant, so nothing follows from it
    assert not {s for s in ran if s.startswith(("prepare@", "efficientad", "musc"))}, ran
    again = sh(*BACKBONE_EXP, cwd=root, env=env)
    assert "Running stage" not in again  # the same experiment twice: a no-op
    rows = json.loads(sh("dvc", "exp", "show", "--json", cwd=root, env=env))
    backbones, columns = set(), set()
    for row in rows:
        for exp in [row, *(e for ex in row.get("experiments") or [] for e in ex.get("revs", []))]:
            data = exp.get("data") or {}
            backbone = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("backbone")
            metrics = data.get("metrics", {})
            columns |= set(metrics)
            headline = metrics.get("headline.json", {}).get("data", {})
            if backbone and headline.get("synthetic_ad", {}).get("patchcore"):
                backbones.add(backbone)
    assert {"efficientnet_lite0", "dinov2_vits14"} <= backbones
    assert columns == {"headline.json"}  # dvc exp show: the headline numbers only
    sh("git", "checkout", "-q", "--", ".", cwd=root, env=env)  # back to the baseline run
    sh("dvc", "checkout", "-q", cwd=root, env=env)


@pytest.mark.parametrize("edit", ["unknown_key", "renamed_key"])
def test_invalid_params_stop_before_any_output_is_touched(project, edit):
    root, env = project
    before = outputs(root)
    params_file = root / "params.yaml"
    text = params_file.read_text()
    if edit == "unknown_key":
        params_file.write_text(text + "backbonee: x\n")
        expected = "did you mean 'backbone'?"
    else:  # DVC alone would call the stages reading `threshold_quantile` changed and delete their outputs
        params_file.write_text(text.replace("threshold_quantile:", "threshold_quantil:"))
        expected = "did you mean 'threshold_quantile'?"
    try:
        done = run("dvc", "repro", cwd=root, env=env)
        log = done.stdout + done.stderr
        assert done.returncode != 0 and expected in log
        assert [line for line in log.splitlines() if line.startswith("Running stage")] == [
            "Running stage 'check_params':"]
        assert outputs(root) == before
    finally:
        params_file.write_text(text)
    assert "Running stage" not in sh("dvc", "repro", cwd=root, env=env)


def test_failing_stage_keeps_the_last_good_outputs(project):
    """A NaN in a dump makes evaluate@ fail naming the file and its writer; metrics stay in place."""
    root, env = project
    dump = root / "artifacts/synthetic_ad/patchcore/disc/test_scores.npy"
    metrics_before = (root / "metrics/synthetic_ad.json").read_bytes()
    good = dump.read_bytes()
    scores = np.load(dump)
    scores[0] = np.nan
    np.save(dump, scores)
    try:
        done = run("dvc", "repro", "-s", "evaluate@synthetic_ad", cwd=root, env=env)  # -s: not patchcore@
        log = done.stdout + done.stderr
        assert done.returncode != 0 and "test_scores.npy" in log and "written by patchcore@synthetic_ad" in log
        assert (root / "metrics/synthetic_ad.json").read_bytes() == metrics_before
        assert (root / "metrics.json").exists() and (root / "headline.json").exists()
    finally:
        dump.write_bytes(good)
    assert "Running stage" not in sh("dvc", "repro", "-s", "evaluate@synthetic_ad", cwd=root, env=env)

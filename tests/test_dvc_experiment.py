"""`dvc repro` and `dvc exp run -S backbone=…` end to end on a tiny configuration (slow: runs DVC).

Works on a clone of the committed HEAD, so it checks what CI and users get."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(*cmd: str, cwd: Path, env: dict) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp") / "repo"
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}
    sh("git", "clone", "-q", str(REPO), str(root), cwd=REPO, env=env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for method in ("musc", "uniad", "efficientad", "puad", "csad", "psad"):
        params[method]["datasets"] = []
    params["fuse"]["datasets"] = []
    params["backbone"] = "efficientnet_lite0"  # a top-level choice (the committed null = each paper's / profile's)
    params["datasets"]["synthetic_ad"]["categories"] = ["disc"]
    params["patchcore"] |= {"datasets": ["synthetic_ad"], "resize": 112, "image_size": 112,
                            "pretrain_embed_dim": 64, "target_embed_dim": 64}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh("git", "commit", "-qam", "tiny", cwd=root, env=env)
    sh("dvc", "repro", "evaluate@synthetic_ad", cwd=root, env=env)
    sh("git", "add", "-A", cwd=root, env=env)  # as a user does: commit dvc.lock and the metrics
    sh("git", "commit", "-qm", "baseline run", cwd=root, env=env)
    return root, env


def test_second_repro_runs_nothing(project):
    root, env = project
    out = sh("dvc", "repro", "evaluate@synthetic_ad", cwd=root, env=env)
    assert "Running stage" not in out


def test_backbone_experiment_reruns_patchcore_and_shows_both(project):
    root, env = project
    out = sh("dvc", "exp", "run", "-S", "backbone=dinov2_vits14", "evaluate@synthetic_ad", cwd=root, env=env)
    assert "Running stage 'patchcore@synthetic_ad'" in out
    assert "Running stage 'prepare@synthetic_ad'" not in out  # only what depends on `backbone`
    rows = json.loads(sh("dvc", "exp", "show", "--json", cwd=root, env=env))
    backbones = set()
    for row in rows:
        for exp in [row, *(e for ex in row.get("experiments") or [] for e in ex.get("revs", []))]:
            data = exp.get("data") or {}
            backbone = data.get("params", {}).get("params.yaml", {}).get("data", {}).get("backbone")
            metrics = data.get("metrics", {}).get("metrics/synthetic_ad.json", {}).get("data", {})
            if backbone and metrics.get("methods", {}).get("patchcore"):
                backbones.add(backbone)
    assert {"efficientnet_lite0", "dinov2_vits14"} <= backbones

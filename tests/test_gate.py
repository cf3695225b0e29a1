"""The CI regression gate: pass, drop beyond tolerance, disappeared, new, non-numeric leaves."""

import json

import pytest
import typer
from typer.testing import CliRunner

from ad_pipeline.errors import ArtifactError
from ad_pipeline.metrics.gate import DROPPED, IMPROVED, MISSING, NEW, OK, compare_metrics, flatten_metrics
from stages.check_metrics import check_metrics, check_metrics_command

BASE = {"dataset": "synthetic", "methods": {"patchcore": {"weights": "random-init", "mean": {"image_auroc": 0.90,
                                                                                            "aupro": 0.80}}},
        "runs": [0.5, True]}


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_flatten_keeps_numeric_leaves_only():
    assert flatten_metrics(BASE) == {"methods.patchcore.mean.image_auroc": 0.90,
                                     "methods.patchcore.mean.aupro": 0.80, "runs.0": 0.5}


def test_gate_passes_within_tolerance_and_reports_new(tmp_path, capsys):
    current = json.loads(json.dumps(BASE))
    current["methods"]["patchcore"]["mean"] |= {"image_auroc": 0.896, "aupro": 0.9, "pixel_ap": 0.3}
    code = check_metrics(_write(tmp_path / "a.json", BASE), _write(tmp_path / "b.json", current), tolerance=0.005)
    assert code == 0
    out = capsys.readouterr().out
    assert "methods.patchcore.mean.pixel_ap" in out and "-0.0040" in out
    statuses = {c.name.split(".")[-1]: c.status for c in compare_metrics(BASE, current, 0.005)}
    assert statuses == {"image_auroc": OK, "aupro": IMPROVED, "pixel_ap": NEW, "0": OK}


def test_gate_fails_on_drop_and_names_it(tmp_path, capsys):
    current = json.loads(json.dumps(BASE))
    current["methods"]["patchcore"]["mean"]["image_auroc"] = 0.894  # drop 0.006 > 0.005
    assert check_metrics(_write(tmp_path / "a.json", BASE), _write(tmp_path / "b.json", current)) == 1
    assert "FAIL methods.patchcore.mean.image_auroc: dropped" in capsys.readouterr().out
    assert [c.status for c in compare_metrics(BASE, current, 0.01)][0] == OK


def test_gate_fails_on_disappeared_metric(tmp_path, capsys):
    current = json.loads(json.dumps(BASE))
    del current["methods"]["patchcore"]["mean"]["aupro"]
    assert check_metrics(_write(tmp_path / "a.json", BASE), _write(tmp_path / "b.json", current)) == 1
    assert "FAIL methods.patchcore.mean.aupro: missing" in capsys.readouterr().out
    assert {c.status for c in compare_metrics(BASE, current)} == {OK, MISSING}


def test_gate_fails_on_nan(tmp_path):
    current = json.loads(json.dumps(BASE))
    current["methods"]["patchcore"]["mean"]["aupro"] = float("nan")
    assert check_metrics(_write(tmp_path / "a.json", BASE), _write(tmp_path / "b.json", current)) == 1


def test_gate_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="file not found"):
        check_metrics(tmp_path / "nope.json", _write(tmp_path / "b.json", BASE))


def test_command_exit_code(tmp_path):
    current = json.loads(json.dumps(BASE))
    current["methods"]["patchcore"]["mean"]["aupro"] = 0.5
    app = typer.Typer()
    app.command()(check_metrics_command)
    args = [str(_write(tmp_path / "a.json", BASE)), str(_write(tmp_path / "b.json", current))]
    failed = CliRunner().invoke(app, [*args, "--tolerance", "0.01"])
    assert failed.exit_code == 1 and DROPPED in failed.output
    assert CliRunner().invoke(app, [*args, "--tolerance", "0.5"]).exit_code == 0

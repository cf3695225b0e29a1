"""The CI regression gate: the noise model's rule, its one-rank-swap quanta, absorbed noise versus
an injected regression, disappeared / new / non-finite metrics, the noise file's errors."""

import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from ad_pipeline.errors import ArtifactError
from ad_pipeline.metrics.classification import f1_max, image_ap, image_auroc
from ad_pipeline.metrics.gate import (DROPPED, IMPROVED, MISSING, NEW, NO_NOISE, OK, NoiseModel, compare_metrics,
                                      flatten_metrics, image_quanta)
from stages.baseline_noise import metric_quanta
from stages.check_metrics import check_metrics, check_metrics_command

BASE = {"dataset": "synthetic", "methods": {"patchcore": {"weights": "random-init", "mean": {"image_auroc": 0.90,
                                                                                            "aupro": 0.80}}},
        "runs": [0.5, True]}
NAMES = ["methods.patchcore.mean.image_auroc", "methods.patchcore.mean.aupro", "runs.0"]


def _write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def _noise(tmp_path, spread=0.002, quantum=0.0, k=2.0, names=NAMES):
    model = NoiseModel(quantum=dict.fromkeys(names, quantum), spread=dict.fromkeys(names, spread), k=k)
    return _write(tmp_path / "noise.json", model.to_json({n: [0.0] for n in names}))


def test_flatten_keeps_numeric_leaves_only():
    assert flatten_metrics(BASE) == {"methods.patchcore.mean.image_auroc": 0.90,
                                     "methods.patchcore.mean.aupro": 0.80, "runs.0": 0.5}


def test_tolerance_is_the_largest_of_k_spread_quantum_resolution():
    model = NoiseModel(quantum={"a": 0.01, "b": 0.01, "c": 0.0}, spread={"a": 0.002, "b": 0.008, "c": 0.0}, k=2.0)
    assert model.tolerance("a") == 0.01 and model.tolerance("b") == 0.016 and model.tolerance("c") == 1e-4
    assert model.tolerance("d") is None
    assert NoiseModel.from_json(json.loads(json.dumps(model.to_json({n: [1.0] for n in "abc"})))) == model


def test_quanta_from_test_set_sizes():
    q = image_quanta([(12, 9), (6, 3)])
    assert q == pytest.approx({"image_auroc": (1 / 18) / 2, "image_ap": (1 / 12) / 2, "image_f1_max": (1 / 6) / 2})
    with pytest.raises(ValueError, match="anomalous and good"):
        image_quanta([(3, 0)])


def test_quanta_bound_every_adjacent_swap_and_auroc_is_exact():
    """Over all rankings of a 4+3 test set: every swap of adjacent anomalous/good images moves AUROC
    by exactly its quantum, and AP and F1-max by at most theirs (AP reaches it)."""
    from itertools import combinations

    p, n = 3, 2
    q = image_quanta([(p, n)])
    worst = {"image_ap": 0.0, "image_f1_max": 0.0}
    scores = np.arange(p + n, dtype=float)
    for pos in combinations(range(p + n), p):
        labels = np.isin(np.arange(p + n), pos).astype(int)
        for i in np.flatnonzero(labels[:-1] != labels[1:]):
            swapped = labels.copy()
            swapped[[i, i + 1]] = swapped[[i + 1, i]]
            assert abs(image_auroc(swapped, scores) - image_auroc(labels, scores)) == pytest.approx(q["image_auroc"])
            for name, fn in (("image_ap", image_ap), ("image_f1_max", f1_max)):
                worst[name] = max(worst[name], abs(fn(swapped, scores) - fn(labels, scores)))
    assert worst["image_ap"] == pytest.approx(q["image_ap"])
    assert worst["image_f1_max"] <= q["image_f1_max"]


def _metrics(labels, scores):
    return {"synthetic_ad": {"m": {"image_auroc": image_auroc(labels, scores), "image_ap": image_ap(labels, scores),
                                   "image_f1_max": f1_max(labels, scores)}}}


def test_gate_absorbs_one_rank_swap_and_fails_a_sign_flip(tmp_path, capsys):
    """Noise the gate must absorb (one adjacent anomalous/good pair swapped, as float noise does
    between machines) passes; an injected regression (the method's scores negated) fails."""
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(12, int), np.zeros(9, int)]
    scores = labels * 1.5 + rng.normal(size=labels.size)
    order = np.argsort(scores)
    i = next(i for i in range(len(order) - 1) if labels[order[i]] != labels[order[i + 1]])
    noisy = scores.copy()
    noisy[[order[i], order[i + 1]]] = scores[[order[i + 1], order[i]]]
    base, swapped, flipped = _metrics(labels, scores), _metrics(labels, noisy), _metrics(labels, -scores)
    names = list(flatten_metrics(base))
    quanta = metric_quanta(names, {"synthetic_ad": image_quanta([(12, 9)])})
    noise = _write(tmp_path / "noise.json",
                   NoiseModel(quanta, dict.fromkeys(names, 0.0)).to_json({n: [0.0] for n in names}))
    a = _write(tmp_path / "a.json", base)
    assert flatten_metrics(swapped) != flatten_metrics(base)
    assert check_metrics(a, _write(tmp_path / "b.json", swapped), noise) == 0
    assert check_metrics(a, _write(tmp_path / "c.json", flipped), noise) == 1
    assert "FAIL synthetic_ad.m.image_auroc: dropped" in capsys.readouterr().out


def test_gate_passes_within_tolerance_and_reports_new(tmp_path, capsys):
    current = json.loads(json.dumps(BASE))
    current["methods"]["patchcore"]["mean"] |= {"image_auroc": 0.897, "aupro": 0.9, "pixel_ap": 0.3}
    assert check_metrics(_write(tmp_path / "a.json", BASE), _write(tmp_path / "b.json", current),
                         _noise(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "methods.patchcore.mean.pixel_ap" in out and "-0.0030" in out and "0.0040" in out
    statuses = {c.name.split(".")[-1]: c.status for c in compare_metrics(BASE, current, 0.004)}
    assert statuses == {"image_auroc": OK, "aupro": IMPROVED, "pixel_ap": NEW, "0": OK}


def test_gate_fails_on_drop_beyond_noise_and_names_it(tmp_path, capsys):
    current = json.loads(json.dumps(BASE))
    current["methods"]["patchcore"]["mean"]["image_auroc"] = 0.895  # drop 0.005 > 2 * 0.002
    assert check_metrics(_write(tmp_path / "a.json", BASE), _write(tmp_path / "b.json", current),
                         _noise(tmp_path)) == 1
    assert "FAIL methods.patchcore.mean.image_auroc: dropped" in capsys.readouterr().out
    assert check_metrics(tmp_path / "a.json", tmp_path / "b.json", _noise(tmp_path, quantum=0.006)) == 0


def test_gate_fails_on_disappeared_metric_and_on_a_metric_without_noise(tmp_path, capsys):
    current = json.loads(json.dumps(BASE))
    del current["methods"]["patchcore"]["mean"]["aupro"]
    assert check_metrics(_write(tmp_path / "a.json", BASE), _write(tmp_path / "b.json", current),
                         _noise(tmp_path)) == 1
    assert "FAIL methods.patchcore.mean.aupro: missing" in capsys.readouterr().out
    assert check_metrics(tmp_path / "a.json", tmp_path / "a.json", _noise(tmp_path, names=NAMES[:2])) == 1
    assert "FAIL runs.0: no noise model" in capsys.readouterr().out
    assert [c.status for c in compare_metrics(BASE, current, 0.1)] == [OK, MISSING, OK]


def test_gate_fails_on_nan(tmp_path):
    current = json.loads(json.dumps(BASE))
    current["methods"]["patchcore"]["mean"]["aupro"] = float("nan")
    assert check_metrics(_write(tmp_path / "a.json", BASE), _write(tmp_path / "b.json", current),
                         _noise(tmp_path)) == 1


def test_gate_missing_or_malformed_files_are_clear_errors(tmp_path):
    b = _write(tmp_path / "b.json", BASE)
    with pytest.raises(ArtifactError, match="file not found"):
        check_metrics(tmp_path / "nope.json", b, _noise(tmp_path))
    with pytest.raises(ArtifactError, match="(?s)absent.json: file not found.*baseline-noise"):
        check_metrics(b, b, tmp_path / "absent.json")
    with pytest.raises(ArtifactError, match="bad.json: not a noise model .KeyError"):
        check_metrics(b, b, _write(tmp_path / "bad.json", {"metrics": {}}))


def test_noise_quanta_follow_the_flattened_names():
    quanta = {"synthetic_ad": {"image_auroc": 0.01}, "synthetic_loco": {"image_auroc_mean": 0.02}}
    names = ["synthetic_ad.uniad.image_auroc", "details.synthetic_loco.csad.image_auroc_mean",
             "synthetic_ad.uniad.pixel_auroc", "headline.auroc"]
    assert metric_quanta(names, quanta) == dict(zip(names, [0.01, 0.02, 0.0, 0.0]))


def test_command_exit_code(tmp_path):
    current = json.loads(json.dumps(BASE))
    current["methods"]["patchcore"]["mean"]["aupro"] = 0.5
    app = typer.Typer()
    app.command()(check_metrics_command)
    args = [str(_write(tmp_path / "a.json", BASE)), str(_write(tmp_path / "b.json", current))]
    failed = CliRunner().invoke(app, [*args, "--noise", str(_noise(tmp_path))])
    assert failed.exit_code == 1 and DROPPED in failed.output
    assert CliRunner().invoke(app, [*args, "--tolerance", "0.5"]).exit_code == 0
    assert NO_NOISE not in failed.output


def test_seed_run_reruns_stages_in_a_scratch_copy_and_leaves_the_workspace(tmp_path, monkeypatch):
    """baseline-noise's scratch run: params with the new seed, code and data linked, the re-run
    stages' outputs private (the workspace's metrics.json is untouched), data stages skipped."""
    import stages.baseline_noise as noise

    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    (ws / "params.yaml").write_text("seed: 0\nx: 1\n")
    (ws / "metrics.json").write_text('{"a": {"m": 0.5}}')
    write = ("python -c \"import json, yaml; s = yaml.safe_load(open('params.yaml'))['seed']; "
             "json.dump({'a': {'m': s / 10}}, open('metrics.json', 'w'))\"")
    monkeypatch.setattr(noise, "pipeline_commands", lambda: [
        ("synthesize", "touch data/written", ["data/synthetic"]), ("summarize", write, ["metrics.json"])])
    assert noise.seed_run(3, tmp_path / "seed3", ws) == {"a.m": 0.3}
    assert (tmp_path / "seed3" / "data").is_symlink() and not (ws / "data" / "written").exists()
    assert (ws / "metrics.json").read_text() == '{"a": {"m": 0.5}}'


def test_baseline_noise_reuses_only_the_runs_recorded_for_the_same_baseline(tmp_path, monkeypatch):
    """Extending gate.seeds re-runs only the new seeds when metrics_noise.json was written for
    this very baseline; any changed baseline value (or --fresh) re-runs every seed."""
    from types import SimpleNamespace

    import stages.baseline_noise as noise

    monkeypatch.chdir(tmp_path)
    (tmp_path / "metrics.json").write_text('{"d": {"m": 0.5}}')
    monkeypatch.setattr(noise, "params", lambda: SimpleNamespace(
        seed=0, summary_datasets=[], gate=SimpleNamespace(seeds=[1, 2], k=2.0)))
    ran = []
    monkeypatch.setattr(noise, "seed_run", lambda seed, root: ran.append(seed) or {"d.m": 0.5 + seed / 100})
    noise.run([1])
    noise.run([1, 2])
    out = json.loads((tmp_path / "metrics_noise.json").read_text())
    assert ran == [1, 2] and out["seeds"] == [0, 1, 2] and out["reused_seeds"] == [1]
    assert out["metrics"]["d.m"]["values"] == [0.5, 0.51, 0.52]
    assert out["metrics"]["d.m"]["spread"] == pytest.approx(0.02)
    noise.run([1, 2], fresh=True)
    assert ran == [1, 2, 1, 2]
    (tmp_path / "metrics.json").write_text('{"d": {"m": 0.6}}')
    noise.run([2])
    assert ran == [1, 2, 1, 2, 2]

"""Artifact I/O: atomic writes and manifest-checked score dumps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ad_pipeline.data.manifest import Manifest, Sample
from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import atomic_dir, atomic_path, read_scores, write_scores


def _manifest(names):
    return Manifest("ds", "mvtec_ad", "cat", __import__("pathlib").Path("/r"),
                    [Sample(f"test/good/{n}.png", "test", 0, "good") for n in names])


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_keeps_old_output_when_interrupted(tmp_path):
    final = tmp_path / "method"
    with atomic_dir(final) as d:
        (d / "a.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(final) as d:
            (d / "a.txt").write_text("new-but-incomplete")
            raise KeyboardInterrupt
    assert (final / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["method"]
    with atomic_dir(final) as d:
        (d / "b.txt").write_text("complete")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def test_scores_round_trip_and_stale_manifest(tmp_path):
    m = _manifest(["000", "001", "002"])
    scores = np.array([0.1, 0.5, 0.2], dtype=np.float32)
    maps = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    write_scores(tmp_path, "test", m.fingerprint("test"), scores, maps)
    s, mp = read_scores(tmp_path, "test", m.fingerprint("test"))
    np.testing.assert_array_equal(s, scores)
    np.testing.assert_allclose(mp, maps.astype(np.float16))
    reordered = _manifest(["001", "000", "002"])
    with pytest.raises(ArtifactError, match="another manifest"):
        read_scores(tmp_path, "test", reordered.fingerprint("test"))


def test_garbage_scores_are_refused_naming_file_and_stage(tmp_path):
    with pytest.raises(ArtifactError, match=r"test scores hold NaN/inf in 1 row\(s\) \(first: \[1\]\); written by "
                                            r"patchcore@ds") as e:
        write_scores(tmp_path, "test", "fp", np.array([0.1, np.nan]), None, writer="patchcore@ds")
    assert "test_scores.npy" in str(e.value) and "re-run it" in str(e.value)
    maps = np.zeros((2, 3, 3), np.float32)
    maps[0, 1, 1] = np.inf
    with pytest.raises(ArtifactError, match="test maps hold NaN/inf.*first: \\[0\\]"):
        write_scores(tmp_path, "test", "fp", np.array([0.1, 0.2]), maps, writer="uniad@ds")
    assert not list(tmp_path.iterdir())


def test_non_finite_dump_on_load_names_file_and_writer(tmp_path):
    write_scores(tmp_path, "test", "fp", np.array([0.1, 0.2]), None, writer="efficientad@ds")
    np.save(tmp_path / "test_scores.npy", np.array([0.1, np.nan], np.float32))  # damaged after writing
    with pytest.raises(ArtifactError, match="written by efficientad@ds") as e:
        read_scores(tmp_path, "test", "fp")
    assert str(tmp_path / "test_scores.npy") in str(e.value) and "dvc repro -f efficientad@ds" in str(e.value)


def test_fingerprint_covers_the_image_bytes(tmp_path):
    m = _manifest(["000", "001"])
    same = Manifest(m.dataset, m.format, m.category, m.root, m.samples, digests={"test/good/000.png": "a"})
    other = Manifest(m.dataset, m.format, m.category, m.root, m.samples, digests={"test/good/000.png": "b"})
    assert len({m.fingerprint("test"), same.fingerprint("test"), other.fingerprint("test")}) == 3


def test_missing_dump_names_the_fix(tmp_path):
    with pytest.raises(ArtifactError, match="dvc repro"):
        read_scores(tmp_path, "test", "fp")


def test_manifest_json_round_trip(tmp_path):
    m = Manifest("ds", "mvtec_loco", "c", tmp_path, [
        Sample("train/good/000.png", "train", 0, "good"),
        Sample("test/logical_anomalies/000.png", "test", 1, "logical_anomalies",
               ("ground_truth/logical_anomalies/000/000.png", "ground_truth/logical_anomalies/000/001.png")),
    ], {"defects_config": "defects_config.json"})
    m.save(tmp_path / "m.json")
    back = Manifest.load(tmp_path / "m.json")
    assert back == m
    assert back.fingerprint("test") == m.fingerprint("test") != m.fingerprint("train")


def test_large_maps_are_scaled_exactly_into_float16(tmp_path):
    m = _manifest(["000"])
    maps = np.array([[[1.5e5, 3.0], [70000.0, 0.0]]], dtype=np.float32)
    write_scores(tmp_path, "test", m.fingerprint("test"), np.array([1.0]), maps)
    raw = np.load(tmp_path / "test_maps.npy")
    assert raw.dtype == np.float16 and np.isfinite(raw).all()
    _, back = read_scores(tmp_path, "test", m.fingerprint("test"))
    np.testing.assert_allclose(back, maps, rtol=1e-3)
    assert back[0, 1, 1] == 0.0


def test_float32_maps_are_stored_exactly_and_the_dtype_recorded(tmp_path):
    m = _manifest(["000"])
    maps = np.array([[[1.5e5, 0.1234567], [1e-7, 0.0]]], dtype=np.float32)  # float16 would round/overflow these
    write_scores(tmp_path, "test", m.fingerprint("test"), np.array([1.0]), maps, map_dtype="float32")
    _, back = read_scores(tmp_path, "test", m.fingerprint("test"))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, maps)
    index = json.loads((tmp_path / "test_index.json").read_text())
    assert index["map_dtype"] == "float32" and index["map_scale"] == 1.0
    with pytest.raises(ValueError, match="map_dtype"):
        write_scores(tmp_path, "test", m.fingerprint("test"), np.array([1.0]), maps, map_dtype="float64")

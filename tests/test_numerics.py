"""Numerics profiles: the knobs take effect in a fresh process (torch's CPU capability, threads),
native leaves the libraries alone, older CPUs get the SSE4 paths, overrides are recorded."""

import json
import os
import subprocess
import sys

import pytest

from ad_pipeline import numerics

PROBE = ("import json, sys; from pathlib import Path; from stages.cli import _set_numerics; "
         "_set_numerics(Path(sys.argv[1])); from ad_pipeline import numerics; import numpy, torch; "
         "from numpy._core._multiarray_umath import __cpu_features__ as f; "
         "print(json.dumps(numerics.record() | {'numpy_x86_v4': f.get('X86_V4', False)}))")


def _probe(repo, tmp_path, params: str, **env) -> dict:
    (tmp_path / "params.yaml").write_text(params)
    clean = {k: v for k, v in os.environ.items() if k not in (numerics.PROFILE_ENV, numerics.LEVEL_ENV)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "params.yaml")], cwd=repo, check=True,
                         capture_output=True, text=True, env=clean | {"OMP_NUM_THREADS": "1"} | env).stdout
    return json.loads(out.splitlines()[-1])


def test_portable_profile_takes_effect_and_records_the_override(repo, tmp_path):
    if numerics.cpu_level() != "avx2":
        pytest.skip("this CPU has no AVX2")
    rec = _probe(repo, tmp_path, "numerics: {threads: 3}\n")
    assert rec["torch_cpu_capability"] == "AVX2" and rec["torch_threads"] == 3 and not rec["numpy_x86_v4"]
    assert rec["profile"] == "portable" and rec["env"]["MKL_CBWR"] == "COMPATIBLE"
    assert rec["replaced"] == {"OMP_NUM_THREADS": "1"} and rec["late"] == []


def test_older_cpu_gets_sse4_paths_and_native_changes_nothing(repo, tmp_path):
    old = _probe(repo, tmp_path, "seed: 0\n", AD_PIPELINE_CPU_LEVEL="sse4")
    assert (old["level"], old["torch_cpu_capability"], old["torch_threads"]) == ("sse4", "DEFAULT", 2)
    native = _probe(repo, tmp_path, "numerics: {profile: portable}\n", AD_PIPELINE_NUMERICS="native")
    assert native["profile"] == "native" and native["env"] == {} and native["torch_threads"] == 1


def test_cpu_level_from_cpuinfo_flags(tmp_path, monkeypatch):
    monkeypatch.delenv(numerics.LEVEL_ENV, raising=False)
    info = tmp_path / "cpuinfo"
    info.write_text("processor: 0\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f\n")
    assert numerics.cpu_level(info) == "avx2"
    info.write_text("flags\t\t: fpu sse4_1 sse4_2 avx\n")
    assert numerics.cpu_level(info) == "sse4"
    monkeypatch.setenv(numerics.LEVEL_ENV, "avx512")
    with pytest.raises(ValueError, match="expected one of"):
        numerics.cpu_level(info)


def test_apply_after_torch_loaded_sets_nothing(monkeypatch):
    monkeypatch.delenv(numerics.PROFILE_ENV, raising=False)
    before = dict(os.environ)
    settings = numerics.apply(numerics.NumericsConfig())
    assert "torch" in settings["late"] and dict(os.environ) == before
    assert numerics.profile_env(numerics.NumericsConfig(profile="native"), "avx2") == {}

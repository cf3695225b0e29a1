"""Stage ``check_params``: validate the whole params.yaml before any other stage runs.

It tracks every key of params.yaml (DVC re-runs it on any edit) and every other stage depends
on its output, whose content is constant: a valid edit re-runs nothing else by itself, an
invalid one (unknown key, wrong type, a renamed key) stops `dvc repro` / `dvc exp run` here
with the schema's message, before any other stage's outputs are touched.
"""

from __future__ import annotations

from pathlib import Path

from ad_pipeline.io import atomic_path
from stages.common import ARTIFACTS, params

OUT = ARTIFACTS / "params.valid"
CONTENT = "params.yaml passed stages/params.py\n"  # constant: downstream stages never re-run for it


def run(out: Path = OUT) -> None:
    params()  # raises ParamsError with the "did you mean" hint
    with atomic_path(out) as tmp:
        tmp.write_text(CONTENT)

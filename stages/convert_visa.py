"""Stage ``visa_convert``: raw VisA archive (split_csv/1cls.csv) → MVTec-style tree, masks 0/255."""

from __future__ import annotations

from pathlib import Path

from ad_pipeline.data.layouts.visa import convert_visa
from ad_pipeline.errors import ParamsError
from stages.common import OPTIONS, log, params


def run(dataset: str) -> None:
    ds = params().datasets.get(dataset)
    if ds is None or ds.format != "visa" or not ds.raw_root:
        raise ParamsError(f"datasets.{dataset} must exist with format: visa and a raw_root", path=OPTIONS.params_path)
    counts = convert_visa(Path(ds.raw_root), Path(ds.root), progress=not OPTIONS.quiet)
    log.info("VisA converted into %s: %s", ds.root, counts)

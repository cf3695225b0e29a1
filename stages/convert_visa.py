"""Stage ``visa_convert``: raw VisA archive (split_csv/1cls.csv) → MVTec-style tree, masks 0/255.

When the raw archive is absent (``raw_root`` missing or holding only ``PUT_DATASET_HERE.md``)
the output is a folder holding only that placeholder, so ``prepare@visa`` reports VisA absent
(a warning, not a failure of the whole pipeline).
"""

from __future__ import annotations

from pathlib import Path

from ad_pipeline.data.layouts import absent_dataset, convert_visa
from ad_pipeline.data.layouts.common import PLACEHOLDER
from ad_pipeline.errors import ParamsError
from ad_pipeline.io import atomic_dir
from stages.common import OPTIONS, log, params, warn_absent


def run(dataset: str) -> None:
    ds = params().datasets.get(dataset)
    if ds is None or ds.format != "visa" or not ds.raw_root:
        raise ParamsError(f"datasets.{dataset} must exist with format: visa and a raw_root", path=OPTIONS.params_path)
    raw = Path(ds.raw_root)
    missing = absent_dataset("visa", raw)
    if missing is not None:
        warn_absent("visa_convert", dataset, f"raw archive {raw}: {missing}")
        with atomic_dir(ds.root) as out:
            (out / PLACEHOLDER).write_text(f"# VisA is absent\n\nExtract the raw VisA archive into {raw} "
                                           f"and re-run `dvc repro`; this folder is then written from it.\n")
        return
    counts = convert_visa(raw, Path(ds.root), progress=not OPTIONS.quiet)
    log.info("VisA converted into %s: %s", ds.root, counts)

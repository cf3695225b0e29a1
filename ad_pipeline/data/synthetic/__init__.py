"""Deterministic synthetic stand-ins for MVTec AD, MVTec LOCO AD, VisA, BTAD and ImageNet.

``generate_all(out_root, seed)`` writes, under ``out_root``::

    synthetic_ad/{weave,disc}/…        MVTec AD layout (+ manifest.csv)
    synthetic_loco/{tray,connectors}/…  MVTec LOCO AD layout + aux/part_labels (+ manifest.csv)
    visa_raw/…                          VisA raw archive layout with split_csv/1cls.csv
    btad_like/01/…                      BTAD layout
    generic_images/<class>/…            ImageFolder of random textures/shapes

Every image draws from its own numpy Generator keyed by (seed, dataset, category, split,
type, index), so the same seed gives byte-identical files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from ad_pipeline.data.synthetic import ad, extras, loco
from ad_pipeline.data.synthetic.layout import count_rows, write_manifest
from ad_pipeline.errors import UserError
from ad_pipeline.io import atomic_dir

__all__ = ["generate_all"]


def generate_all(out_root: Path, seed: int, *, progress: bool = True) -> dict:
    """Generate every synthetic dataset into ``out_root`` (replaced atomically as a whole).

    Returns counts ``{dataset: {category: {"split/type": n}}}``. About 10 s CPU on one core;
    memory: one image (≤ 256×256) and its masks at a time, a few MB. Raises UserError for a
    seed that is not a non-negative int.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise UserError(f"synthetic seed must be a non-negative integer, got {seed!r}",
                        fix="set `seed:` in params.yaml to an integer such as 0")
    with atomic_dir(out_root) as tmp:
        ad_root, loco_root = tmp / "synthetic_ad", tmp / "synthetic_loco"
        jobs: list[tuple[str, Callable[[], object]]] = []
        jobs += [(f"synthetic_ad/{c.name}", lambda c=c: ad.write_category(ad_root, seed, c)) for c in ad.CATEGORIES]
        jobs += [(f"synthetic_loco/{c.name}", lambda c=c: loco.write_category(loco_root, seed, c)) for c in loco.CATEGORIES]
        jobs += [("visa_raw", lambda: extras.write_visa(tmp / "visa_raw", seed)),
                 ("btad_like", lambda: extras.write_btad(tmp / "btad_like", seed)),
                 ("generic_images", lambda: extras.write_generic(tmp / "generic_images", seed))]
        results = {}
        for name, job in tqdm(jobs, desc="synthesize", disable=not progress):
            results[name] = job()
        ad_rows = [r for c in ad.CATEGORIES for r in results[f"synthetic_ad/{c.name}"]]
        loco_rows = [r for c in loco.CATEGORIES for r in results[f"synthetic_loco/{c.name}"]]
        write_manifest(ad_root, ad_rows)
        write_manifest(loco_root, loco_rows)
    return {
        "synthetic_ad": count_rows(ad_rows),
        "synthetic_loco": count_rows(loco_rows),
        "visa_raw": results["visa_raw"],
        "btad_like": results["btad_like"],
        "generic_images": results["generic_images"],
    }

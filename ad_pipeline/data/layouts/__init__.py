"""Dataset layout loaders: check a category folder and build its :class:`Manifest`.

Formats: ``mvtec_ad``, ``mvtec_loco``, ``visa`` (the tree :func:`convert_visa` writes),
``btad`` and ``folder`` (a user's own product in MVTec AD layout). Manifest paths are POSIX,
relative to ``Manifest.root`` = the category folder. ``cifar10`` (UniAD's semantic setting) is
read from its pickles and materialised as PNGs by prepare (:mod:`.cifar10`).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from ad_pipeline.data.layouts import btad, cifar10, common, folder, mvtec_ad, mvtec_loco, visa
from ad_pipeline.data.layouts.common import LayoutSpec
from ad_pipeline.data.layouts.visa import convert_visa
from ad_pipeline.data.manifest import Manifest
from ad_pipeline.errors import LayoutError

FORMATS = ("mvtec_ad", "mvtec_loco", "visa", "btad", "folder", "cifar10")
LAYOUTS: dict[str, LayoutSpec] = {m.SPEC.name: m.SPEC for m in (mvtec_ad, mvtec_loco, visa, btad, folder)}

__all__ = ["FORMATS", "LAYOUTS", "absent_dataset", "build_manifest", "cifar10", "convert_visa", "list_categories"]


def _spec(fmt: str) -> LayoutSpec:
    if fmt not in LAYOUTS:
        close = difflib.get_close_matches(fmt, FORMATS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise LayoutError(f"unknown dataset format {fmt!r}", fix=f"{hint}use one of {', '.join(FORMATS)}")
    return LAYOUTS[fmt]


def absent_dataset(fmt: str, root: Path) -> str | None:
    """None when data are at ``root``; else what is missing and where to put it (``root`` does
    not exist or holds only the ``PUT_DATASET_HERE.md`` placeholder)."""
    if not common.is_absent(Path(root)):
        return None
    return cifar10.missing_text(Path(root)) if fmt == cifar10.NAME else common.missing_text(_spec(fmt), Path(root))


def list_categories(fmt: str, root: Path) -> list[str]:
    """Sorted sub-folders of ``root`` that hold ``train/`` or ``test/``; a missing root or one
    without categories is a LayoutError saying where to put the dataset."""
    if fmt == cifar10.NAME:
        return cifar10.list_categories(Path(root))
    spec = _spec(fmt)
    categories = common.list_categories(Path(root))
    if not categories:
        raise common.missing_dataset_error(spec, Path(root))
    return categories


def build_manifest(dataset: str, fmt: str, root: Path, category: str, *, val_fraction: float = 0.1, seed: int = 42,
                   check_images: bool = True, progress: bool = True, require_masks: bool = True) -> Manifest:
    """Validate ``root/category`` in format ``fmt`` and return its ordered manifest.

    Order: split (train, validation, test), defect type (good first, then by name), file name.
    Without a validation folder (all but LOCO) a seeded ``val_fraction`` of train/good becomes
    split "validation" with ``holdout=True``. ``check_images`` fully decodes every file.
    ``require_masks=False`` accepts defect images without masks (image-level labels only).
    """
    if fmt == cifar10.NAME:
        raise LayoutError("cifar10 has no category folders to check",
                          fix="build its manifests with cifar10.read_cifar10 + cifar10.build_manifest (prepare does)")
    return common.build_manifest(_spec(fmt), dataset, Path(root), category, val_fraction=val_fraction, seed=seed,
                                 check_images=check_images, progress=progress, require_masks=require_masks)

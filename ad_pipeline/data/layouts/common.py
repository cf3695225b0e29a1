"""Shared layout checks and the one manifest builder every format uses.

All supported formats are MVTec-like: ``<category>/train/<good>``, ``test/<good>``,
``test/<defect>``, ``ground_truth/<defect>/…``. A :class:`LayoutSpec` states how a format
differs (normal folder name, extensions, mask naming, LOCO mask folders, a validation
folder); :func:`build_manifest` checks a category against it and returns the manifest.
"""

from __future__ import annotations

import difflib
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ad_pipeline.data.images import image_size, load_mask, open_image
from ad_pipeline.data.manifest import Manifest, Sample
from ad_pipeline.errors import LayoutError, ParamsError
from ad_pipeline.io import file_digest

_LISTED = 5  # how many offending files an error names


@dataclass(frozen=True)
class LayoutSpec:
    """How one format lays out a category folder.

    ``good``: name of the normal folders (``train/<good>``, ``test/<good>``).
    ``image_exts`` / ``mask_exts``: accepted extensions, lower case, matched case-insensitively.
    ``mask_suffixes``: a mask file is ``<image stem><suffix><ext>``; suffixes tried in order.
    ``mask_folders``: LOCO style, ``ground_truth/<type>/<stem>/*.png`` (one PNG per channel).
    ``validation_folder``: ``validation/<good>`` exists; otherwise part of train is held out.
    ``mask_values``: reads the allowed non-zero mask values from the category folder (LOCO).
    ``extras``: copied into ``Manifest.extras``. ``sketch``/``how_to_get``: shown in errors.
    """

    name: str
    sketch: str
    how_to_get: str
    good: str = "good"
    image_exts: tuple[str, ...] = (".png",)
    mask_exts: tuple[str, ...] = (".png",)
    mask_suffixes: tuple[str, ...] = ("_mask",)
    mask_folders: bool = False
    validation_folder: bool = False
    mask_values: Callable[[Path], frozenset[int]] | None = None
    extras: Mapping[str, str] = field(default_factory=dict)

    def layout_hint(self) -> str:
        return f"expected {self.name} layout:\n{self.sketch}"


def listed(names: list[str]) -> str:
    """The first few names, comma separated, with a count of the rest."""
    more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _visible(folder: Path) -> list[Path]:
    """Entries of ``folder`` sorted by name, hidden files (``.DS_Store`` …) skipped."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def list_categories(root: Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` holding ``train/`` or ``test/``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [p.name for p in _visible(root) if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())]


PLACEHOLDER = "PUT_DATASET_HERE.md"  # the committed note in an empty data folder


def is_absent(root: Path) -> bool:
    """True when ``root`` does not exist or holds nothing but the placeholder note (and hidden
    files): the data were never put there. A folder with other content but no category is a
    broken layout instead (:func:`missing_dataset_error`)."""
    root = Path(root)
    return not root.is_dir() or all(p.name == PLACEHOLDER for p in _visible(root))


def missing_text(spec: LayoutSpec, root: Path) -> str:
    """What is missing and where to put it (one paragraph plus the layout sketch)."""
    return (f"{spec.how_to_get}, so that each category is a folder directly in {root} "
            f"(or point the dataset's `root` in params.yaml at it); {spec.layout_hint()}")


def missing_dataset_error(spec: LayoutSpec, root: Path) -> LayoutError:
    what = "dataset root not found" if not root.is_dir() else "no dataset categories found here"
    return LayoutError(what, path=root, fix=missing_text(spec, root))


def category_dir(spec: LayoutSpec, root: Path, category: str) -> Path:
    """``root/category`` after checking the dataset root and the category exist."""
    root = Path(root)
    categories = list_categories(root)
    folder = root / category
    if category in categories:
        return folder
    if folder.is_dir():
        raise LayoutError("empty category: no train/ or test/ folder inside", path=folder,
                          fix=f"copy the category's images into it; {spec.layout_hint()}")
    if not categories:
        raise missing_dataset_error(spec, root)
    close = difflib.get_close_matches(category, categories, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise LayoutError(f"unknown category {category!r}", path=root,
                      fix=f"{hint}valid categories: {', '.join(categories)}")


def _image_names(spec: LayoutSpec, folder: Path) -> list[str]:
    """Sorted image file names of one split folder; a missing/empty folder or a stray entry is an error."""
    if not folder.is_dir():
        raise LayoutError("missing folder", path=folder, fix=spec.layout_hint())
    names, stray = [], []
    for p in _visible(folder):
        (names if p.is_file() and p.suffix.lower() in spec.image_exts else stray).append(p.name)
    if stray:
        raise LayoutError(f"unexpected entries {listed(stray)}; expected only images ({' '.join(spec.image_exts)})",
                          path=folder, fix="move or delete them (or convert the images)")
    if not names:
        raise LayoutError(f"empty folder: no images ({' '.join(spec.image_exts)})", path=folder,
                          fix="put the images there (an empty test/<defect> folder may instead be deleted)")
    stem_counts = Counter(Path(n).stem for n in names)
    clashing = [n for n in names if stem_counts[Path(n).stem] > 1]
    if clashing:
        raise LayoutError(f"images share a file stem, so masks cannot be matched: {listed(clashing)}",
                          path=folder, fix="rename or remove the duplicates")
    return names


def _mask_stem(spec: LayoutSpec, mask: Path, stems: set[str]) -> str | None:
    """The stem of the image that mask file ``mask`` belongs to, or None."""
    if not mask.is_file() or mask.suffix.lower() not in spec.mask_exts:
        return None
    for suffix in spec.mask_suffixes:
        if mask.stem.endswith(suffix):
            stem = mask.stem[: len(mask.stem) - len(suffix)]
            if stem in stems:
                return stem
    return None


def _channels(entry: Path, stems: set[str]) -> tuple[str, ...] | None:
    """LOCO: the sorted PNG channels of mask folder ``entry`` if it names an image, else None."""
    if not entry.is_dir() or entry.name not in stems:
        return None
    return tuple(p.name for p in _visible(entry) if p.is_file() and p.suffix.lower() == ".png")


def _match_masks(spec: LayoutSpec, gt_dir: Path, names: list[str], require: bool = True) -> dict[str, tuple[str, ...]]:
    """Image name -> its mask paths relative to ``gt_dir``. Every image needs its mask(s) (unless
    ``require`` is False: image-level labels only); every mask needs an image; one mask file per
    image (LOCO: one folder of channels)."""
    stem_to_name = {Path(n).stem: n for n in names}
    stems = set(stem_to_name)
    found: dict[str, list[str]] = {}
    orphans = []
    for entry in _visible(gt_dir) if gt_dir.is_dir() else []:
        if spec.mask_folders:
            channels = _channels(entry, stems)
            if channels is None:
                orphans.append(entry.name)
            elif channels:
                found[entry.name] = [f"{entry.name}/{c}" for c in channels]
        else:
            stem = _mask_stem(spec, entry, stems)
            if stem is None:
                orphans.append(entry.name)
            else:
                found.setdefault(stem, []).append(entry.name)
    naming = ("a folder <image stem>/ of PNG masks" if spec.mask_folders else
              " or ".join(f"<image stem>{s}{{{','.join(spec.mask_exts)}}}" for s in spec.mask_suffixes))
    if orphans:
        raise LayoutError(f"masks without a matching image: {listed(orphans)}", path=gt_dir,
                          fix=f"each mask must be named {naming} after an image in the test folder; "
                          "rename or delete these")
    missing = [n for s, n in stem_to_name.items() if s not in found]
    if missing and require:
        raise LayoutError(f"{len(missing)} defect image(s) without mask: {listed(missing)}", path=gt_dir,
                          fix=f"add the masks, named {naming}")
    several = [f"{m[0]} / {m[1]}" for m in found.values() if len(m) > 1 and not spec.mask_folders]
    if several:
        raise LayoutError(f"several masks for one image: {listed(several)}", path=gt_dir,
                          fix="keep one mask per image")
    return {n: tuple(found.get(s, ())) for s, n in stem_to_name.items()}


def holdout_names(names: list[str], val_fraction: float, seed: int) -> set[str]:
    """The names held out of train as validation: ceil(val_fraction·n) picked by a seeded
    numpy permutation of the name-sorted list (EfficientAD keeps int(0.9·n) for training)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ParamsError(f"val_fraction must be in [0, 1), got {val_fraction}", fix="set val_fraction to e.g. 0.1")
    ordered = sorted(names)
    # round() first so that e.g. 0.3·10 = 3.0000000000000004 does not become 4.
    n_val = math.ceil(round(val_fraction * len(ordered), 9))
    if n_val >= len(ordered):
        raise ParamsError(f"val_fraction={val_fraction} holds out all {len(ordered)} training images",
                          fix="lower val_fraction or add training images")
    perm = np.random.default_rng(seed).permutation(len(ordered))
    return {ordered[i] for i in perm[:n_val]}


def _check_ground_truth_root(spec: LayoutSpec, gt_root: Path, defects: list[str]) -> None:
    """Masks under ``ground_truth/<good>`` or a folder without a matching test folder are errors."""
    if not gt_root.is_dir():
        return
    for entry in _visible(gt_root):
        content = [p.name for p in _visible(entry)] if entry.is_dir() else [entry.name]
        if entry.name == spec.good and content:
            raise LayoutError(f"masks for good images: {listed(content)}", path=entry,
                              fix=f"good images have no masks; delete {entry}")
        if entry.name not in defects and entry.name != spec.good and content:
            raise LayoutError(f"masks without a matching image: no test/{entry.name} folder", path=entry,
                              fix=f"masks go to ground_truth/<defect>/ for images in test/<defect>/; "
                              f"known defect folders: {', '.join(defects)}")


def _collect(spec: LayoutSpec, cat: Path, val_fraction: float, seed: int, require_masks: bool = True) -> list[Sample]:
    """Samples in manifest order: split (train, validation, test), defect type (good first), name."""
    good = spec.good
    train = _image_names(spec, cat / "train" / good)
    if spec.validation_folder:
        held: set[str] = set()
        validation = [Sample(f"validation/{good}/{n}", "validation", 0, good)
                      for n in _image_names(spec, cat / "validation" / good)]
    else:
        held = holdout_names(train, val_fraction, seed)
        validation = [Sample(f"train/{good}/{n}", "validation", 0, good, holdout=True) for n in train if n in held]
    samples = [Sample(f"train/{good}/{n}", "train", 0, good) for n in train if n not in held] + validation

    test_dir = cat / "test"
    samples += [Sample(f"test/{good}/{n}", "test", 0, good) for n in _image_names(spec, test_dir / good)]
    defects = [p.name for p in _visible(test_dir) if p.is_dir() and p.name != good]
    if not defects:
        raise LayoutError("no defect folders: the test split holds only good images", path=test_dir,
                          fix=f"add anomalous images as test/<defect>/ with their masks; {spec.layout_hint()}")
    _check_ground_truth_root(spec, cat / "ground_truth", defects)
    for defect in defects:
        names = _image_names(spec, test_dir / defect)
        masks = _match_masks(spec, cat / "ground_truth" / defect, names, require_masks)
        samples += [Sample(f"test/{defect}/{n}", "test", 1, defect,
                           tuple(f"ground_truth/{defect}/{m}" for m in masks[n])) for n in names]
    return samples


def _check_mask_sizes(cat: Path, samples: list[Sample]) -> None:
    """Every mask has its image's size (read from the file headers, no decoding)."""
    wrong = []
    for s in samples:
        if not s.mask_paths:
            continue
        size = image_size(cat / s.path)
        for m in s.mask_paths:
            mask_size = image_size(cat / m)
            if mask_size != size:
                wrong.append((m, mask_size, size))
    if wrong:
        first, (mh, mw), (h, w) = wrong[0]
        raise LayoutError(f"mask is {mw}×{mh} but its image is {w}×{h} ({len(wrong)} mask(s) differ: "
                          f"{listed([m for m, _, _ in wrong])})", path=cat / first,
                          fix="masks must have the size of their image; re-export them at full resolution")


def _check_file(path: Path, allowed: frozenset[int] | None, decode: bool) -> str:
    """sha256 of one image or mask; with ``decode`` it is also fully decoded, and with ``allowed``
    the mask's non-zero values must be in it."""
    digest = file_digest(path)
    if not decode:
        return digest
    if allowed is None:
        open_image(path)
        return digest
    values = set(np.unique(load_mask(path)).tolist()) - {0}
    if not values <= allowed:
        raise LayoutError(f"mask has pixel value(s) {sorted(values - allowed)} not in defects_config.json "
                          f"(known: {sorted(allowed)})", path=path,
                          fix="fix the mask or add its defect type to defects_config.json")
    return digest


def _check_all(cat: Path, samples: list[Sample], allowed: frozenset[int] | None, decode: bool,
               progress: bool) -> dict[str, str]:
    """Hash (and with ``decode`` fully decode) every image and mask of the manifest on a thread
    pool (hashlib and PIL release the GIL); results are consumed in manifest order, so the first
    bad file in that order is reported. Returns {path relative to ``cat``: sha256}. Memory: one
    decoded file per worker thread."""
    jobs = [(s.path, None) for s in samples] + [(m, allowed) for s in samples for m in s.mask_paths]
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        results = pool.map(lambda job: _check_file(cat / job[0], job[1], decode), jobs)
        digests = {rel: d for (rel, _), d in zip(jobs, tqdm(results, total=len(jobs), desc=f"checking {cat.name}",
                                                            unit="file", disable=not progress))}
    finally:
        pool.shutdown(cancel_futures=True)  # after an error, do not decode the rest
    return digests


def aux_digests(cat: Path, known: set[str]) -> dict[str, str]:
    """sha256 of every other (non-hidden) file of the category folder: part labels, parts.json,
    defects_config.json … that some stages read. {POSIX path relative to ``cat``: sha256}."""
    files = sorted(p for p in cat.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(cat).parts))
    return {rel: file_digest(p) for p in files if (rel := p.relative_to(cat).as_posix()) not in known}


def build_manifest(spec: LayoutSpec, dataset: str, root: Path, category: str, *, val_fraction: float = 0.1,
                   seed: int = 42, check_images: bool = True, progress: bool = True,
                   require_masks: bool = True) -> Manifest:
    """Check ``root/category`` against ``spec`` and return its manifest (root = the category folder).

    With ``check_images`` every image and mask is fully decoded (and LOCO mask values are
    checked against defects_config.json); mask sizes are always checked from the headers.
    Every file of the category is hashed (sha256; the manifest is content-addressed, so
    changed bytes under the same names change its fingerprints): one read of each file, which
    for MVTec AD's ~5 GB is I/O-bound, ~10-20 s on a warm page cache and 2 cores.
    """
    cat = category_dir(spec, Path(root), category)
    allowed = spec.mask_values(cat) if spec.mask_values else None
    samples = _collect(spec, cat, val_fraction, seed, require_masks)
    _check_mask_sizes(cat, samples)
    digests = _check_all(cat, samples, allowed, check_images, progress)
    digests |= aux_digests(cat, set(digests))
    return Manifest(dataset, spec.name, category, cat, samples, dict(spec.extras), digests)

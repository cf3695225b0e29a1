"""CIFAR-10 one-vs-many semantic AD (UniAD's CIFAR setting) from the official python folder.

Reads ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (the pickles of
``cifar-10-python.tar.gz``; ``b"data"`` uint8 ``[N, 3072]`` = R, G, B planes of 32×32 row-major,
``b"labels"`` ints 0..9). A "category" is one of UniAD's four normal-class splits: train on the
training images of its five normal classes (one unified model per split), test on the whole
test set, normal classes good (label 0), the other five anomalous (label 1, no masks).

The reference samples as many anomalous test images as normal ones (``random.sample``); with five
classes each way that is all 5000 of them, so the test set here is the whole test set in file order.

The pipeline reads images from files: :func:`write_images` materialises the 60 000 images once as
PNGs ``train/<class name>/<index>.png`` and ``test/<class name>/<index>.png`` (index within the
official split order), shared by the four split manifests.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ad_pipeline.data.layouts.common import holdout_names
from ad_pipeline.data.manifest import Manifest, Sample
from ad_pipeline.errors import LayoutError

NAME = "cifar10"
BATCHES = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
META_FILE = "batches.meta"
# The seed's experiments/CIFAR-10/<split>/config.yaml `normals`.
SPLITS: dict[str, tuple[int, ...]] = {
    "01234": (0, 1, 2, 3, 4),
    "56789": (5, 6, 7, 8, 9),
    "02468": (0, 2, 4, 6, 8),
    "13579": (1, 3, 5, 7, 9),
}
HOW_TO_GET = ("download the CIFAR-10 python version (cifar-10-python.tar.gz) from "
              "https://www.cs.toronto.edu/~kriz/cifar.html and extract it")
SKETCH = f"""  <root>/{BATCHES}/
    data_batch_1 ... data_batch_5   training pickles (10 000 images each)
    test_batch                      test pickle (10 000 images)
    batches.meta                    label_names"""


@dataclass(frozen=True)
class Cifar10:
    """The decoded dataset: ``train``/``test`` uint8 ``[N, 32, 32, 3]`` (HWC RGB), labels int64 ``[N]``."""

    classes: tuple[str, ...]
    train: np.ndarray
    train_labels: np.ndarray
    test: np.ndarray
    test_labels: np.ndarray


def missing_text(root: Path) -> str:
    """What to download and where to put it (the ``fix`` of every missing-data error)."""
    return (f"{HOW_TO_GET} into {root} (or point the dataset's `root` in params.yaml at the folder holding "
            f"{BATCHES}); expected cifar10 layout:\n{SKETCH}")


def batches_dir(root: Path) -> Path:
    """``root/cifar-10-batches-py`` (or ``root`` itself if it is that folder), all files present."""
    root = Path(root)
    folder = root if root.name == BATCHES else root / BATCHES
    fix = missing_text(root)
    if not root.is_dir():
        raise LayoutError("dataset root not found", path=root, fix=fix)
    if not folder.is_dir():
        raise LayoutError(f"no {BATCHES} folder here", path=root, fix=fix)
    missing = [n for n in (*TRAIN_FILES, TEST_FILE, META_FILE) if not (folder / n).is_file()]
    if missing:
        raise LayoutError(f"missing file(s) {', '.join(missing)}", path=folder, fix=f"re-extract the archive; {fix}")
    return folder


def list_categories(root: Path) -> list[str]:
    """The four split names, after checking the folder is complete."""
    batches_dir(root)
    return list(SPLITS)


def _unpickle(path: Path) -> dict:
    fix = "re-extract cifar-10-python.tar.gz (the python version, not the binary or MATLAB one)"
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as e:  # noqa: BLE001 - any unreadable pickle gets the same advice
        raise LayoutError(f"not a CIFAR-10 pickle ({type(e).__name__}: {e})", path=path, fix=fix) from None
    if not isinstance(obj, dict):
        raise LayoutError(f"expected a dict, got {type(obj).__name__}", path=path, fix=fix)
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle(path)
    fix = "re-extract cifar-10-python.tar.gz"
    if "data" not in obj or "labels" not in obj:
        raise LayoutError(f"keys b'data' and b'labels' expected, got {sorted(map(str, obj))}", path=path, fix=fix)
    data = np.asarray(obj["data"])
    labels = np.asarray(obj["labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise LayoutError(f"b'data' must be uint8 [N, 3072] with N = len(b'labels') = {len(labels)}, "
                          f"got {data.dtype} {list(data.shape)}", path=path, fix=fix)
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise LayoutError(f"labels must be 0..9, got {labels.min()}..{labels.max()}", path=path, fix=fix)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def read_cifar10(root: Path) -> Cifar10:
    """Decode the official pickles under ``root`` (memory: 180 MB for the full dataset)."""
    folder = batches_dir(root)
    classes = _unpickle(folder / META_FILE).get("label_names")
    if not isinstance(classes, list) or len(classes) != 10:
        raise LayoutError("b'label_names' with 10 class names expected", path=folder / META_FILE,
                          fix="re-extract cifar-10-python.tar.gz")
    train = [_read_batch(folder / n) for n in TRAIN_FILES]
    test, test_labels = _read_batch(folder / TEST_FILE)
    names = tuple(c.decode() if isinstance(c, bytes) else str(c) for c in classes)
    return Cifar10(names, np.concatenate([d for d, _ in train]), np.concatenate([lb for _, lb in train]),
                   test, test_labels)


def image_path(data: Cifar10, split: str, index: int) -> str:
    """Relative PNG path of image ``index`` of ``split`` ("train" | "test")."""
    labels = data.train_labels if split == "train" else data.test_labels
    return f"{split}/{data.classes[labels[index]]}/{index:05d}.png"


def write_images(data: Cifar10, out: Path) -> None:
    """Write every image as a lossless PNG under ``out`` (see :func:`image_path`)."""
    for split, images in (("train", data.train), ("test", data.test)):
        for index, image in enumerate(images):
            path = Path(out) / image_path(data, split, index)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path)


def build_manifest(dataset: str, data: Cifar10, images_root: Path, category: str, *, val_fraction: float = 0.1,
                   seed: int = 42) -> Manifest:
    """Manifest of split ``category`` over the PNGs at ``images_root``.

    train: the normal classes' training images minus a seeded ``val_fraction`` held out as
    validation (as for the other formats without a validation folder); test: all test images,
    normal ones first (defect type ``good``), then the anomalous ones grouped by class name.
    ``extras["model_group"] = category``: each split trains its own unified model.
    """
    if category not in SPLITS:
        raise LayoutError(f"unknown category {category!r}", fix=f"valid cifar10 categories: {', '.join(SPLITS)}")
    normals = SPLITS[category]
    train = [image_path(data, "train", i) for i in np.flatnonzero(np.isin(data.train_labels, normals))]
    held = holdout_names(train, val_fraction, seed)
    samples = [Sample(p, "train", 0, "good") for p in train if p not in held]
    samples += [Sample(p, "validation", 0, "good", holdout=True) for p in train if p in held]
    is_normal = np.isin(data.test_labels, normals)
    samples += [Sample(image_path(data, "test", i), "test", 0, "good") for i in np.flatnonzero(is_normal)]
    anomalous = sorted(np.flatnonzero(~is_normal), key=lambda i: (data.classes[data.test_labels[i]], i))
    samples += [Sample(image_path(data, "test", i), "test", 1, data.classes[data.test_labels[i]]) for i in anomalous]
    extras = {"normal_classes": [data.classes[c] for c in normals], "model_group": category}
    # content addressing: the sha256 of each image's pixels (what its PNG encodes losslessly)
    digests = {s.path: hashlib.sha256((data.test if s.split == "test" else data.train)[int(Path(s.path).stem)]
                                      .tobytes()).hexdigest() for s in samples}
    return Manifest(dataset, NAME, category, Path(images_root), samples, extras, digests)

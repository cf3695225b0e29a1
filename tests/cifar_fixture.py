"""A tiny ``cifar-10-batches-py`` folder in the official pickle format (python-2 era protocol 2,
bytes keys), written by the tests that need one."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [32, 32, 3]: a class-specific colour and stripe period plus noise."""
    base = np.array([(37 * label) % 256, (91 * label + 60) % 256, (151 * label + 120) % 256], dtype=np.float64)
    stripes = 40 * np.sin(np.arange(32) * (label + 1) * np.pi / 16)[None, :, None]
    return np.clip(base + stripes + rng.normal(0, 10, (32, 32, 3)), 0, 255).astype(np.uint8)


def to_rows(images: np.ndarray) -> np.ndarray:
    """HWC uint8 [N, 32, 32, 3] → the official rows [N, 3072]: R plane, G plane, B plane, row-major."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), -1)


def _batch(labels: list[int], rng: np.random.Generator, name: str) -> dict:
    images = np.stack([class_image(c, rng) for c in labels])
    return {b"batch_label": name.encode(), b"labels": labels, b"data": to_rows(images),
            b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]}


def write_cifar10(root: Path, train_per_class: int = 1, test_per_class: int = 2, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with 5 training batches of ``train_per_class`` images per class
    and a test batch of ``test_per_class`` per class (labels cycle 0..9). Returns the folder."""
    rng = np.random.default_rng(seed)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {f"data_batch_{i}": _batch(list(range(10)) * train_per_class, rng, f"training batch {i} of 5")
             for i in range(1, 6)}
    files["test_batch"] = _batch(list(range(10)) * test_per_class, rng, "testing batch 1 of 1")
    files["batches.meta"] = {b"num_cases_per_batch": 10 * train_per_class,
                             b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    for name, obj in files.items():
        with open(folder / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    return folder

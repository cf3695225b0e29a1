"""Report figures (matplotlib, Agg backend): ROC curves and input / ground truth / map overlays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from ad_pipeline.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)


def roc_figure(labels: np.ndarray, scores: Mapping[str, np.ndarray], title: str, path: Path) -> None:
    """Image-level ROC curves of several methods on one axis."""
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, label=name, lw=1.5)
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def pro_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]], limit: float, title: str, path: Path) -> None:
    """Per-region-overlap curves (FPR, PRO) of several methods up to the AUPRO integration limit."""
    fig, ax = plt.subplots(figsize=(3.6, 3.4))
    for name, (fpr, pro) in curves.items():
        keep = fpr <= limit
        ax.plot(fpr[keep], pro[keep], label=name, lw=1.5)
    ax.set(xlabel="false positive rate", ylabel="per-region overlap", title=title, xlim=(0, limit), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def overlay_figure(rows: Sequence[dict], title: str, path: Path) -> None:
    """One row per case: input, ground truth, anomaly map over the input.

    Each row: ``image`` uint8 [H,W,3], ``mask`` bool [H,W] or None, ``map`` float [H,W] (same
    size as the image), ``caption`` str. Maps share one colour scale per figure.
    """
    vmin = min(float(r["map"].min()) for r in rows)
    vmax = max(float(r["map"].max()) for r in rows)
    fig, axes = plt.subplots(len(rows), 3, figsize=(6.3, 2.4 * len(rows)), squeeze=False)
    for col, name in enumerate(("input", "ground truth", "anomaly map")):
        axes[0][col].set_title(name, fontsize=8)
    for ax_row, r in zip(axes, rows):
        ax_row[0].imshow(r["image"])
        ax_row[1].imshow(r["mask"] if r["mask"] is not None else np.zeros(r["image"].shape[:2]), cmap="gray",
                         vmin=0, vmax=1)
        ax_row[2].imshow(r["image"])
        ax_row[2].imshow(r["map"], cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
    _caption_and_save(fig, axes, rows, title, path)


def pick_cases(labels: np.ndarray, scores: np.ndarray) -> list[tuple[int, str]]:
    """Best and worst cases: the most confident detection, the weakest detection (a miss, if any)
    and the normal image with the highest score (the worst false alarm)."""
    labels = np.asarray(labels)
    anomalous = np.flatnonzero(labels == 1)
    normal = np.flatnonzero(labels == 0)
    cases = []
    if anomalous.size:
        cases.append((int(anomalous[np.argmax(scores[anomalous])]), "best: highest-scored anomaly"))
        cases.append((int(anomalous[np.argmin(scores[anomalous])]), "worst: lowest-scored anomaly"))
    if normal.size:
        cases.append((int(normal[np.argmax(scores[normal])]), "worst: highest-scored normal image"))
    return cases


def reconstruction_figure(rows: Sequence[dict], title: str, path: Path) -> None:
    """UniAD's feature-reconstruction view, one row per case: input, decoding of its features,
    decoding of the reconstructed features, anomaly map over the input.

    Each row: ``image``, ``decoded``, ``reconstructed`` uint8 [H,W,3], ``map`` float [H,W], ``caption``.
    """
    vmin = min(float(r["map"].min()) for r in rows)
    vmax = max(float(r["map"].max()) for r in rows)
    fig, axes = plt.subplots(len(rows), 4, figsize=(8.4, 2.4 * len(rows)), squeeze=False)
    for col, name in enumerate(("input", "decoded features", "decoded reconstruction", "anomaly map")):
        axes[0][col].set_title(name, fontsize=8)
    for ax_row, r in zip(axes, rows):
        for ax, key in zip(ax_row, ("image", "decoded", "reconstructed", "image")):
            ax.imshow(r[key])
        ax_row[3].imshow(r["map"], cmap="jet", alpha=0.5, vmin=vmin, vmax=vmax)
    _caption_and_save(fig, axes, rows, title, path)


def _caption_and_save(fig, axes, rows: Sequence[dict], title: str, path: Path) -> None:
    """Shared ending of the one-row-per-case figures: each row's caption under its first panel,
    no axes, the title, then the PNG."""
    for ax_row, r in zip(axes, rows):
        ax_row[0].annotate(r["caption"], xy=(0, -0.03), xycoords="axes fraction", va="top", fontsize=7)
        for ax in ax_row:
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(hspace=0.3)
    _save(fig, path)


def image_row_figure(images: Mapping[str, np.ndarray], title: str, path: Path) -> None:
    """Named uint8 images [H,W,3] side by side (UniAD's learned-query visualisation)."""
    fig, axes = plt.subplots(1, len(images), figsize=(1.9 * len(images), 2.3), squeeze=False)
    for ax, (name, image) in zip(axes[0], images.items()):
        ax.imshow(image)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    _save(fig, path)

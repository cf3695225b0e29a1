"""Semantic pseudo-labels for one category (csad.md §1): proposer → descriptors → clusters → labels.

``generate_pseudo_labels`` is what the ``pseudo_labels@`` stage calls; ``PseudoLabels.save``/
``load`` give the on-disk layout the ``segmentor@`` stage reads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ad_pipeline.data.images import load_mask, load_rgb
from ad_pipeline.errors import ArtifactError
from ad_pipeline.io import atomic_path, read_json, save_npy, write_json
from ad_pipeline.segmentation.clustering import (
    BackboneLayer,
    ComponentDescriptor,
    area_histograms,
    cluster_components,
    component_crop,
    describe_components,
    fill_class_holes,
    filter_histograms,
    relabel,
)
from ad_pipeline.segmentation.config import PseudoLabelConfig
from ad_pipeline.segmentation.proposers import ColorComponentsProposer, MaskProposer, PartLabelProposer

log = logging.getLogger(__name__)


@dataclass
class PseudoLabels:
    """Per-image uint8 class maps (0 = background, 1..K) at original resolution, in ``paths`` order.

    ``histograms`` [N,K] area fractions of the kept classes; ``good_indices`` the supervised
    subset; ``info`` counts for logging (clusters found / kept, K, component-count mode);
    ``proposals`` the proposer's uint8 component label images (the repo's ``refined_masks``,
    LSA's copy-paste sources), None for directories written before they were saved.
    """

    paths: list[str]
    label_maps: list[np.ndarray]
    histograms: np.ndarray
    good_indices: np.ndarray
    info: dict = field(default_factory=dict)
    proposals: list[np.ndarray] | None = None

    @property
    def num_classes(self) -> int:
        """K + 1 (background included)."""
        return self.histograms.shape[1] + 1

    def save(self, out_dir: Path) -> None:
        """``labels/<i:04d>.png``, ``proposals/<i:04d>.png`` (when present), ``histograms.npy``,
        ``good_indices.npy``, ``pseudo_labels.json``."""
        out_dir = Path(out_dir)
        _save_pngs(out_dir / "labels", self.label_maps)
        if self.proposals is not None:
            _save_pngs(out_dir / "proposals", self.proposals)
        save_npy(out_dir / "histograms.npy", self.histograms.astype(np.float32))
        save_npy(out_dir / "good_indices.npy", self.good_indices.astype(np.int64))
        write_json(out_dir / "pseudo_labels.json", {"paths": self.paths, "num_classes": self.num_classes,
                                                    "has_proposals": self.proposals is not None, **self.info})

    @classmethod
    def load(cls, out_dir: Path) -> PseudoLabels:
        """Read :meth:`save`'s layout; a directory from before proposals were saved loads with
        ``proposals=None``. ArtifactError if a listed file is missing."""
        out_dir = Path(out_dir)
        meta = read_json(out_dir / "pseudo_labels.json")
        try:
            n = len(meta["paths"])
            maps = _load_pngs(out_dir / "labels", n)
            proposals = _load_pngs(out_dir / "proposals", n) if meta.get("has_proposals", False) else None
            hists = np.load(out_dir / "histograms.npy")
            good = np.load(out_dir / "good_indices.npy")
        except (FileNotFoundError, KeyError) as e:
            raise ArtifactError(f"incomplete pseudo-label directory ({e})", path=out_dir,
                                fix="re-run the pseudo_labels stage") from None
        info = {k: v for k, v in meta.items() if k not in ("paths", "num_classes", "has_proposals")}
        return cls(list(meta["paths"]), maps, hists, good, info, proposals)

    def check_paths(self, paths: Sequence[Path]) -> None:
        """ArtifactError unless these labels were made for exactly ``paths`` in this order."""
        if [str(p) for p in paths] != self.paths:
            raise ArtifactError("pseudo-labels were made for other (or reordered) training images",
                                fix="re-run the pseudo_labels stage for the current manifest")


def _save_pngs(folder: Path, arrays: Sequence[np.ndarray]) -> None:
    """uint8 [H,W] arrays → ``folder/<i:04d>.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, a in enumerate(arrays):
        with atomic_path(folder / f"{i:04d}.png") as tmp:
            Image.fromarray(a).save(tmp, format="PNG")


def _load_pngs(folder: Path, n: int) -> list[np.ndarray]:
    """``folder/0000.png`` … ``folder/<n-1>.png`` as uint8 [H,W]; FileNotFoundError naming the first missing one."""
    paths = [folder / f"{i:04d}.png" for i in range(n)]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"{missing} is missing")
    return [load_mask(p) for p in paths]


def build_proposer(cfg: PseudoLabelConfig, *, grounded=None, weights_dir: Path | None = None,
                   pretrained: str = "true", device: str = "cpu", seed: int = 0) -> MaskProposer:
    """The proposer named by ``cfg.proposer``; ``grounded`` is a ``GroundedSamConfig`` (its defaults if None).

    ``pretrained``/``seed`` apply to Grounded-SAM only ("auto"/"false" allow seeded random init).
    """
    if cfg.proposer == "part_labels":
        return PartLabelProposer(cfg.min_component_px)
    if cfg.proposer == "color":
        return ColorComponentsProposer(cfg.color_levels, cfg.min_component_px)
    from ad_pipeline.segmentation.config import GroundedSamConfig
    from ad_pipeline.segmentation.grounded_sam import GroundedSamProposer

    return GroundedSamProposer(grounded or GroundedSamConfig(), weights_dir=weights_dir, pretrained=pretrained,
                               device=device, seed=seed)


def build_descriptor(cfg: PseudoLabelConfig, *, pretrained: str = "auto", weights_dir: Path | None = None,
                     seed: int = 0) -> ComponentDescriptor:
    """Registry CNN layer (``cfg.descriptor_backbone``/``descriptor_layer``) + seeded projection."""
    from ad_pipeline.backbones import build_backbone

    bb = build_backbone(cfg.descriptor_backbone, pretrained=pretrained, weights_dir=weights_dir, seed=seed)
    features = BackboneLayer(bb, cfg.descriptor_layer)
    with torch.no_grad():
        in_dim = features(torch.zeros(1, 3, 65, 65)).shape[1]
    return ComponentDescriptor(features, in_dim, proj_dim=cfg.proj_dim, n_rotations=cfg.n_rotations,
                               seed=cfg.projection_seed, mean=bb.spec.mean, std=bb.spec.std)


def generate_pseudo_labels(paths: Sequence[Path], proposer, descriptor: ComponentDescriptor, cfg: PseudoLabelConfig,
                           *, progress: bool = True) -> PseudoLabels:
    """Pseudo-label the training images ``paths`` (kept in the given order; pass them sorted).

    Memory: the proposals (uint8, one byte per pixel per image) plus 65·65·3 bytes per
    component crop are held at once; descriptors are computed in ``cfg.descriptor_batch`` chunks.
    """
    proposals, crops, owner, values = [], [], [], []
    for i, path in enumerate(tqdm(paths, desc="proposals", disable=not progress)):
        proposal = proposer.propose(Path(path))
        image = np.asarray(load_rgb(path))
        if image.shape[:2] != proposal.shape:
            raise ArtifactError(f"proposal shape {proposal.shape} differs from image {image.shape[:2]}", path=path)
        proposals.append(proposal)
        counts = np.bincount(proposal.ravel(), minlength=256)
        for v in np.flatnonzero(counts[1:] >= cfg.min_area_frac * proposal.size) + 1:
            crop = component_crop(image, proposal == v)
            if crop is not None:
                crops.append(crop)
                owner.append(i)
                values.append(v)
    n = len(paths)
    crops_arr = np.stack(crops) if crops else np.zeros((0, 65, 65, 3), np.uint8)
    desc = describe_components(descriptor, crops_arr, cfg.descriptor_batch)
    owner_arr = np.asarray(owner, dtype=np.int64)
    labels = cluster_components(desc, owner_arr, n, bandwidth=cfg.bandwidth, min_members_ratio=cfg.min_members_ratio)
    kept_ids = np.unique(labels[labels >= 0])
    dense = np.full(int(labels.max(initial=-1)) + 2, 0, dtype=np.uint8)
    dense[kept_ids + 1] = np.arange(1, len(kept_ids) + 1)
    cluster_maps = []
    for i, proposal in enumerate(proposals):
        lut = np.zeros(256, dtype=np.uint8)
        mine = owner_arr == i
        lut[np.asarray(values, dtype=np.int64)[mine]] = dense[labels[mine] + 1]
        cluster_maps.append(lut[proposal])
    hists = area_histograms(cluster_maps, len(kept_ids))
    filt = filter_histograms(hists, min_cluster_frac=cfg.min_cluster_frac, min_class_area=cfg.min_class_area,
                             topk_ratio=cfg.topk_ratio, largest_only=cfg.filter_hist)
    label_maps = [relabel(c, filt.kept_classes) for c in cluster_maps]
    if cfg.fill_holes:
        label_maps = [fill_class_holes(m) for m in label_maps]
    if not len(filt.kept_classes):
        log.warning("pseudo-labels: no part class survived (%d components proposed); every label map is "
                    "background and the segmentor cannot be trained on them", len(desc))
    n_comp = np.bincount(owner_arr, minlength=n)
    info = {
        "n_components": int(len(desc)),
        "n_discarded_components": int((labels < 0).sum()),
        "n_kept_clusters": int(len(kept_ids)),
        "num_foreground_classes": int(len(filt.kept_classes)),
        "component_num_mode": int(np.bincount(n_comp).argmax()) if n else 0,
        "hdbscan_min_cluster_size": filt.min_cluster_size,
        "n_good": int(len(filt.good_indices)),
    }
    return PseudoLabels([str(p) for p in paths], label_maps, hists[:, filt.kept_classes - 1].astype(np.float32),
                        filt.good_indices, info, proposals)

"""Grounded-SAM mask proposer (csad.md §1.1–1.2): CSAD's component masks on real data.

Per image: GroundingDINO boxes for the category's text prompt → one SAM-HQ mask per box →
``grounding_mask`` (non-background boxes, largest first) and ``grounding_background`` (union
of the boxes whose phrase contains a ``background_prompt`` entry). Then, per category:

* ``no_sam: true`` (breakfast_box, pushpins, splicing_connectors): the components of the
  grounding mask are the proposal;
* ``no_sam: false`` (juice_bottle, screw_bag): SAM-HQ's automatic mask generator
  (``auto_mask`` settings), its masks split into components, optionally kept only inside the
  grounding mask (``use_grounding_filter``), minus the corner-point background and the
  grounding background, de-duplicated (``mask_refinement.refine_automatic_masks``).

Weights, looked up in ``weights_dir`` (nothing is ever downloaded):

* ``groundingdino_swint_ogc.pth`` — GroundingDINO Swin-T OGC, from the IDEA-Research/GroundingDINO
  GitHub release v0.1.0-alpha.
* ``bert-base-uncased/`` — the Hugging Face ``bert-base-uncased`` folder (config.json, vocab.txt,
  tokenizer files, weights), GroundingDINO's text encoder and tokenizer; e.g.
  ``huggingface-cli download bert-base-uncased --local-dir weights/bert-base-uncased`` on a
  machine with internet.
* ``sam_hq_vit_h.pth`` (or ``sam_hq_vit_l.pth`` / ``sam_hq_vit_b.pth`` / ``sam_hq_vit_tiny.pth``
  for ``sam_variant``) — SAM-HQ, from the links in the SysCV/sam-hq GitHub README.

``pretrained``: ``"true"`` → all three must exist (a UserError names the missing ones);
``"auto"`` → real weights when all exist, else **random init** with a loud warning;
``"false"`` → random init always. Random init needs no file and no network (GroundingDINO's
BERT from a local ``BertConfig()``, a tokenizer over the prompt words, see
``grounding_dino.py``), is seeded (same seed → same model), and is recorded as
``proposer.weights == "random-init"`` (the stage writes it to meta.json). Random weights
propose meaningless masks (SAM's are pixel noise, so no component survives): the stage still
runs end to end offline and writes all-background label maps with a warning, and the
``segmentor`` stage then refuses them with the fix (place the weight files).

CPU cost on a 1600×1100 image, one thread (``bench/grounded_sam.py``, 2-core shared machine):
GroundingDINO build 2 s, detection at 800 px 28 s; SAM-HQ image encoding vit_tiny 2.7 s /
vit_h 125 s, decoding ~7 s per 16 box or point prompts. So the ``no_sam`` path costs ~40 s
(vit_tiny) / ~160 s (vit_h) per image with 16 boxes, and the automatic path with the paper's
settings (5 crops × 32² points) ~40–50 min per image: it is meant for a GPU. ``max_boxes``
bounds the box count (random-init GroundingDINO passes almost all 900 queries).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from ad_pipeline.data.images import load_rgb
from ad_pipeline.errors import UserError
from ad_pipeline.segmentation.config import GroundedSamConfig
from ad_pipeline.segmentation.mask_refinement import (
    background_points,
    grounding_components,
    grounding_label_image,
    refine_automatic_masks,
)
from ad_pipeline.segmentation.proposers import MaskProposer

log = logging.getLogger(__name__)

PRETRAINED_MODES = ("auto", "true", "false")
GROUNDING_DINO_FILE = "groundingdino_swint_ogc.pth"
BERT_DIR = "bert-base-uncased"
SAM_HQ_FILES = {"vit_h": "sam_hq_vit_h.pth", "vit_l": "sam_hq_vit_l.pth", "vit_b": "sam_hq_vit_b.pth",
                "vit_tiny": "sam_hq_vit_tiny.pth"}
BOX_BATCH = 16  # SAM box prompts decoded together: bounds the decoder's activations


def required_files(weights_dir: Path | None, sam_variant: str) -> dict[str, Path]:
    """The three weight paths, or a UserError naming every missing one and the fix."""
    files = weight_files(weights_dir, sam_variant)
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise UserError(f"Grounded-SAM weights not found: {', '.join(missing)}", path=files["sam_hq"].parent,
                        fix="place the files listed in ad_pipeline/segmentation/grounded_sam.py there (no download "
                            "happens here), set pretrained to \"auto\"/\"false\" for random init, or use the "
                            "weight-free proposer 'part_labels' (synthetic data) or 'color'")
    return files


def weight_files(weights_dir: Path | None, sam_variant: str) -> dict[str, Path]:
    """Where the GroundingDINO checkpoint, the BERT folder and the SAM-HQ checkpoint are expected."""
    if sam_variant not in SAM_HQ_FILES:
        raise UserError(f"unknown SAM-HQ variant {sam_variant!r}", fix=f"use one of {', '.join(SAM_HQ_FILES)}")
    base = Path(weights_dir) if weights_dir else Path("weights")
    return {"grounding_dino": base / GROUNDING_DINO_FILE, "bert": base / BERT_DIR,
            "sam_hq": base / SAM_HQ_FILES[sam_variant]}


def resolve_files(weights_dir: Path | None, sam_variant: str, pretrained: str) -> dict[str, Path] | None:
    """The weight files to load, or None for seeded random init (see the module docstring)."""
    if pretrained not in PRETRAINED_MODES:
        raise UserError(f"pretrained must be one of {PRETRAINED_MODES}, got {pretrained!r}",
                        fix='set pretrained to "auto", "true" or "false"')
    if pretrained == "true":
        return required_files(weights_dir, sam_variant)
    files = weight_files(weights_dir, sam_variant)
    if pretrained == "false":
        return None
    missing = [str(p) for p in files.values() if not p.exists()]
    if not missing:
        return files
    message = (f"!!! Grounded-SAM: weights not found ({', '.join(missing)}) — using seeded RANDOM-INIT "
               "GroundingDINO and SAM-HQ; the pseudo-labels will be meaningless. To fix: place the files listed "
               "in ad_pipeline/segmentation/grounded_sam.py in weights_dir.")
    warnings.warn(message, stacklevel=3)
    log.warning(message)
    return None


def caption_of(prompt: str) -> str:
    """Lower-cased, stripped, ending with '.' (GroundingDINO's caption convention)."""
    c = prompt.lower().strip()
    return c if c.endswith(".") else c + "."


def is_background_phrase(phrase: str, background_prompt: str) -> bool:
    """True when the box phrase contains one of the '.'-separated ``background_prompt`` entries
    (the tokenizer's 'zip - lock' read as 'zip-lock')."""
    entries = [e.strip() for e in background_prompt.lower().split(".") if e.strip()]
    return any(e in phrase.lower().replace(" - ", "-") for e in entries)


class GroundedSamProposer(MaskProposer):
    """GroundingDINO + SAM-HQ → label image of components (largest first); see the module docstring.

    ``weights`` is ``"pretrained"`` or ``"random-init"``. Memory per image: one bool [H,W]
    mask per box (``no_sam``) plus one per automatic mask and per component (automatic path).
    """

    def __init__(self, cfg: GroundedSamConfig, *, weights_dir: Path | None, pretrained: str = "true",
                 device: str = "cpu", seed: int = 0):
        files = resolve_files(weights_dir, cfg.sam_variant, pretrained)  # before the heavy imports
        from segment_anything_hq import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry

        from ad_pipeline.seed import seeded
        from ad_pipeline.segmentation.grounding_dino import build_grounding_dino

        self.cfg = cfg
        self.device = device
        self.weights = "random-init" if files is None else "pretrained"
        files = files or {}
        with seeded(seed):  # only random init draws from it; the global RNG is restored
            self.dino = build_grounding_dino(checkpoint=files.get("grounding_dino"), bert_dir=files.get("bert"),
                                             vocabulary=f"{cfg.prompt} {cfg.background_prompt}", device=device)
            sam_file = files.get("sam_hq")
            sam = sam_model_registry[cfg.sam_variant](checkpoint=str(sam_file) if sam_file else None)
        sam = sam.to(device).eval()
        self.sam = SamPredictor(sam)
        self.generator = None if cfg.no_sam else SamAutomaticMaskGenerator(
            sam, **cfg.auto_mask.model_dump(), output_mode="binary_mask")

    def box_masks(self, boxes: np.ndarray) -> np.ndarray:
        """One SAM mask per xyxy pixel box [n,4] on the image set in ``self.sam`` → bool [n,H,W]."""
        h, w = self.sam.original_size
        out = [np.zeros((0, h, w), dtype=bool)]
        for start in range(0, len(boxes), BOX_BATCH):
            chunk = torch.as_tensor(boxes[start:start + BOX_BATCH], device=self.device)
            prompts = self.sam.transform.apply_boxes_torch(chunk, (h, w))
            masks, _, _ = self.sam.predict_torch(None, None, boxes=prompts, multimask_output=False)
            out.append(masks[:, 0].cpu().numpy())
        return np.concatenate(out)

    def grounding(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(``grounding_mask`` uint8 [H,W], ``grounding_background`` bool [H,W]) of ``rgb``, which
        must be the image set in ``self.sam``."""
        from ad_pipeline.segmentation.grounding_dino import detect

        boxes, phrases = detect(self.dino, rgb, caption_of(self.cfg.prompt), box_threshold=self.cfg.box_threshold,
                                text_threshold=self.cfg.text_threshold, short_side=self.cfg.dino_image_size,
                                max_boxes=self.cfg.max_boxes, device=self.device)
        masks = self.box_masks(boxes)
        is_background = np.array([is_background_phrase(p, self.cfg.background_prompt) for p in phrases], dtype=bool)
        grounding = grounding_label_image(list(masks[~is_background]), rgb.shape[:2], combine=self.cfg.combine_filter)
        return grounding, masks[is_background].any(axis=0)  # all False without background boxes

    def corner_background(self, rgb: np.ndarray) -> np.ndarray:
        """bool [H,W]: SAM's mask for the 8 corner points (all positive) on the image set in ``self.sam``."""
        points = background_points(*rgb.shape[:2])
        mask, _, _ = self.sam.predict(point_coords=points, point_labels=np.ones(len(points)), multimask_output=False)
        return mask[0].astype(bool)

    def propose(self, image_path: Path) -> np.ndarray:
        rgb = np.asarray(load_rgb(image_path))
        self.sam.set_image(rgb)
        grounding, grounding_background = self.grounding(rgb)
        if self.generator is None:
            return grounding_components(grounding, min_area=self.cfg.min_component_px)
        background = self.corner_background(rgb)
        raw = [record["segmentation"] for record in self.generator.generate(rgb)]
        return refine_automatic_masks(raw, grounding=grounding, background=background,
                                      grounding_background=grounding_background,
                                      use_grounding_filter=self.cfg.use_grounding_filter,
                                      min_area=self.cfg.min_component_px)

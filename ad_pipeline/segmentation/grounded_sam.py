"""Grounded-SAM mask proposer (csad.md §1.1): GroundingDINO boxes from a text prompt → one
SAM-HQ mask per box → components, as used for CSAD's pseudo-labels on real data.

Weights (all looked up in ``weights_dir``; nothing is ever downloaded):

* ``groundingdino_swint_ogc.pth`` — GroundingDINO Swin-T OGC, from the IDEA-Research
  GroundingDINO GitHub releases (v0.1.0-alpha).
* ``bert-base-uncased/`` — the Hugging Face ``bert-base-uncased`` folder (config.json,
  vocab.txt, model weights), GroundingDINO's text encoder; e.g. ``huggingface-cli download
  bert-base-uncased --local-dir weights/bert-base-uncased`` on a machine with internet.
* ``sam_hq_vit_h.pth`` (or ``sam_hq_vit_b.pth`` / ``sam_hq_vit_tiny.pth``) — SAM-HQ, from the
  SysCV/sam-hq GitHub README links.

There is no random-init mode: random GroundingDINO/SAM weights propose no meaningful
components, so without the files this is a UserError pointing at the weight-free proposers
(``part_labels`` for synthetic data, ``color``). Only the ``no_sam`` path of the paper is
implemented (box masks of Grounded-SAM, the setting of 3 of the 5 LOCO categories); the SAM
automatic-mask path is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from ad_pipeline.data.images import load_rgb
from ad_pipeline.errors import UserError
from ad_pipeline.segmentation.proposers import (
    MaskProposer,
    filter_by_combine,
    overlap_ratio,
    paint_largest_first,
    split_components,
)

GROUNDING_DINO_FILE = "groundingdino_swint_ogc.pth"
BERT_DIR = "bert-base-uncased"
SAM_HQ_FILES = {"vit_h": "sam_hq_vit_h.pth", "vit_b": "sam_hq_vit_b.pth", "vit_tiny": "sam_hq_vit_tiny.pth"}


class GroundedSamConfig(BaseModel):
    """Per-category prompt and thresholds (csad.md §1.1 table; defaults: breakfast_box)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = "almond. apple. container. oatmeal. orange. banana"
    background_prompt: str = ""
    box_threshold: float = 0.25
    text_threshold: float = 0.20
    sam_variant: str = "vit_h"
    min_component_px: int = 50
    combine_filter: bool = True


def required_files(weights_dir: Path | None, sam_variant: str) -> dict[str, Path]:
    """The three weight paths, or a UserError naming every missing one and the fix."""
    if sam_variant not in SAM_HQ_FILES:
        raise UserError(f"unknown SAM-HQ variant {sam_variant!r}", fix=f"use one of {', '.join(SAM_HQ_FILES)}")
    base = Path(weights_dir) if weights_dir else Path("weights")
    files = {"grounding_dino": base / GROUNDING_DINO_FILE, "bert": base / BERT_DIR,
             "sam_hq": base / SAM_HQ_FILES[sam_variant]}
    missing = [str(p) for p in files.values() if not p.exists()]
    if missing:
        raise UserError(f"Grounded-SAM weights not found: {', '.join(missing)}", path=base,
                        fix="place the files listed in ad_pipeline/segmentation/grounded_sam.py there (no download "
                            "happens here), or use the weight-free proposer 'part_labels' (synthetic data) or 'color'")
    return files


def caption_of(prompt: str) -> str:
    """Lower-cased, stripped, ending with '.' (GroundingDINO's caption convention)."""
    c = prompt.lower().strip()
    return c if c.endswith(".") else c + "."


class GroundedSamProposer(MaskProposer):
    """GroundingDINO + SAM-HQ box masks → label image of components (largest first)."""

    def __init__(self, cfg: GroundedSamConfig, *, weights_dir: Path | None, device: str = "cpu"):
        files = required_files(weights_dir, cfg.sam_variant)  # before the heavy imports
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig
        from groundingdino.util.utils import clean_state_dict
        from segment_anything_hq import SamPredictor, sam_model_registry

        import groundingdino.config as gd_config

        self.cfg = cfg
        self.device = device
        args = SLConfig.fromfile(str(Path(gd_config.__file__).parent / "GroundingDINO_SwinT_OGC.py"))
        args.device = device
        args.text_encoder_type = str(files["bert"])  # local folder: no hub lookup
        self.dino = build_model(args)
        state = torch.load(files["grounding_dino"], map_location="cpu", weights_only=False)
        self.dino.load_state_dict(clean_state_dict(state["model"]), strict=False)
        self.dino.eval().to(device)
        sam = sam_model_registry[cfg.sam_variant](checkpoint=str(files["sam_hq"]))
        self.sam = SamPredictor(sam.to(device).eval())

    def boxes(self, rgb: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Boxes xyxy in pixels [n,4] and their phrases for ``cfg.prompt``."""
        import groundingdino.datasets.transforms as T
        from groundingdino.util.inference import predict
        from PIL import Image

        transform = T.Compose([T.RandomResize([800], max_size=1333), T.ToTensor(),
                               T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
        tensor, _ = transform(Image.fromarray(rgb), None)
        boxes, _, phrases = predict(self.dino, tensor, caption_of(self.cfg.prompt), self.cfg.box_threshold,
                                    self.cfg.text_threshold, device=self.device)
        h, w = rgb.shape[:2]
        cx, cy, bw, bh = boxes.unbind(1)
        xyxy = torch.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * torch.tensor([w, h, w, h])
        return xyxy.numpy(), phrases

    def propose(self, image_path: Path) -> np.ndarray:
        rgb = np.asarray(load_rgb(image_path))
        boxes, phrases = self.boxes(rgb)
        if len(boxes) == 0:
            return np.zeros(rgb.shape[:2], dtype=np.uint8)
        self.sam.set_image(rgb)
        background_words = set(self.cfg.background_prompt.lower().replace(".", " ").split())
        objects, background = [], np.zeros(rgb.shape[:2], dtype=bool)
        for box, phrase in zip(boxes, phrases):
            mask, _, _ = self.sam.predict(box=box, multimask_output=False)
            if background_words & set(phrase.lower().split()):
                background |= mask[0].astype(bool)
            else:
                objects.append(mask[0].astype(bool))
        comps = [c for c in split_components(objects, min_area=self.cfg.min_component_px)
                 if overlap_ratio(c, background) < 0.95]
        if self.cfg.combine_filter:
            comps = filter_by_combine(comps)
        return paint_largest_first(comps, rgb.shape[:2])

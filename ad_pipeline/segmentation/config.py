"""Settings of the segmentation parts that params.yaml holds (pydantic only, so that the params
schema does not import the models): CSAD's pseudo-labelling and its Grounded-SAM proposer."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class PseudoLabelConfig(BaseModel):
    """Knobs of §1 (defaults = the paper's breakfast_box settings)."""

    model_config = ConfigDict(extra="forbid")

    proposer: Literal["part_labels", "color", "grounded_sam"] = "grounded_sam"
    min_component_px: int = 50  # proposer components must be larger
    color_levels: int = 4  # ColorComponentsProposer bins per channel
    min_area_frac: float = 0.001  # components below this share of the image get no descriptor
    descriptor_backbone: str = "wide_resnet50_2"
    descriptor_layer: str = "layer4"
    n_rotations: int = 60
    proj_dim: int = 512
    projection_seed: int = 42
    descriptor_batch: int = 8  # crops per CNN batch (× n_rotations images)
    bandwidth: float = 3.5  # MeanShift, per category
    min_members_ratio: float = 0.5  # clusters with fewer members than this × N images are dropped
    min_cluster_frac: float = 0.1  # HDBSCAN min_cluster_size = int(frac · N)
    min_class_area: float = 0.001
    topk_ratio: float = 0.5
    filter_hist: bool = True
    fill_holes: bool = False  # fill holes of each class region of the final labels (breakfast_box, juice_bottle)


class AutoMaskConfig(BaseModel):
    """``segment_anything_hq.SamAutomaticMaskGenerator`` settings (csad.md §1.2; the paper's values)."""

    model_config = ConfigDict(extra="forbid")

    points_per_side: int = Field(32, ge=1)
    points_per_batch: int = Field(16, ge=1)
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.96
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = Field(1, ge=0)
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = Field(1, ge=1)
    min_mask_region_area: int = Field(500, ge=0)


class GroundedSamConfig(BaseModel):
    """Per-category prompt, thresholds and path (csad.md §1.1 table; defaults: breakfast_box)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = "almond. apple. container. oatmeal. orange. banana"
    background_prompt: str = ""
    box_threshold: float = 0.25
    text_threshold: float = 0.20
    sam_variant: Literal["vit_h", "vit_l", "vit_b", "vit_tiny"] = "vit_h"
    # GroundingDINO input short side (paper: 800, long side ≤ 1333). Its 900 queries are picked
    # from the multi-scale feature tokens, which needs a short side of at least ~210 px.
    dino_image_size: int = Field(800, ge=224)
    # Keep only the best-scoring boxes (None = all, the paper). Random-init GroundingDINO passes
    # almost all 900 queries and SAM costs ~0.3 s per box on a CPU: cap it for offline runs.
    max_boxes: int | None = Field(None, ge=1)
    min_component_px: int = 50
    combine_filter: bool = True  # filter_by_combine on the grounding masks
    no_sam: bool = True  # True: components of the grounding mask; False: SAM automatic masks
    use_grounding_filter: bool = True  # automatic path: keep only components inside the grounding mask
    auto_mask: AutoMaskConfig = AutoMaskConfig()

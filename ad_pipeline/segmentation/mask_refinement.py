"""Pure-numpy post-processing of Grounded-SAM and SAM automatic masks (csad.md §1.1–1.2).

No model here: every function takes boolean masks [H,W] (or uint8 label images, 0 = none,
1..n largest first) and returns the same, so each step is testable on hand-made masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ad_pipeline.segmentation.proposers import (
    MAX_COMPONENTS,
    filter_by_combine,
    overlap_ratio,
    paint_largest_first,
    split_components,
)

GROUNDING_KEEP = 0.9  # step 2: keep a component when r(grounding mask, component) > this
BACKGROUND_DROP = 0.95  # step 3: drop a component when r(component, background) ≥ this
CORNER_INSET = 10  # step 3: the inner four background points, in pixels from the corners


def background_points(height: int, width: int) -> np.ndarray:
    """float32 [8,2] SAM point prompts (x, y) for the background mask: four points
    ``CORNER_INSET`` px inside the corners, then the four image corners (as pixel edges, so
    the far ones are at ``width``/``height``)."""
    i = CORNER_INSET
    inner = [(i, i), (i, height - i), (width - i, i), (width - i, height - i)]
    corners = [(0, 0), (0, height), (width, 0), (width, height)]
    return np.asarray(inner + corners, dtype=np.float32)


def grounding_label_image(object_masks: Sequence[np.ndarray], shape: tuple[int, int], *, combine: bool) -> np.ndarray:
    """One SAM mask per non-background box → ``grounding_mask`` (uint8 [H,W], largest first),
    optionally through ``filter_by_combine`` first."""
    masks = filter_by_combine(object_masks) if combine else list(object_masks)
    return paint_largest_first(masks, shape)


def grounding_components(grounding: np.ndarray, *, min_area: int = 50) -> np.ndarray:
    """The ``no_sam`` refined masks: every value region of ``grounding`` split into components
    (step 1), de-duplicated (step 4), painted largest first."""
    regions = [grounding == v for v in np.unique(grounding) if v != 0]
    return paint_largest_first(filter_by_combine(split_components(regions, min_area=min_area)), grounding.shape)


def keep_grounded(components: Sequence[np.ndarray], grounding_mask: np.ndarray) -> list[np.ndarray]:
    """Step 2: components whose overlap ratio with the (boolean) grounding mask > 0.9."""
    return [c for c in components if overlap_ratio(grounding_mask, c) > GROUNDING_KEEP]


def drop_background(components: Sequence[np.ndarray], *backgrounds: np.ndarray) -> list[np.ndarray]:
    """Step 3: components with overlap ratio < 0.95 against every background mask."""
    return [c for c in components if all(overlap_ratio(c, b) < BACKGROUND_DROP for b in backgrounds)]


def refine_automatic_masks(raw_masks: Sequence[np.ndarray], *, grounding: np.ndarray, background: np.ndarray,
                           grounding_background: np.ndarray, use_grounding_filter: bool,
                           min_area: int = 50) -> np.ndarray:
    """Steps 1–5 of §1.2 on the automatic generator's masks → ``refined_masks`` (uint8 [H,W]).

    ``grounding`` is the grounding label image (any non-zero value counts), ``background`` the
    corner-point SAM mask, ``grounding_background`` the union of the background-box masks.
    """
    components = split_components(raw_masks, min_area=min_area)
    if use_grounding_filter:
        components = keep_grounded(components, grounding != 0)
    components = drop_background(components, background, grounding_background)
    largest = sorted(components, key=lambda m: -int(m.sum()))[:MAX_COMPONENTS]
    return paint_largest_first(filter_by_combine(largest), background.shape)

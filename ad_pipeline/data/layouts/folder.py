"""A user's own product in MVTec AD layout, tolerant of image extensions and mask names.

Images and masks: ``data.images.IMAGE_SUFFIXES`` (.png .jpg .jpeg .bmp .tif .tiff .webp, any case).
Masks: ``<stem>_mask.<ext>`` or ``<stem>.<ext>`` in ``ground_truth/<defect>/``.
"""

from __future__ import annotations

from ad_pipeline.data.images import IMAGE_SUFFIXES
from ad_pipeline.data.layouts.common import LayoutSpec

SPEC = LayoutSpec(
    name="folder",
    how_to_get="copy your images",
    image_exts=IMAGE_SUFFIXES,
    mask_exts=IMAGE_SUFFIXES,
    mask_suffixes=("_mask", ""),
    sketch="""  <root>/<product>/
    train/good/<name>.{png,jpg,jpeg,bmp,tif,tiff,webp}    normal images only
    test/good/<name>.<ext>
    test/<defect>/<name>.<ext>
    ground_truth/<defect>/<name>_mask.<ext> or <name>.<ext>   0 = normal, non-zero = defect""",
)

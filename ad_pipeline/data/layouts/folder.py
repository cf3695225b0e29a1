"""A user's own product in MVTec AD layout, tolerant of image extensions and mask names.

Images: .png .jpg .jpeg .bmp .tif .tiff (any case). Masks: ``<stem>_mask.<ext>`` or
``<stem>.<ext>`` in ``ground_truth/<defect>/``.
"""

from __future__ import annotations

from ad_pipeline.data.layouts.common import IMAGE_EXTS, LayoutSpec

SPEC = LayoutSpec(
    name="folder",
    how_to_get="copy your images",
    image_exts=IMAGE_EXTS,
    mask_exts=IMAGE_EXTS,
    mask_suffixes=("_mask", ""),
    sketch="""  <root>/<product>/
    train/good/<name>.{png,jpg,jpeg,bmp,tif,tiff}    normal images only
    test/good/<name>.<ext>
    test/<defect>/<name>.<ext>
    ground_truth/<defect>/<name>_mask.<ext> or <name>.<ext>   0 = normal, non-zero = defect""",
)

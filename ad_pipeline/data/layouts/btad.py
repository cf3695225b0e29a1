"""BTAD (BeanTech): ``ok``/``ko`` folders, .bmp or .png images, masks matched by stem."""

from __future__ import annotations

from ad_pipeline.data.layouts.common import LayoutSpec

SPEC = LayoutSpec(
    name="btad",
    how_to_get="download BTAD and extract BTech_Dataset_transformed.zip",
    good="ok",
    image_exts=(".bmp", ".png"),
    mask_exts=(".bmp", ".png"),
    mask_suffixes=("",),
    sketch="""  <root>/<01|02|03>/
    train/ok/*.{bmp,png}
    test/ok/*.{bmp,png}
    test/ko/*.{bmp,png}
    ground_truth/ko/<image stem>.{png,bmp}""",
)

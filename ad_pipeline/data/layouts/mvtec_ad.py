"""MVTec AD (and MPDD, which shares its layout): PNG images, ``<stem>_mask.png`` masks."""

from __future__ import annotations

from ad_pipeline.data.layouts.common import LayoutSpec

SPEC = LayoutSpec(
    name="mvtec_ad",
    how_to_get="download MVTec AD from https://www.mvtec.com/company/research/datasets/mvtec-ad and extract "
    "mvtec_anomaly_detection.tar.xz",
    sketch="""  <root>/<category>/
    train/good/000.png ...
    test/good/000.png ...
    test/<defect>/000.png ...
    ground_truth/<defect>/000_mask.png ...""",
)

"""MVTec LOCO AD: a ``validation/good`` folder, one mask folder of PNG channels per defect
image, and ``defects_config.json`` whose pixel values label the channels."""

from __future__ import annotations

import json
from pathlib import Path

from ad_pipeline.data.layouts.common import LayoutSpec
from ad_pipeline.errors import LayoutError

DEFECTS_CONFIG = "defects_config.json"
_KEYS = ("defect_name", "pixel_value", "saturation_threshold", "relative_saturation")


def read_defects_config(path: Path) -> list[dict]:
    """Parse and check a LOCO ``defects_config.json``: a list of objects with the keys
    ``defect_name, pixel_value (1..255), saturation_threshold, relative_saturation``."""
    fix = "copy defects_config.json from the original MVTec LOCO AD archive into the category folder"
    try:
        entries = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LayoutError("defects_config.json is missing", path=path, fix=fix) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LayoutError(f"not valid JSON ({e})", path=path, fix=fix) from None
    if not isinstance(entries, list) or not entries:
        raise LayoutError("expected a non-empty JSON list of defect types", path=path, fix=fix)
    for i, entry in enumerate(entries):
        missing = [k for k in _KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise LayoutError(f"entry {i} lacks key(s) {', '.join(missing)}", path=path, fix=fix)
        value = entry["pixel_value"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 256:
            raise LayoutError(f"entry {i} ({entry['defect_name']}): pixel_value must be an integer in 1..255, "
                              f"got {value!r}", path=path, fix=fix)
    return entries


def known_pixel_values(category_dir: Path) -> frozenset[int]:
    """The mask values defects_config.json of a category defines."""
    return frozenset(e["pixel_value"] for e in read_defects_config(category_dir / DEFECTS_CONFIG))


SPEC = LayoutSpec(
    name="mvtec_loco",
    how_to_get="download MVTec LOCO AD from https://www.mvtec.com/company/research/datasets/mvtec-loco and "
    "extract mvtec_loco_anomaly_detection.tar.xz",
    mask_folders=True,
    validation_folder=True,
    mask_values=known_pixel_values,
    extras={"defects_config": DEFECTS_CONFIG},
    sketch="""  <root>/<category>/
    train/good/000.png ...
    validation/good/000.png ...
    test/good/000.png ...
    test/logical_anomalies/000.png ...
    test/structural_anomalies/000.png ...
    ground_truth/<type>/000/000.png [001.png ...]   one PNG per defect, value = pixel_value
    defects_config.json""",
)

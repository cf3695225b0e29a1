"""The papers' per-category settings, by dataset format and category name.

A method's ``Config`` holds the paper's settings shared by every category; where a paper tunes a
value per category of a benchmark, the value is listed here (sources: ../shared/spec/csad.md
§1 and §2.2, psad.md §1). ``CATEGORY_DEFAULTS[format][section][category]`` is a partial config
(nested dicts merge key by key) applied on top of the section's ``Config`` defaults.
Sections are method names plus ``pseudo_labels`` (CSAD's part pseudo-labelling).
"""

from __future__ import annotations

from typing import Any

# CSAD pseudo-labels on MVTec LOCO: every category uses Grounded-SAM, WRN-50 layer4 descriptors
# over 60 rotations projected to 512-d, then MeanShift with the category's bandwidth.
_CSAD_LOCO = {"proposer": "grounded_sam", "descriptor_backbone": "wide_resnet50_2", "descriptor_layer": "layer4",
              "n_rotations": 60, "proj_dim": 512, "bandwidth": 3.5}

CATEGORY_DEFAULTS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "mvtec_loco": {
        "pseudo_labels": {
            "breakfast_box": {**_CSAD_LOCO, "fill_holes": True},
            "juice_bottle": {**_CSAD_LOCO, "fill_holes": True},
            "pushpins": {**_CSAD_LOCO, "filter_hist": False, "fill_holes": False},
            "screw_bag": {**_CSAD_LOCO, "bandwidth": 3.0, "fill_holes": False},
            "splicing_connectors": {**_CSAD_LOCO, "bandwidth": 4.0, "filter_hist": False, "fill_holes": False},
        },
        # LSA copy-paste keeps pasted parts closer to their source in the crowded bag
        "csad": {"screw_bag": {"augment": {"min_distance": 0.1}}},
        # classes incl. background and labelled shots (one per product variant where there are three)
        "psad": {
            # the seed's histogram loss matches only classes 1, 2, 3 and 6 of breakfast_box (psad.md §2)
            "breakfast_box": {"num_classes": 7, "shots": 5, "segmenter": {"hist_classes": [1, 2, 3, 6]}},
            "juice_bottle": {"num_classes": 9, "shots": 3},
            "pushpins": {"num_classes": 26, "shots": 5},
            "screw_bag": {"num_classes": 7, "shots": 5, "preprocess": {"crop": 150}},  # crop 150 px per side
            "splicing_connectors": {"num_classes": 10, "shots": 3},
        },
    },
}


def category_defaults(dataset_format: str, section: str, category: str | None) -> dict[str, Any]:
    """The paper's partial config for one category ({} where the paper has none)."""
    if category is None:
        return {}
    return CATEGORY_DEFAULTS.get(dataset_format, {}).get(section, {}).get(category, {})

"""Published numbers from the seed READMEs and papers, shown beside ours in the report.

Values are fractions (0–1) keyed like our metrics. Dataset means, and per category under
``categories`` where the source gives them (UniAD's CIFAR-10 splits); where a
source reports something slightly different (e.g. PUAD's pooled LOCO AUROC, PatchCore's
anomaly-only PRO) the note says so. Sources: ../shared/spec/*.md of the project.
"""

from __future__ import annotations

PUBLISHED: dict[str, dict[str, dict]] = {
    "mvtec_ad": {
        "patchcore": {"image_auroc": 0.9916, "pixel_auroc": 0.9811, "aupro": 0.9437,
                      "note": "official results.csv, WR50 IM224 p=0.1; PRO is anomaly-only"},
        "musc": {"image_auroc": 0.9777, "pixel_auroc": 0.9711, "image_ap": 0.9907, "image_f1_max": 0.9737,
                 "note": "repo re-run ViT-L-14-336@518; PRO there is the cflow-ad approximation"},
        "efficientad": {"image_auroc": 0.9903, "aupro": 0.9328, "note": "EfficientAD-S, nelson1425 re-implementation"},
        "efficientad_m": {"image_auroc": 0.9909, "aupro": 0.9374, "note": "EfficientAD-M, nelson1425 re-implementation"},
        "puad": {"image_auroc": 0.9830, "note": "PUAD-S README"},
        "puad_m": {"image_auroc": 0.9848, "note": "PUAD-M README"},
        "uniad": {"image_auroc": 0.967, "pixel_auroc": 0.968, "note": "unified, 8 GPUs (1 GPU: 97.6 / 97.0)"},
    },
    "mvtec_loco": {
        "efficientad": {"image_auroc_mean": 0.900, "note": "EfficientAD-S paper (split not published)"},
        "efficientad_m": {"image_auroc_logical": 0.868, "image_auroc_structural": 0.947, "image_auroc_mean": 0.907,
                          "note": "EfficientAD-M paper"},
        "puad": {"image_auroc_mean": 0.9318, "note": "PUAD-S README, pooled AUROC (good vs all), not the mean of splits"},
        "puad_m": {"image_auroc_mean": 0.9444, "note": "PUAD-M README, pooled AUROC (good vs all), not the mean of splits"},
        "csad": {"image_auroc_mean": 0.953, "note": "CSAD paper, total average"},
        "psad": {"image_auroc_logical": 0.981, "image_auroc_structural": 0.916, "image_auroc_mean": 0.940,
                 "note": "PSAD paper"},
        "patchcore": {"image_auroc_logical": 0.740, "image_auroc_structural": 0.893, "image_auroc_mean": 0.817,
                      "note": "as reported in the PSAD paper"},
    },
    "visa": {
        "musc": {"image_auroc": 0.9257, "pixel_auroc": 0.9871, "note": "repo re-run ViT-L-14-336@518"},
        "efficientad": {"image_auroc": 0.975, "note": "EfficientAD-S paper"},
        "efficientad_m": {"image_auroc": 0.981, "note": "EfficientAD-M paper"},
    },
    "cifar10": {
        "uniad": {"image_auroc": 0.865, "note": "one unified model per normal-class split, 8 GPUs, `mean` score"},
    },
    "btad": {
        "musc": {"image_auroc": 0.9616, "pixel_auroc": 0.9735, "note": "repo re-run ViT-L-14-336@518"},
    },
}


def _rows(keys: tuple[str, ...], table: str) -> dict[str, dict[str, float]]:
    """'cat a/b; cat2 c/d' (percent) → {cat: {key: fraction}}."""
    out = {}
    for item in table.split(";"):
        cat, values = item.split()
        out[cat] = {k: float(v) / 100 for k, v in zip(keys, values.split("/"))}
    return out


# Per-category published numbers where a source tabulates them (same metric definitions as ours).
PUBLISHED_PER_CATEGORY: dict[str, dict[str, dict[str, dict[str, float]]]] = {
    "mvtec_ad": {
        "efficientad": _rows(("image_auroc", "aupro"), (  # EfficientAD-S, nelson1425 results/*.json
            "bottle 99.92/95.19; cable 93.52/88.23; capsule 98.44/97.60; carpet 99.44/91.83; grid 99.75/89.32; "
            "hazelnut 99.43/94.84; leather 100.0/98.22; metal_nut 99.51/93.62; pill 98.50/97.03; screw 97.87/95.58; "
            "tile 99.82/88.15; toothbrush 100.0/94.56; transistor 99.92/90.27; wood 99.65/90.43; zipper 99.63/94.36")),
        "efficientad_m": _rows(("image_auroc", "aupro"), (  # EfficientAD-M, nelson1425 results/*.json
            "bottle 100.0/95.72; cable 94.15/90.35; capsule 98.05/97.05; carpet 99.40/93.01; grid 100.0/89.20; "
            "hazelnut 99.79/95.23; leather 100.0/98.21; metal_nut 99.56/94.75; pill 99.10/96.39; screw 97.44/97.31; "
            "tile 100.0/88.36; toothbrush 100.0/94.46; transistor 99.87/91.44; wood 99.56/90.49; zipper 99.37/94.07")),
        "musc": _rows(("image_auroc", "pixel_auroc"), (  # MuSc repo re-run, ViT-L-14-336@518
            "bottle 99.92/98.48; cable 98.99/95.76; capsule 96.45/98.96; carpet 99.88/99.45; grid 98.66/98.16; "
            "hazelnut 99.61/99.38; leather 100/99.72; metal_nut 96.92/86.12; pill 96.24/97.47; screw 82.17/98.77; "
            "tile 100/97.90; toothbrush 100/99.53; transistor 99.42/91.38; wood 98.51/97.24; zipper 99.84/98.40")),
    },
    "mvtec_loco": {
        "psad": _rows(("image_auroc_logical", "image_auroc_structural"), (  # PSAD paper table
            "breakfast_box 100.0/84.9; juice_bottle 99.1/98.2; pushpins 100.0/89.8; screw_bag 99.3/95.7; "
            "splicing_connectors 91.9/89.3")),
    },
    "btad": {
        "musc": _rows(("image_auroc", "pixel_auroc"), "01 98.74/97.49; 02 90.23/95.36; 03 99.52/99.20"),
    },
    "cifar10": {  # UniAD paper, per normal-class split
        "uniad": _rows(("image_auroc",), "01234 84.4; 56789 79.6; 02468 93.0; 13579 89.1"),
    },
}


def published_for(table: str | None, method: str, category: str | None = None) -> dict[str, float]:
    """Published ``{metric: fraction}`` of a method on a dataset table: its mean (category None)
    or one category; {} where no source gives one."""
    if category is None:
        return {k: v for k, v in PUBLISHED.get(table or "", {}).get(method, {}).items() if k != "note"}
    return PUBLISHED_PER_CATEGORY.get(table or "", {}).get(method, {}).get(category, {})

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
        "puad": {"image_auroc": 0.9830, "note": "PUAD-S README"},
        "uniad": {"image_auroc": 0.967, "pixel_auroc": 0.968, "note": "unified, 8 GPUs (1 GPU: 97.6 / 97.0)"},
    },
    "mvtec_loco": {
        "efficientad": {"image_auroc_logical": 0.868, "image_auroc_structural": 0.947, "image_auroc_mean": 0.907,
                        "note": "EfficientAD-M paper (S: 90.0 mean)"},
        "puad": {"image_auroc_mean": 0.9318, "note": "PUAD-S README, pooled AUROC (good vs all), not the mean of splits"},
        "csad": {"image_auroc_mean": 0.953, "note": "CSAD paper, total average"},
        "psad": {"image_auroc_logical": 0.981, "image_auroc_structural": 0.916, "image_auroc_mean": 0.940,
                 "note": "PSAD paper"},
        "patchcore": {"image_auroc_logical": 0.740, "image_auroc_structural": 0.893, "image_auroc_mean": 0.817,
                      "note": "as reported in the PSAD paper"},
    },
    "visa": {
        "musc": {"image_auroc": 0.9257, "pixel_auroc": 0.9871, "note": "repo re-run ViT-L-14-336@518"},
        "efficientad": {"image_auroc": 0.975, "note": "EfficientAD-S paper"},
    },
    "cifar10": {
        "uniad": {"image_auroc": 0.865, "note": "one unified model per normal-class split, 8 GPUs, `mean` score",
                  "categories": {"01234": {"image_auroc": 0.844}, "56789": {"image_auroc": 0.796},
                                 "02468": {"image_auroc": 0.930}, "13579": {"image_auroc": 0.891}}},
    },
    "btad": {
        "musc": {"image_auroc": 0.9616, "pixel_auroc": 0.9735, "note": "repo re-run ViT-L-14-336@518"},
    },
}

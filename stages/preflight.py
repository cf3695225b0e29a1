"""``ad-pipeline preflight <dataset>``: everything a dataset's recipe needs that is not there,
and a rough cost per stage — before hours of GPU work. ``prepare@<dataset>`` runs it first.

Checked: the data folder and its categories, the params file (``datasets.<name>.profile``
written for DVC), the weight files of every backbone / teacher / Grounded-SAM the effective
settings use (accepted names; the SHA-256 prefix where the official name carries one), the
generic-image folders (ImageNet), PSAD's few-shot part labels, and a GPU when ``device`` is
cuda. Missing weights are errors unless the dataset's profile sets ``allow_random_init: true``
(then they are listed as random-init, and the run's outputs say so).

Costs are rough single-GPU (A100-class) estimates from the effective budgets and image counts
(the official counts when the data is not there yet); ``COST`` holds the per-unit seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ad_pipeline.backbones.registry import get_spec
from ad_pipeline.backbones.weights import find_weights, official_file_name, weights_dir_candidates
from ad_pipeline.data.images import IMAGE_SUFFIXES
from ad_pipeline.data.layouts import absent_dataset, cifar10
from ad_pipeline.data.layouts import common as layout_common
from ad_pipeline.errors import UserError
from ad_pipeline.methods.efficientad.teacher_files import teacher_file_name
from ad_pipeline.methods.registry import get_method
from ad_pipeline.segmentation.grounded_sam import weight_files
from stages.options import OPTIONS
from stages.params import BaseParams, unwritten_profiles

# What each method's recipe runs, in order (stage names as in dvc.yaml).
STAGES = {"patchcore": ["patchcore"], "musc": ["musc"], "efficientad": ["efficientad_teacher", "efficientad"],
          "efficientad_m": ["efficientad_teacher_m", "efficientad_m"], "puad": ["puad"], "puad_m": ["puad_m"],
          "uniad": ["uniad"], "csad": ["pseudo_labels", "segmentor", "csad"],
          "psad": ["part_segmenter", "psad"]}
# Official (train, test) image counts and categories, for estimates before the data is placed.
OFFICIAL_SIZE = {"mvtec_ad": (3629, 1725, 15), "mvtec_loco": (1772, 1568, 5), "visa": (8659, 2162, 12),
                 "btad": (1799, 741, 3), "cifar10": (4 * 25000, 4 * 10000, 4)}
# Rough GPU seconds per unit (A100-class; the papers' reported times where they give any).
COST = {"patchcore_image": 0.05, "musc_image": 0.6, "teacher_step": 0.3, "efficientad_step": {"small": 0.012,
        "medium": 0.03}, "puad_image": 0.01, "uniad_image_epoch": 0.004, "pseudo_label_image": 3.0,
        "segmentor_epoch": 10.0, "lgst_step": 0.03, "part_segmenter_epoch": 6.0, "psad_image": 0.1}


@dataclass(frozen=True)
class Need:
    """One thing the recipe needs: ``status`` ok | missing | random-init | distil | warn (only
    ``missing`` stops the run); ``fix`` says what to place."""

    stage: str
    what: str
    status: str
    fix: str = ""


@dataclass
class Counts:
    train: int
    test: int
    categories: list[str]
    official: bool  # estimated from the official dataset size (data not there)


def _checksum_hint(name: str) -> str:
    m = re.search(r"-([0-9a-f]{8,})\.\w+$", name)
    return f" (sha256 starts with {m.group(1)})" if m else ""


class Checker:
    def __init__(self, p: BaseParams, dataset: str):
        self.p, self.dataset = p, dataset
        self.ds = p.datasets[dataset]
        self.weights_dir = Path(p.weights_dir)
        self.allow_random = self.ds.allow_random_init and p.pretrained != "true"
        self.needs: list[Need] = []

    def add(self, stage: str, what: str, ok: bool, fix: str, *, weights: bool = False) -> None:
        status = "ok" if ok else ("random-init" if weights and self.allow_random else "missing")
        self.needs.append(Need(stage, what, status, "" if ok else fix))

    def backbone(self, stage: str, name: str) -> None:
        spec = get_spec(name)
        names = [c.name for c in weights_dir_candidates(spec, self.weights_dir)]
        found = find_weights(spec, self.weights_dir) is not None or self.p.pretrained == "false" and self.allow_random
        self.add(stage, f"{name} weights", found, f"place one of {', '.join(names)} in {self.weights_dir}/"
                 f"{_checksum_hint(official_file_name(spec))}", weights=True)

    def images(self, stage: str, key: str, folder: str | None) -> None:
        if folder is None:
            return
        path = Path(folder)
        ok = path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*"))
        self.add(stage, f"{key}: images in {folder}", ok, f"put the generic images there (see {folder}/"
                 "PUT_DATASET_HERE.md) or point the setting elsewhere")


def counts(p: BaseParams, dataset: str) -> Counts:
    ds = p.datasets[dataset]
    root = Path(ds.root)
    if ds.format == cifar10.NAME:  # pickles, no category folders: the official split sizes
        train, test, _ = OFFICIAL_SIZE[cifar10.NAME]
        absent = absent_dataset(ds.format, root) is not None
        return Counts(train, test, [] if absent else list(cifar10.SPLITS), absent)
    found = layout_common.list_categories(root) if root.is_dir() else []
    cats = found if ds.categories == "all" else [c for c in ds.categories if c in found]
    if not cats:
        train, test, n = OFFICIAL_SIZE.get(ds.format, (0, 0, 0))
        return Counts(train, test, [] if ds.categories == "all" else list(ds.categories), True)

    def n_images(sub: str) -> int:
        return sum(1 for c in cats for q in (root / c / sub).rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES)

    return Counts(n_images("train"), n_images("test"), cats, False)


def check(p: BaseParams, dataset: str) -> tuple[list[Need], dict[str, float], Counts]:
    """(needs, estimated seconds per stage, image counts) of ``dataset``'s recipe."""
    if dataset not in p.datasets:
        raise UserError(f"no dataset {dataset!r} in params.yaml", fix=f"known: {', '.join(p.datasets)}")
    c = Checker(p, dataset)
    n = counts(p, dataset)
    ds = c.ds
    placeholder = Path(ds.raw_root or ds.root) / "PUT_DATASET_HERE.md"
    c.add("prepare", f"dataset {dataset} in {ds.root}", not n.official,
          f"place the dataset as {placeholder} describes, or point datasets.{dataset}.root at it")
    if dataset in unwritten_profiles(OPTIONS.params_path, p):  # only `dvc repro` needs it: a warning
        c.needs.append(Need("dvc", f"datasets.{dataset}.profile in {OPTIONS.params_path}", "warn",
                            "add `profile: {}` under the dataset: its DVC stages depend on that key"))
    if p.device.startswith("cuda"):
        import torch

        c.add("all", f"a GPU (device: {p.device})", torch.cuda.is_available(),
              "run on a machine with CUDA or set device: cpu")
    methods = [m for m in STAGES if dataset in p.method(m).datasets]
    if "psad" in methods and "patchcore" not in methods:
        c.add("psad", "patchcore on this dataset (PSAD reads its scores)", False,
              f"add {dataset} to patchcore.datasets")
    cats = n.categories or [None]
    costs: dict[str, float] = {}
    n_cat = max(len(n.categories), OFFICIAL_SIZE.get(ds.format, (0, 0, 1))[2] if n.official else 1)
    for m in methods:
        s = p.settings(m, dataset)
        cfg = s.config
        if m == "patchcore":
            c.backbone(m, s.backbone)
            costs[m] = (n.train + n.test) * COST["patchcore_image"]
        elif m == "musc":
            c.backbone(m, s.backbone)
            costs[m] = n.test * COST["musc_image"] * (cfg.image_size / 518) ** 2
        elif m in ("efficientad", "efficientad_m"):
            stage = get_method(m).requires[0]  # its teacher stage
            t = p.settings("efficientad_teacher", dataset).config
            teacher = c.weights_dir / teacher_file_name(cfg.model_size)
            if m == "efficientad" and t.model_size != cfg.model_size:
                c.add("efficientad_teacher", f"teacher model_size {t.model_size} = efficientad's {cfg.model_size}",
                      False, "set the same model_size in efficientad_teacher and efficientad")
            if teacher.is_file() or t.source == "file":
                c.add(stage, f"teacher {teacher}", teacher.is_file(), f"place {teacher.name} in "
                      f"{c.weights_dir}/ (a PDN state dict, e.g. nelson1425's)")
                costs[stage] = 0.0
            else:
                c.needs.append(Need(stage, f"teacher {teacher}", "distil",
                                    f"not there: distilled ({t.steps} steps; placing {teacher.name} skips it)"))
                c.backbone(stage, t.target_backbone)
                c.images(stage, "efficientad_teacher.pretrain_images", t.pretrain_images)
                costs[stage] = t.steps * COST["teacher_step"]
            c.images(m, f"{m}.pretrain_images", cfg.pretrain_images)
            costs[m] = n_cat * cfg.steps * COST["efficientad_step"][cfg.model_size] * (cfg.image_size / 256) ** 2
        elif m in ("puad", "puad_m"):
            upstream = get_method(m).requires[0]
            if upstream not in methods:
                c.add(m, f"{upstream} on this dataset (PUAD reads its model)", False,
                      f"add {dataset} to {upstream}.datasets")
            costs[m] = (n.train + n.test) * COST["puad_image"]
        elif m == "uniad":
            c.backbone(m, cfg.backbone)
            costs[m] = cfg.epochs * n.train * COST["uniad_image_epoch"]
        elif m == "csad":
            c.backbone("segmentor", cfg.encoder)
            c.images(m, "csad.penalty_images", cfg.penalty_images)
            seen: set[str] = set()
            for cat in cats:
                lab = p.settings("pseudo_labels", dataset, cat).config
                if lab.descriptor_backbone not in seen:
                    seen.add(lab.descriptor_backbone)
                    c.backbone("pseudo_labels", lab.descriptor_backbone)
                if lab.proposer == "grounded_sam":
                    g = p.pseudo_labels.grounded_sam.get(cat or "", p.pseudo_labels.grounded_sam.get("default"))
                    for name, path in weight_files(c.weights_dir, g.sam_variant if g else "vit_h").items():
                        if str(path) not in seen:
                            seen.add(str(path))
                            c.add("pseudo_labels", f"Grounded-SAM {name}: {path}", path.exists(),
                                  f"place {path.name} in {c.weights_dir}/ (see README 'Local weights')", weights=True)
            grounded = p.settings("pseudo_labels", dataset, cats[0]).config.proposer == "grounded_sam"
            costs["pseudo_labels"] = n.train * COST["pseudo_label_image"] * (1.0 if grounded else 0.01)
            costs["segmentor"] = n_cat * cfg.segmentor.epochs * COST["segmentor_epoch"]
            costs[m] = n_cat * cfg.lgst_steps * COST["lgst_step"]
        elif m == "psad":
            c.backbone("part_segmenter", cfg.segmenter_encoder)
            c.backbone(m, cfg.feature_encoder)
            for cat in n.categories:
                shots = p.settings(m, dataset, cat).config.shots
                labels = Path(ds.root) / cat / "aux" / "part_labels" / "train" / "good"
                have = len(list(labels.glob("*.png"))) if labels.is_dir() else 0
                c.add("part_segmenter", f"{cat}: few-shot part labels in {labels} ({have} of {shots})", have >= 1,
                      "label a few train/good images (README 'PSAD part labels': `ad-pipeline import-part-labels`, "
                      "or --from-pseudo-labels)")
            costs["part_segmenter"] = n_cat * cfg.segmenter.epochs * COST["part_segmenter_epoch"]
            costs[m] = (n.train + n.test) * COST["psad_image"]
    return c.needs, costs, n


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def render(dataset: str, needs: list[Need], costs: dict[str, float], n: Counts) -> str:
    lines = [f"preflight {dataset}: " + ("the official dataset size (data not found)" if n.official else
                                         f"{len(n.categories)} categories, {n.train} train / {n.test} test images")]
    for need in needs:
        mark = {"ok": "ok     ", "missing": "MISSING", "random-init": "RANDOM ", "distil": "distil ",
                "warn": "warning"}[need.status]
        lines.append(f"  [{mark}] {need.stage}: {need.what}" + (f"\n            -> {need.fix}" if need.fix else ""))
    lines.append("estimated cost (rough, one A100-class GPU):")
    lines += [f"  {stage:<20} {_duration(s)}" for stage, s in costs.items()]
    lines.append(f"  {'total':<20} {_duration(sum(costs.values()))}")
    return "\n".join(lines)


def require(p: BaseParams, dataset: str) -> str:
    """The preflight report; a UserError listing every missing item when anything is missing."""
    needs, costs, n = check(p, dataset)
    text = render(dataset, needs, costs, n)
    missing = [x for x in needs if x.status == "missing"]
    if missing:
        raise UserError(f"the recipe of {dataset} cannot run: {len(missing)} thing(s) missing\n{text}",
                        fix=f"place what is marked MISSING (or set datasets.{dataset}.profile.allow_random_init: true "
                            "for random-init weights: tests and demos only)")
    return text

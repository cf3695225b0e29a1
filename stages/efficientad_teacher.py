"""Stage ``efficientad_teacher@<dataset>``: the PDN teacher EfficientAD uses on a dataset
(``efficientad_teacher_m@<dataset>``: EfficientAD-M's, the same settings with its ``model_size``).

The teacher is ``weights_dir/teacher_<size>.pth`` when present (e.g. nelson1425's
ImageNet-distilled teachers), else distilled here with the dataset's effective
``efficientad_teacher`` settings: the paper's (WRN-101-2 targets on ImageNet, 60 000 steps)
on real datasets, the synthetic profile's tiny stand-in on the demo. Pretraining images come
from ``pretrain_images``; when that is null the dataset's training images are used instead — a
documented fallback recorded in ``teacher.json``.
"""

from __future__ import annotations

from ad_pipeline.errors import UserError
from ad_pipeline.io import atomic_dir
from ad_pipeline.meta import measured
from ad_pipeline.methods.efficientad.config import TeacherConfig
from ad_pipeline.methods.efficientad.teacher_files import obtain_teacher, save_teacher
from ad_pipeline.seed import seed_everything
from stages.common import TEACHER_STAGES, load_manifests, start_dataset_stage, teacher_dir, write_meta
from stages.params import BaseParams
from stages.settings import Effective


def teacher_config(p: BaseParams, dataset: str, method: str = "efficientad") -> tuple[Effective, TeacherConfig]:
    """(the ``efficientad_teacher`` settings on ``dataset``, the config the teacher of ``method`` is made
    with: those settings, with ``method``'s ``model_size`` for a variant other than ``efficientad``)."""
    if method not in TEACHER_STAGES:
        raise UserError(f"no teacher stage for method {method!r}", fix=f"use one of {', '.join(TEACHER_STAGES)}")
    settings = p.settings("efficientad_teacher", dataset)
    if method == "efficientad":
        return settings, settings.config
    return settings, settings.config.model_copy(update={"model_size": p.settings(method, dataset).config.model_size})


def run(dataset: str, method: str = "efficientad") -> None:
    if method not in TEACHER_STAGES:
        raise UserError(f"no teacher stage for method {method!r}", fix=f"use one of {', '.join(TEACHER_STAGES)}")
    name = TEACHER_STAGES[method]
    out_dir = teacher_dir(dataset, name)
    stage = start_dataset_stage(f"{name}@{dataset}", "efficientad_teacher", dataset, out_dir)
    if stage is None:
        return
    settings, cfg = teacher_config(stage.params, dataset, method)
    fallback = [path for m in load_manifests(dataset) for path in m.paths("train")] \
        if cfg.pretrain_images is None else []
    seed_everything(stage.params.seed)
    with atomic_dir(out_dir) as out, measured() as timing:
        state = obtain_teacher(cfg, stage.ctx, fallback)
        save_teacher(state, out)
    write_meta(out_dir, method=name, section=cfg, ctx=stage.ctx, measured=timing, settings=settings,
               extra={"weights": "pretrained" if state.meta.get("source") == "file" else "distilled", **state.meta})

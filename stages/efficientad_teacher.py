"""Stage ``efficientad_teacher@<dataset>``: the PDN teacher EfficientAD uses on a dataset.

The teacher is ``weights_dir/teacher_<size>.pth`` when present (e.g. nelson1425's
ImageNet-distilled teachers), else distilled here with the dataset's effective
``efficientad_teacher`` settings: the paper's (WRN-101-2 targets on ImageNet, 60 000 steps)
on real datasets, the synthetic profile's tiny stand-in on the demo. Pretraining images come
from ``pretrain_images``; when that is null the dataset's training images are used instead — a
documented fallback recorded in ``teacher.json``.
"""

from __future__ import annotations

from ad_pipeline.io import atomic_dir
from ad_pipeline.meta import measured
from ad_pipeline.methods.efficientad.teacher_files import obtain_teacher, save_teacher
from ad_pipeline.seed import seed_everything
from stages.common import load_manifests, start_dataset_stage, teacher_dir, write_meta


def run(dataset: str) -> None:
    stage = start_dataset_stage(f"efficientad_teacher@{dataset}", "efficientad_teacher", dataset, teacher_dir(dataset))
    if stage is None:
        return
    cfg = stage.settings.config
    fallback = [path for m in load_manifests(dataset) for path in m.paths("train")] \
        if cfg.pretrain_images is None else []
    seed_everything(stage.params.seed)
    with atomic_dir(teacher_dir(dataset)) as out, measured() as timing:
        state = obtain_teacher(cfg, stage.ctx, fallback)
        save_teacher(state, out)
    write_meta(teacher_dir(dataset), method="efficientad_teacher", section=cfg, ctx=stage.ctx, measured=timing,
               settings=stage.settings,
               extra={"weights": "pretrained" if state.meta.get("source") == "file" else "distilled", **state.meta})

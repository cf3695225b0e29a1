"""Stage ``efficientad_teacher``: distil the PDN teacher (or load ``weights_dir/teacher_<size>.pth``).

Pretraining images come from ``efficientad_teacher.pretrain_images`` (ImageNet when the
user has it; the synthetic demo uses ``data/synthetic/generic_images``); when that is null
the training images of every dataset EfficientAD runs on are used instead — a documented
fallback recorded in ``teacher.json``.
"""

from __future__ import annotations

from ad_pipeline.io import atomic_dir
from ad_pipeline.meta import measured
from ad_pipeline.methods.efficientad import obtain_teacher, save_teacher
from ad_pipeline.seed import seed_everything
from stages.common import ARTIFACTS, dataset_absent, load_manifests, params, run_context, write_meta

OUT = ARTIFACTS / "efficientad_teacher"


def run() -> None:
    p = params()
    cfg = p.efficientad_teacher
    datasets = p.efficientad.datasets
    fallback = [path for ds in datasets if dataset_absent(ds) is None
                for m in load_manifests(ds) for path in m.paths("train")] if cfg.pretrain_images is None else []
    ctx = run_context(p, datasets[0] if datasets else next(iter(p.datasets)))
    seed_everything(p.seed)
    with atomic_dir(OUT) as out, measured() as timing:
        state = obtain_teacher(cfg, ctx, fallback)
        save_teacher(state, out)
    write_meta(OUT, method="efficientad_teacher", section=cfg, ctx=ctx, measured=timing,
               extra={"weights": "pretrained" if state.meta.get("source") == "file" else "distilled", **state.meta})

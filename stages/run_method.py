"""Stages ``<method>@<dataset>`` for per-category methods: fit, score, dump, meta.json.

Writes ``artifacts/<dataset>/<method>/<category>/`` (model files, test/validation dumps,
meta.json) as one atomic directory: an interrupted run leaves the previous output intact.
"""

from __future__ import annotations

import numpy as np

from ad_pipeline.data.images import image_size
from ad_pipeline.io import atomic_dir, write_json, write_scores
from ad_pipeline.meta import measured
from ad_pipeline.methods.registry import get_method
from ad_pipeline.seed import seed_everything
from stages.common import ARTIFACTS, load_manifests, log, method_dir, params, run_context, write_meta

# Upstream stages that are not per dataset/category.
GLOBAL_UPSTREAM = {"efficientad_teacher": ARTIFACTS / "efficientad_teacher"}


def method_config(section, method_cls):
    """The method's own Config from its params section (minus the pipeline-only keys)."""
    own = set(method_cls.Config.model_fields)
    return method_cls.Config(**{k: v for k, v in section.model_dump().items() if k in own})


def run(method: str, dataset: str) -> None:
    p = params()
    method_cls = get_method(method)
    section = p.method(method)
    cfg = method_config(section, method_cls)
    manifests = load_manifests(dataset)
    with atomic_dir(method_dir(dataset, method)) as out:
        for manifest in manifests:
            cat_dir = out / manifest.category
            cat_dir.mkdir()
            upstream = {
                name: GLOBAL_UPSTREAM.get(name, method_dir(dataset, name) / manifest.category)
                for name in method_cls.requires
            }
            ctx = run_context(p, dataset, method, **upstream)
            log.info("%s@%s: category %s", method, dataset, manifest.category)
            seed_everything(p.seed)
            with measured() as timing:
                model = method_cls(cfg, ctx)
                validation = manifest.paths("validation")
                if not method_cls.zero_shot:
                    model.fit(manifest.paths("train"), validation)
                test = model.score(manifest.paths("test"))
                val = model.score(validation) if validation and not method_cls.zero_shot else None
                model.save(cat_dir)
            write_scores(cat_dir, "test", manifest.fingerprint("test"), test.scores, test.maps)
            if val is not None:
                write_scores(cat_dir, "validation", manifest.fingerprint("validation"), val.scores, val.maps)
                write_json(cat_dir / "threshold.json", decision_threshold(val.scores, p.threshold_quantile))
            extra = model.meta() | {
                "image_size": list(image_size(manifest.paths("train" if not method_cls.zero_shot else "test")[0])),
                "upstream": {k: str(v) for k, v in upstream.items()},
            }
            write_meta(cat_dir, method=method, section=cfg, ctx=ctx, measured=timing, extra=extra)


def decision_threshold(validation_scores: np.ndarray, quantile: float) -> dict:
    """The image-score threshold used by ``predict``: a quantile of the NORMAL validation scores
    (so about ``1 − quantile`` of normal images are flagged)."""
    return {"score_threshold": float(np.quantile(validation_scores, quantile)), "quantile": quantile,
            "n_validation": int(len(validation_scores))}

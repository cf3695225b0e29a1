"""Stages ``<method>@<dataset>`` for per-category methods: fit, score, dump, meta.json.

Writes ``artifacts/<dataset>/<method>/<category>/`` (model files, test/validation dumps,
meta.json) as one atomic directory: an interrupted run leaves the previous output intact.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ad_pipeline.data.images import image_size
from ad_pipeline.data.manifest import Manifest
from ad_pipeline.io import read_json, write_json, write_scores
from ad_pipeline.meta import measured
from ad_pipeline.methods.base import AnomalyMethod
from ad_pipeline.methods.registry import get_method
from ad_pipeline.seed import seed_everything
from stages.common import for_each_category, log, run_context, upstream_dir, write_meta
from stages.params import BaseParams

Prepare = Callable[[AnomalyMethod, Manifest], None]


MIN_THRESHOLD_IMAGES = 20  # fewer normal images than this make the threshold a guess: warn


def decision_threshold(validation_scores: np.ndarray, quantile: float, *, holdout: bool = False,
                       train_loo: np.ndarray | None = None) -> dict:
    """The image-score threshold used by ``predict``: a quantile of NORMAL images' scores on images
    the model did not fit (so about ``1 − quantile`` of normal images are flagged).

    ``source`` says which: "validation" (the dataset's validation folder); "holdout" (train
    images held out by ``val_fraction``, where the dataset has no validation folder); or
    "holdout+train_loo" when the method also has leave-one-image-out train scores (PatchCore:
    each train image scored without its own patches), which add every train image as an unseen
    normal. Fewer than ``MIN_THRESHOLD_IMAGES`` scores add a ``warning`` (logged too).
    """
    scores, source = np.asarray(validation_scores), "holdout" if holdout else "validation"
    if holdout and train_loo is not None:
        scores, source = np.concatenate([scores, np.asarray(train_loo)]), "holdout+train_loo"
    out = {"score_threshold": float(np.quantile(scores, quantile)), "quantile": quantile, "source": source,
           "n_normal": int(len(scores))}
    if len(scores) < MIN_THRESHOLD_IMAGES:
        out["warning"] = (f"only {len(scores)} normal image(s) back this threshold (source {source}; "
                          f"< {MIN_THRESHOLD_IMAGES}): expect many false alarms; add a validation folder or "
                          "raise the dataset's val_fraction")
        log.warning("WARNING threshold: %s", out["warning"])
    return out


def upstream_weights(upstream: dict[str, Path]) -> str:
    """Weights mode inherited from the stages a method builds on (PUAD: its EfficientAD), used
    when the method itself reports none: 'random-init' if any input is, else theirs."""
    modes = {read_json(d / "meta.json").get("weights", "n/a") for d in upstream.values() if (d / "meta.json").exists()}
    if not modes:
        return "n/a"
    return "random-init" if "random-init" in modes else modes.pop() if len(modes) == 1 else "mixed"


def run_category(p: BaseParams, method: str, dataset: str, manifest: Manifest, cat_dir: Path,
                 prepare: Prepare | None = None) -> None:
    """Fit (unless zero-shot) and score one category; write model, dumps, threshold and meta.

    ``prepare(model, manifest)`` runs before fitting (e.g. PSAD loads PatchCore's dumps).
    """
    method_cls = get_method(method)
    settings = p.settings(method, dataset, manifest.category)
    cfg = settings.config
    upstream = {name: upstream_dir(name, dataset, manifest.category) for name in method_cls.requires}
    ctx = run_context(p, dataset, settings, **upstream)
    log.info("%s@%s: category %s", method, dataset, manifest.category)
    seed_everything(p.seed)
    validation = manifest.paths("validation")
    with measured() as timing:
        model = method_cls(cfg, ctx)
        if prepare is not None:
            prepare(model, manifest)
        if not method_cls.zero_shot:
            model.fit(manifest.paths("train"), validation)
        test = model.score(manifest.paths("test"))
        val = model.score(validation) if validation and not method_cls.zero_shot else None
        train_loo = getattr(model, "train_loo_scores", None)
        loo = train_loo() if train_loo is not None else None
        model.save(cat_dir)
    stage = f"{method}@{dataset}"
    write_scores(cat_dir, "test", manifest.fingerprint("test"), test.scores, test.maps, writer=stage,
                 map_dtype=method_cls.map_dtype)
    if val is not None:
        write_scores(cat_dir, "validation", manifest.fingerprint("validation"), val.scores, val.maps, writer=stage,
                     map_dtype=method_cls.map_dtype)
        holdout = any(s.holdout for s in manifest.split("validation"))
        write_json(cat_dir / "threshold.json",
                   decision_threshold(val.scores, p.threshold_quantile, holdout=holdout, train_loo=loo))
    if loo is not None:  # leave-one-image-out train scores (PatchCore → PSAD's adaptive scaling)
        write_scores(cat_dir, "train_loo", manifest.fingerprint("train"), loo, None, writer=stage)
    extra = {"weights": upstream_weights(upstream)} | model.meta() | {
        "image_size": list(image_size(manifest.paths("test" if method_cls.zero_shot else "train")[0])),
        "upstream": {k: str(v) for k, v in upstream.items()},
    }
    write_meta(cat_dir, method=method, section=cfg, ctx=ctx, measured=timing, extra=extra, settings=settings)


def run(method: str, dataset: str, prepare: Prepare | None = None) -> None:
    get_method(method)  # unknown name → clear error before any work
    for_each_category(method, dataset, lambda p, manifest, cat_dir: run_category(p, method, dataset, manifest,
                                                                                 cat_dir, prepare))

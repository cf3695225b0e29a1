"""Stage ``uniad_vis@<dataset>`` (optional, ``uniad_vis.datasets``): train UniAD's visualisation
decoder (features → image) per trained UniAD model and render, for each category's best and worst
test cases (as in the report), input / decoded features / decoded reconstruction / anomaly map,
plus the learned-query visualisation. Writes ``artifacts/vis/uniad/<dataset>/``:
``<category>/reconstruction.png``, ``<category>/queries.png`` and ``vis.json`` (losses, cases).
It lives apart from ``artifacts/<dataset>/`` so that the fuse and evaluate stages do not depend on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ad_pipeline.data.images import load_batch, load_rgb
from ad_pipeline.data.manifest import Manifest
from ad_pipeline.fusion import resize_maps
from ad_pipeline.io import atomic_dir, read_scores, write_json
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.uniad.config import Config, VisConfig
from ad_pipeline.methods.uniad.distributed import resolve_device
from ad_pipeline.methods.uniad.features import build_feature_extractor, extract_aligned_features, extract_options
from ad_pipeline.methods.uniad.method import MODEL_FILE, load_model_state
from ad_pipeline.methods.uniad.model import build_model
from ad_pipeline.methods.uniad.vis import build_decoder, decode, query_features, reconstruction_loss, train_decoder
from ad_pipeline.report.figures import image_row_figure, pick_cases, reconstruction_figure
from ad_pipeline.seed import seed_everything
from stages.common import QUERIES, RECONSTRUCTION, load_manifests, method_dir, start_dataset_stage, vis_dir
from stages.uniad import model_groups

def run(dataset: str) -> None:
    stage = start_dataset_stage(f"uniad_vis@{dataset}", "uniad", dataset, vis_dir(dataset))
    if stage is None:
        return
    vis = VisConfig.model_validate(stage.params.uniad_vis.model_dump(exclude={"datasets"}))
    seed_everything(stage.params.seed)
    summary: dict = {"dataset": dataset, "groups": {}}
    with atomic_dir(vis_dir(dataset)) as out:
        for group, manifests in model_groups(load_manifests(dataset)).items():
            summary["groups"][group or "all"] = _visualise_group(manifests, stage.settings.config, vis, stage.ctx, out)
        write_json(out / "vis.json", summary)


def _visualise_group(manifests: list[Manifest], cfg: Config, vis: VisConfig, ctx: RunContext, out: Path) -> dict:
    device = resolve_device(cfg, ctx)
    extractor = build_feature_extractor(cfg, ctx)
    mean, std = extractor.backbone.spec.mean, extractor.backbone.spec.std
    options = extract_options(cfg, ctx, device, ctx.progress)
    paths = [path for m in manifests for path in m.paths(vis.train_split)]
    if vis.max_images and len(paths) > vis.max_images:
        paths = [paths[i] for i in np.linspace(0, len(paths) - 1, vis.max_images).round().astype(int)]
    features = extract_aligned_features(extractor, paths, **options)
    images = load_batch(paths, cfg.image_size, mean=mean, std=std, resample=cfg.resample)

    torch.manual_seed(ctx.seed)
    decoder = build_decoder(vis, features.shape[1])
    initial = reconstruction_loss(decoder.to(device), features, images)
    history = train_decoder(decoder, features, images, vis, seed=ctx.seed, device=device)
    final = reconstruction_loss(decoder, features, images)

    model = build_model(cfg, tuple(features.shape[1:]))
    first = manifests[0]
    model.load_state_dict(load_model_state(method_dir(first.dataset, "uniad") / first.category / MODEL_FILE))
    model = model.to(device).eval()
    queries = {name: decode(decoder, f, mean, std)[0] for name, f in query_features(model, ctx.seed).items()}
    cases = {}
    for manifest in manifests:
        cat_out = out / manifest.category
        cat_out.mkdir()
        rows, cases[manifest.category] = _case_rows(manifest, decoder, model, extractor, options, mean, std)
        reconstruction_figure(rows, f"uniad on {manifest.dataset} / {manifest.category}: feature reconstruction",
                              cat_out / RECONSTRUCTION)
        image_row_figure(queries, f"uniad learned queries ({manifest.dataset} / {manifest.category} model)",
                         cat_out / QUERIES)
    return {"categories": [m.category for m in manifests], "n_images": len(paths), "train_split": vis.train_split,
            "loss_before": initial, "loss_after": final, "loss_history": history, "cases": cases}


@torch.no_grad()
def _case_rows(manifest: Manifest, decoder, model, extractor, options: dict, mean, std) -> tuple[list[dict], list]:
    """Figure rows and ``[[test index, caption], …]`` for the report's best/worst cases of one category."""
    labels = np.array(manifest.labels("test"))
    scores, maps = read_scores(method_dir(manifest.dataset, "uniad") / manifest.category, "test",
                               manifest.fingerprint("test"))
    picked = pick_cases(labels, scores)
    samples = manifest.split("test")
    paths = [manifest.root / samples[i].path for i, _ in picked]
    features = extract_aligned_features(extractor, paths, **(options | {"cache_dir": None, "progress": False}))
    device = next(model.parameters()).device
    reconstruction = model(features.to(device)).cpu()
    decoded, rebuilt = decode(decoder, features, mean, std), decode(decoder, reconstruction, mean, std)
    size = decoded.shape[1:3]
    rows = []
    for k, (idx, caption) in enumerate(picked):
        image = np.asarray(load_rgb(paths[k]).resize((size[1], size[0])))
        rows.append({"image": image, "decoded": decoded[k], "reconstructed": rebuilt[k],
                     "map": resize_maps(maps[idx][None].astype(np.float32), size)[0],
                     "caption": f"{caption} — {samples[idx].path}, score {scores[idx]:.3g}"})
    return rows, [[int(i), c] for i, c in picked]

"""Run the OFFICIAL MuSc (github.com/xrli-U/MuSc) from a local checkout on one MVTec-layout category
and dump what it computes, stage by stage. Nothing of the official code is copied here: this script
imports it from ``--checkout`` and records the arguments and return values of its own functions.

    python bench/musc_official.py --checkout /work/official/MuSc --data-root ROOT --category bottle \
        --weights W.pt --mode file --image-size 224 --out official.npz

``--mode file``: ``pretrained=<W.pt>`` (an open_clip state dict), the official code's own local-file
branch: no change to it at all; open_clip builds the model from its JSON config, so GELU.
``--mode openai``: ``pretrained='openai'`` with the one offline change, the OpenAI download replaced
by the local file (equivalent to this diff of ``models/backbone/open_clip/openai.py``)::

    -        model_path = download_pretrained_from_url(get_pretrained_url(name, 'openai'), cache_dir=cache_dir)
    +        model_path = os.environ['MUSC_OFFLINE_WEIGHTS']

At the model's native size that path builds QuickGELU (``build_model_from_openai_state_dict``), at
any other size the JSON config's GELU. The official ``compute_metrics`` is replaced by a recorder
(no masks needed, no sklearn/skimage); ``openpyxl`` (Excel export, off) is stubbed if missing.

Output ``.npz``: maps float32 [N, S, S], raw (pre-RsCIN) image scores, final scores, class tokens
[N, D], per-(r, layer) MSM scores [R, layers, N, L] and the first 4 LNAMD features Z [R, layers,
N, 4, C], the first 4 patch tokens of every layer [layers, N, 4, C], image paths, and ``timing`` (JSON: build_s, score_s; peak_rss_mib: the
process' high-water mark; scoring_peak_mib: the sampled peak above the RSS before scoring).
``--fixture``: the part the default test suite checks (maps at every 7th pixel and the last,
raw and final scores, class tokens, per-(r, layer) MSM scores).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np


class PeakRss:
    """Sampled resident-set high-water mark (MiB) above the RSS at entry, every 2 ms."""

    def __enter__(self) -> PeakRss:
        self.base = self.peak = rss_mib()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mib())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())

    @property
    def above_base(self) -> float:
        return self.peak - self.base


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def process_peak_mib() -> float:
    """The whole process' RSS high-water mark (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _stub_missing(name: str, *attrs: str) -> None:
    """An empty stand-in for an optional import the run never uses."""
    try:
        __import__(name)
    except ImportError:
        module = sys.modules[name] = types.ModuleType(name)
        for attr in attrs:
            setattr(module, attr, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkout", required=True, type=Path)
    ap.add_argument("--data-root", type=Path)
    ap.add_argument("--category")
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--mode", choices=("file", "openai"), default="file")
    ap.add_argument("--backbone", default="ViT-B-16")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 5, 8, 11])
    ap.add_argument("--r-list", type=int, nargs="+", default=[1, 3, 5])
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--fixture", type=Path, help="also write the small test fixture (tests/test_parity_musc.py)")
    ap.add_argument("--time-msm", type=int, metavar="N",
                    help="only time the official MSM for 3 query images of N random unit tokens [N, L, C] "
                         "(L, C from --grid / --width); prints seconds per query image and pass")
    ap.add_argument("--grid", type=int, default=196)
    ap.add_argument("--width", type=int, default=768)
    args = ap.parse_args()
    if args.time_msm:
        return _time_msm(args)
    data_root, weights, out = args.data_root.resolve(), args.weights.resolve(), args.out.resolve()
    fixture = None if args.fixture is None else args.fixture.resolve()
    os.chdir(args.checkout)  # the official code appends './models/backbone' to sys.path
    sys.path.insert(0, str(args.checkout.resolve()))
    _stub_missing("openpyxl", "Workbook")  # Excel export (off)
    _stub_missing("skimage", "measure")  # used by the official metrics only, which are replaced
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import models.backbone.open_clip.openai as official_openai
    import models.musc as official

    rec: dict = {"msm": [], "z_head": []}
    if args.mode == "openai":
        official_openai.download_pretrained_from_url = lambda *_a, **_k: str(weights)

    msm = official.MSM

    def recording_msm(Z, device, topmin_min=0, topmin_max=0.3):
        s = msm(Z=Z, device=device, topmin_min=topmin_min, topmin_max=topmin_max)
        rec["msm"].append(s.cpu().numpy())
        rec["z_head"].append(Z[:, :4].float().cpu().numpy())
        return s

    rscin = official.RsCIN

    def recording_rscin(scores_old, cls_tokens=None, k_list=(0,)):
        rec["raw"] = np.asarray(scores_old)
        rec["cls"] = np.asarray(cls_tokens)
        rec["scores"] = np.asarray(rscin(scores_old, cls_tokens, k_list=k_list))
        return rec["scores"]

    def recording_metrics(gt_sp, pr_sp, gt_px, pr_px):
        rec["maps"] = np.asarray(pr_px)[:, 0].astype(np.float32)
        return (0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0)

    official.MSM, official.RsCIN, official.compute_metrics = recording_msm, recording_rscin, recording_metrics
    cfg = {"datasets": {"data_path": str(data_root), "dataset_name": "mvtec_ad", "class_name": args.category,
                        "img_resize": args.image_size, "divide_num": 1},
           "models": {"backbone_name": args.backbone, "pretrained": "openai" if args.mode == "openai" else str(weights),
                      "batch_size": args.batch_size, "feature_layers": args.layers, "r_list": args.r_list},
           "device": "0", "testing": {"output_dir": str(out.parent / "official_output"), "vis": False,
                                      "vis_type": "single_norm", "save_excel": False}}
    t0 = time.perf_counter()
    model = official.MuSc(cfg, seed=42)
    build_s = time.perf_counter() - t0
    encode = model.clip_model.encode_image
    heads: list[list[np.ndarray]] = []

    def recording_encode(image, out_layers, **kw):
        pooled, tokens = encode(image, out_layers, **kw)
        heads.append([t[:, 1:5].float().cpu().numpy() for t in tokens])
        return pooled, tokens

    model.clip_model.encode_image = recording_encode
    paths: list[str] = []
    dataset = model.load_datasets
    model.load_datasets = lambda *a, **k: _remember(dataset(*a, **k), paths)
    with PeakRss() as mem:
        t0 = time.perf_counter()
        model.make_category_data(args.category)
        score_s = time.perf_counter() - t0
    n_layers, n_r = len(args.layers), len(args.r_list)
    msm_arr = np.stack(rec["msm"]).reshape(n_r, n_layers, *rec["msm"][0].shape)
    z_head = np.stack(rec["z_head"]).reshape(n_r, n_layers, *rec["z_head"][0].shape)
    tokens = np.stack([np.concatenate([h[i] for h in heads]) for i in range(n_layers)])
    timing = {"build_s": round(build_s, 3), "score_s": round(score_s, 3), "n": len(paths),
              "peak_rss_mib": round(process_peak_mib(), 1), "scoring_peak_mib": round(mem.above_base, 1),
              "torch_threads": torch.get_num_threads(), "mode": args.mode}
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, maps=rec["maps"], raw=rec["raw"], scores=rec["scores"], cls=rec["cls"], msm=msm_arr,
             z_head=z_head, tokens_head=tokens, paths=np.array(paths), timing=json.dumps(timing))
    if fixture is not None:
        rows = np.r_[0:args.image_size:7, args.image_size - 1]
        np.savez(fixture, maps_sub=rec["maps"][:, rows][:, :, rows], map_rows=rows,
                 raw=rec["raw"], scores=rec["scores"], cls=rec["cls"], msm=msm_arr.astype(np.float32))
    print(json.dumps(timing))


def _time_msm(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(args.checkout.resolve()))
    import torch
    from models.modules._MSM import compute_scores_fast

    if args.threads:
        torch.set_num_threads(args.threads)
    z = torch.nn.functional.normalize(torch.randn(args.time_msm, args.grid, args.width,
                                                  generator=torch.Generator().manual_seed(0)), dim=-1)
    compute_scores_fast(z, 0, "cpu")  # warm-up
    t0 = time.perf_counter()
    for i in range(1, 4):
        compute_scores_fast(z, i, "cpu", topmin_min=0, topmin_max=0.3)
    print(json.dumps({"n": args.time_msm, "s_per_query_pass": (time.perf_counter() - t0) / 3}))


def _remember(dataset, paths: list[str]):
    paths.extend(d[2] for d in dataset.data_to_iterate)
    return dataset


if __name__ == "__main__":
    main()

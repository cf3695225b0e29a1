"""PSAD's test-time path as one module, for export (psad.md §4–6).

Inputs: ``image`` [B,3,S,S] in [0,1], the image through PSAD's ``preprocess`` (margin crop,
longer side to ``image_size``, zero-padded top-left) and, with the patch bank, ``image_1`` in
patchcore@'s geometry (squash + center crop). Both are the inputs' ``Geometry``, not graph ops:
they are PIL resamplings of the uint8 image at its source size (rounded to uint8 after each
pass), which no graph op reproduces exactly, and no one input serves both branches. Graph:
ImageNet normalisation → part segmenter argmax → class histogram and composition features
(``banks``) → standardisation → nearest-neighbour L2 distance to each stored bank (all rows at
once, [B,N,D] differences) → adaptive scaling with the stored training references →
+ patchcore@'s image score, scaled the same way (its whole graph, memory bank included) →
score [B]. PSAD localises nothing itself: the map is the patch bank's PatchCore map
[B,S',S'], or zeros [B,S,S] without one.

Banks are float32 buffers (``PSAD.score`` standardises and measures in float64): the h and c
terms agree to ~1e-7 relative, the p term as patchcore@'s graph agrees with its dumps (~1e-5).
Exportable only with ``patch_bank: coreset`` (or no ``p`` bank): any other patch bank is fitted
inside ``psad@`` and not kept.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ad_pipeline.errors import ArtifactError
from ad_pipeline.export.inference import Geometry, Inference, Normalize, NotExportable, inference_module
from ad_pipeline.io import read_json
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.psad.banks import composition_features, histogram_features
from ad_pipeline.methods.psad.method import PSAD, PSADConfig
from ad_pipeline.methods.psad.scaling import Standardizer, adaptive_scale
from ad_pipeline.methods.registry import get_method


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """min_i ‖q − m_i‖₂ per query [Q] for ``queries`` [Q,D] and ``bank`` [N,D], from explicit
    differences (no cdist in ONNX; no ‖q‖² + ‖m‖² − 2qᵀm cancellation). Memory: Q·N·D floats."""
    return (queries[:, None, :] - bank[None]).square().sum(2).sqrt().amin(1)


class PSADInference(nn.Module):
    def __init__(self, method: PSAD, patchcore: nn.Module | None):
        super().__init__()
        cfg = method.cfg
        self.normalize = Normalize()
        self.segmenter = method.segmenter.cpu().eval()
        self.features = method.features.cpu().eval()
        self.num_classes = cfg.num_classes
        self.scale_type = cfg.scale_type
        self.banks = [k for k in "hc" if k in cfg.memory_type]
        for k in self.banks:
            for name in ("mean", "std", "bank", "ref"):
                self.register_buffer(f"{k}_{name}", method.state[f"{k}_{name}"].float())
        self.patchcore = patchcore.eval() if patchcore is not None else None
        if patchcore is not None:
            self.register_buffer("p_ref", method.state["p_ref"].float())

    def bank_features(self, z: torch.Tensor, parts: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"h": [B,C], "c": [B,(C−1)·D]} for the stored banks, from normalised ``z`` and part maps [B,S,S]."""
        feats = {}
        if "h" in self.banks:
            feats["h"] = histogram_features(parts, self.num_classes)
        if "c" in self.banks:
            feats["c"] = composition_features(self.features(z), parts, self.num_classes)
        return feats

    def forward(self, x: torch.Tensor, x_patch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.normalize(x)
        parts = self.segmenter(z).argmax(1)  # [B,S,S]
        feats = self.bank_features(z, parts)
        score = torch.zeros_like(z[:, 0, 0, 0])
        for k in self.banks:
            q = Standardizer(getattr(self, f"{k}_mean"), getattr(self, f"{k}_std"))(feats[k])
            d = nearest_distances(q, getattr(self, f"{k}_bank"))
            score = score + adaptive_scale(d, getattr(self, f"{k}_ref"), self.scale_type)
        if self.patchcore is None:
            return torch.zeros_like(z[:, 0]), score
        amap, patch = self.patchcore(x_patch)
        return amap, score + adaptive_scale(patch, self.p_ref, self.scale_type)


def patchcore_inference(ctx: RunContext) -> Inference:
    """The inference graph of patchcore@'s model in ``ctx.upstream_dirs["patchcore"]`` (its
    settings from its meta.json), through the registry: PSAD reads PatchCore's saved model only."""
    pc_dir = Path(ctx.upstream_dirs.get("patchcore", ""))
    meta_file = pc_dir / "meta.json"
    if not meta_file.is_file():
        raise ArtifactError("no patchcore@ model (meta.json) for PSAD's patch bank", path=meta_file,
                            fix="run the patchcore stage of this dataset first")
    config = get_method("patchcore").Config
    params = read_json(meta_file)["params"]
    cfg = config(**{k: v for k, v in params.items() if k in config.model_fields})
    return inference_module("patchcore", pc_dir, cfg, ctx)


def build(model_dir: Path, cfg: PSADConfig, ctx: RunContext) -> Inference:
    method = PSAD.load(model_dir, cfg, ctx)
    cfg = method.cfg  # with the part segmenter's class count and preprocessing
    patch = None
    if "p" in cfg.memory_type:
        if cfg.patch_bank != "coreset":
            raise NotExportable(f"PSAD's patch bank (patch_bank: {cfg.patch_bank}) is fitted inside psad@ and not "
                                "saved, so it cannot be put in the graph", path=model_dir,
                                fix="export a PSAD fitted with psad.patch_bank: coreset (patchcore@'s model)")
        patch = patchcore_inference(ctx)
    pre = cfg.preprocess
    image = Geometry(cfg.image_size, margin=pre.crop, pad_square=pre.pad_square, resample=pre.resample,
                     rounding=pre.rounding)
    return Inference(PSADInference(method, patch.module if patch else None), resize=cfg.image_size,
                     inputs=(image, *(patch.inputs if patch else ())))

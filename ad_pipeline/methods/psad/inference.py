"""PSAD's test-time path as one module, for export (psad.md §4–6).

Inputs: ``image`` [B,3,S,S] in [0,1], the image through PSAD's ``preprocess`` (margin crop,
longer side to ``image_size``, zero-padded top-left) and, with the patch bank, ``image_1`` in
patchcore@'s geometry (squash + center crop). Both are the inputs' ``Geometry``, not graph ops:
they are PIL resamplings of the uint8 image at its source size (rounded to uint8 after each
pass), which no graph op reproduces exactly, and no one input serves both branches. Graph:
ImageNet normalisation → part segmenter argmax → class histogram and composition features
(``banks``) → standardisation → nearest-neighbour L2 distance to each stored bank (all rows at
once, [B,N,D] differences) → adaptive scaling with the stored training references →
+ the patch bank's image score, scaled the same way → score [B]. The patch bank is patchcore@'s
whole graph (``patch_bank: coreset``, memory bank included) or the seed's PatchCore
(``patch_bank: seed`` with ``seed_bank.save_bank``: :class:`SeedBankGraph`, its input the
preprocessed image Lanczos-resized as the seed does). PSAD localises nothing itself: the map is
the patch bank's map [B,h,w], or zeros [B,S,S] without one.

Banks are float32 buffers (``PSAD.score`` standardises and measures in float64): the h and c
terms agree to ~1e-7 relative, the p term as patchcore@'s graph agrees with its dumps (~1e-5).
``patch_bank: full`` (an ablation switch) is fitted inside ``psad@`` and not kept: not exportable.
"""

from __future__ import annotations

from dataclasses import replace
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
from ad_pipeline.methods.psad.seed_bank import (BANK_FILE, SeedBankConfig, build_seed_backbone, load_bank,
                                                patch_embedding)
from ad_pipeline.methods.registry import get_method


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """min_i ‖q − m_i‖₂ per query [Q] for ``queries`` [Q,D] and ``bank`` [N,D], from explicit
    differences (no cdist in ONNX; no ‖q‖² + ‖m‖² − 2qᵀm cancellation). Memory: Q·N·D floats."""
    return (queries[:, None, :] - bank[None]).square().sum(2).sqrt().amin(1)


class SeedBankGraph(nn.Module):
    """The seed's PatchCore (seed_bank.py) with its bank [M, D] as a buffer: input [B,3,s,s] in
    [0,1] → (patch map d₁/10 [B,h,w], image score [B]) as ``image_score(knn_distances(…))``.
    Squared distances as torch.cdist's matmul path forms them (the seed's ``knn_distances``): one
    product of [−2q, ‖q‖², 1] with [m, 1, ‖m‖²]. Memory: [B, h·w, M] distances."""

    def __init__(self, backbone: nn.Module, cfg: SeedBankConfig, bank: torch.Tensor):
        super().__init__()
        self.normalize = Normalize()
        self.backbone = backbone.cpu().eval()
        self.layers, self.pool, self.k = tuple(cfg.layers), cfg.pool, min(cfg.num_neighbors, len(bank))
        bank = bank.float()
        ones = torch.ones(len(bank), 1)
        self.register_buffer("bank_augmented", torch.cat([bank, ones, bank.square().sum(1, keepdim=True)], 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        emb = patch_embedding(self.backbone, self.normalize(x), self.layers, self.pool)  # [B,D,h,w]
        q = emb.flatten(2).transpose(1, 2)  # [B,P,D]
        q = torch.cat([-2 * q, q.square().sum(2, keepdim=True), torch.ones_like(q[..., :1])], 2)
        sq = q @ self.bank_augmented.T  # [B,P,M]
        d = sq.clamp(min=0).sqrt().topk(self.k, dim=2, largest=False).values / 10  # [B,P,k] ascending
        nearest = d[..., 0]  # [B,P]
        if self.k == 1:
            score = nearest.amax(1)
        else:  # the patch with the largest nearest distance, re-weighted by its k distances
            conf = d.gather(1, nearest.argmax(1)[:, None, None].expand(-1, 1, self.k))[:, 0]  # [B,k]
            e = conf.exp()
            score = (1 - e.amax(1) / e.sum(1)) * conf[:, 0]
        return nearest.unflatten(1, emb.shape[-2:]), score


class PSADInference(nn.Module):
    def __init__(self, method: PSAD, patch_bank: nn.Module | None):
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
        self.patch_bank = patch_bank.eval() if patch_bank is not None else None
        if patch_bank is not None:
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
        if self.patch_bank is None:
            return torch.zeros_like(z[:, 0]), score
        amap, patch = self.patch_bank(x_patch)
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


def seed_bank_inference(model_dir: Path, cfg: PSADConfig, ctx: RunContext) -> tuple[nn.Module, Geometry]:
    """The seed's PatchCore graph on the bank psad@ kept, and its input geometry."""
    bank = load_bank(model_dir)
    if bank is None:
        raise NotExportable(f"psad@ did not keep its seed patch bank ({BANK_FILE})", path=model_dir,
                            fix="set psad.seed_bank.save_bank: true and re-run psad@ (the bank is every train "
                                "patch: N·h·w·D float32 on disk)")
    sb = cfg.seed_bank
    geometry = replace(preprocess_geometry(cfg), then_resize=sb.image_size, then_resample="lanczos")
    return SeedBankGraph(build_seed_backbone(sb, ctx), sb, bank), geometry


def preprocess_geometry(cfg: PSADConfig) -> Geometry:
    """PSAD's ``preprocess`` (margin crop, longer side to ``image_size``, zero-padded) as an input geometry."""
    pre = cfg.preprocess
    return Geometry(cfg.image_size, margin=pre.crop, pad_square=pre.pad_square, resample=pre.resample,
                    rounding=pre.rounding)


def build(model_dir: Path, cfg: PSADConfig, ctx: RunContext) -> Inference:
    method = PSAD.load(model_dir, cfg, ctx)
    cfg = method.cfg  # with the part segmenter's class count and preprocessing
    patch, patch_inputs = None, ()
    if "p" in cfg.memory_type:
        if cfg.patch_bank == "full":
            raise NotExportable("PSAD's patch bank (patch_bank: full) is fitted inside psad@ and not saved, so it "
                                "cannot be put in the graph", path=model_dir,
                                fix="export a PSAD fitted with psad.patch_bank: seed (with seed_bank.save_bank: "
                                    "true) or coreset (patchcore@'s model)")
        if cfg.patch_bank == "seed":
            patch, geometry = seed_bank_inference(model_dir, cfg, ctx)
            patch_inputs = (geometry,)
        else:
            pc = patchcore_inference(ctx)
            patch, patch_inputs = pc.module, pc.inputs
    return Inference(PSADInference(method, patch), resize=cfg.image_size,
                     inputs=(preprocess_geometry(cfg), *patch_inputs))

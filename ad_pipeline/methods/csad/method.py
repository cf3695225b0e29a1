"""CSAD for one category: the segmentor (stage ``segmentor@``) and the scoring method (``csad@``).

``fit_segmentor`` trains the DeepLab-v3+ head on the pseudo-labels of ``pseudo_labels@``;
``CSAD.fit`` loads it, fits the patch-histogram branch on train, trains LGST on train, and
fits every normalisation on ``validation`` only (never on test data). Final score =
z(LGST) + z(patch-hist), both trimmed z-scores of validation scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from ad_pipeline.backbones import build_backbone
from ad_pipeline.components.student_teacher.data import PenaltyImages, list_images, load_uint8
from ad_pipeline.components.student_teacher.train import teacher_statistics, train_student_autoencoder
from ad_pipeline.data.images import load_batch
from ad_pipeline.errors import ArtifactError
from ad_pipeline.fusion import Normalizer, fit_normalizer
from ad_pipeline.io import read_json, write_json
from ad_pipeline.methods.base import AnomalyMethod, MethodConfig, RunContext, Scores
from ad_pipeline.methods.csad.lgst import LGST, LGSTTeacher, fit_map_quantiles, lgst_scores
from ad_pipeline.methods.csad.patch_hist import PatchHistogramModel
from ad_pipeline.seed import seed_everything
from ad_pipeline.segmentation.augment import AugmentConfig, SupervisedAugment
from ad_pipeline.segmentation.models import FrozenEncoderSegmentor, probe_channels
from ad_pipeline.segmentation.pseudo_labels import PseudoLabels
from ad_pipeline.segmentation.train import SegTrainConfig, predict_labels, train_segmentation

SEGMENTOR_FILE = "segmentor_head.pth"
SEGMENTOR_META = "segmentor.json"


class CSADConfig(MethodConfig):
    """Defaults = the paper's settings (csad.md)."""

    image_size: int = 256
    encoder: str = "wide_resnet50_2"  # shared by segmentor (layer1, layer3) and LGST teacher (layer2, layer3)
    head_channels: int = 256
    head_low_channels: int = 48
    bn_momentum: float = 0.999  # repo value (PyTorch convention); 0.1 is PyTorch's default
    segmentor: SegTrainConfig = SegTrainConfig()
    augment: AugmentConfig = AugmentConfig()  # supervised segmentor batches: LSA + ShiftScaleRotate + brightness
    lgst_channels: int = 512
    lgst_width_divisor: int = 1  # > 1 only for tiny smoke-test students
    lgst_steps: int = 60_000
    lgst_batch_size: int = 2
    lgst_penalty_batch_size: int = 1  # penalty images per step (official: 1; set lgst_batch_size for the old rule)
    lgst_lr: float = 2e-4
    lgst_weight_decay: float = 1e-4
    projection_seed: int = 0  # seeds the frozen random 1×1 teacher projection
    penalty_images: str | None = None  # folder of generic images (Tiny-ImageNet); None = no penalty term
    # LGST image score: "upsampled" = max of the map resized to image_size (official CSAD.py, the
    # scores its benchmark fuses); "grid" = max of the 64×64 map (official ONNX export graph)
    lgst_score: Literal["upsampled", "grid"] = "upsampled"
    zscore_guard: float = 0.0  # std ≤ guard → 1 (0: benchmark path; 1e-3: export path)
    batch_size: int = 8
    branches: Literal["both", "patch_hist", "lgst"] = "both"  # which branch scores are summed (seed ablation)


def trimmed(val_scores: np.ndarray, guard: float) -> Normalizer:
    """CSAD's trimmed z-score (q20 < v < q80, population std ≤ guard → 1) of validation scores."""
    return fit_normalizer(val_scores, "trimmed_z", guard)


def _encoder(cfg: CSADConfig, ctx: RunContext):
    return build_backbone(cfg.encoder, pretrained=ctx.pretrained, weights_dir=ctx.weights_dir, seed=ctx.seed)


def _build_segmentor(encoder, num_classes: int, cfg: CSADConfig) -> FrozenEncoderSegmentor:
    return FrozenEncoderSegmentor(encoder, num_classes, channels=cfg.head_channels, low_out=cfg.head_low_channels,
                                  bn_momentum=cfg.bn_momentum)


def resize_labels(maps: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """uint8 label maps (any sizes) → int64 [N,size,size] (nearest)."""
    out = [F.interpolate(torch.from_numpy(np.array(m))[None, None].float(), size=(size, size), mode="nearest")[0, 0]
           for m in maps]
    return torch.stack(out).long()


def build_augment(labels: PseudoLabels, cfg: CSADConfig) -> SupervisedAugment | None:
    """The supervised-batch augmentation of ``cfg.augment`` (None when disabled); LSA's proposal
    images are resized (nearest) to the training resolution."""
    aug = cfg.augment
    if not aug.enabled:
        return None
    if aug.lsa_ratio == 0:
        return SupervisedAugment(aug, None)
    if labels.proposals is None:
        raise ArtifactError("the pseudo-labels hold no proposal images, which LSA copy-pastes",
                            fix="re-run the pseudo_labels stage (it now saves proposals/), or set "
                                "csad.augment.lsa_ratio: 0 (or csad.augment.enabled: false)")
    return SupervisedAugment(aug, resize_labels(labels.proposals, cfg.image_size).to(torch.uint8).numpy())


def fit_segmentor(train: Sequence[Path], labels: PseudoLabels, cfg: CSADConfig, ctx: RunContext,
                  encoder=None) -> tuple[FrozenEncoderSegmentor, list[dict[str, float]]]:
    """Train the segmentor head on ``labels`` (made for exactly ``train``) with ``cfg.augment`` on the
    supervised batches; returns (model, history)."""
    labels.check_paths(train)
    if labels.num_classes < 2:
        raise ArtifactError("the pseudo-labels have no part class (every label map is background): the mask "
                            "proposer found no component that survived clustering",
                            fix="check pseudo_labels/<category>/preview.png and meta.json; with random-init "
                                "Grounded-SAM weights (no files in weights_dir) no part is found — put the weight "
                                "files there or use the 'part_labels' / 'color' proposer")
    seed_everything(ctx.seed)
    augment = build_augment(labels, cfg)
    encoder = encoder or _encoder(cfg, ctx)
    model = _build_segmentor(encoder, labels.num_classes, cfg)
    images = load_batch(list(train), cfg.image_size)
    history = train_segmentation(model, images, resize_labels(labels.label_maps, cfg.image_size), labels.good_indices,
                                 cfg.segmentor, num_classes=labels.num_classes, seed=ctx.seed, augment=augment,
                                 device=ctx.device, progress=ctx.progress)
    return model, history


def save_segmentor(model: FrozenEncoderSegmentor, out_dir: Path, cfg: CSADConfig) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(model.head.state_dict(), out_dir / SEGMENTOR_FILE)
    num_classes = model.head.decoder[-1].out_channels
    write_json(out_dir / SEGMENTOR_META, {"num_classes": num_classes, "encoder": cfg.encoder,
                                          "weights": getattr(model.encoder, "weights", "unknown")})


def load_segmentor(seg_dir: Path, cfg: CSADConfig, encoder) -> FrozenEncoderSegmentor:
    """Rebuild the segmentor saved by :func:`save_segmentor` on ``encoder``."""
    seg_dir = Path(seg_dir)
    meta = read_json(seg_dir / SEGMENTOR_META)
    if meta.get("encoder") != cfg.encoder:
        raise ArtifactError(f"segmentor was trained on encoder {meta.get('encoder')!r}, CSAD is set to {cfg.encoder!r}",
                            path=seg_dir, fix="re-run the segmentor stage or set the same encoder")
    model = _build_segmentor(encoder, int(meta["num_classes"]), cfg)
    model.head.load_state_dict(torch.load(seg_dir / SEGMENTOR_FILE, map_location="cpu", weights_only=True))
    return model.eval()


class CSAD(AnomalyMethod):
    name = "csad"
    Config = CSADConfig
    requires = ("segmentor",)

    def __init__(self, cfg: CSADConfig, ctx: RunContext):
        super().__init__(cfg, ctx)
        self.encoder = _encoder(cfg, ctx)
        self.segmentor: FrozenEncoderSegmentor | None = None
        self.lgst: LGST | None = None
        self.hist: PatchHistogramModel | None = None
        self.stats: dict[str, Normalizer] = {}  # trimmed z-scores fitted on validation scores

    def _segment(self, paths: Sequence[Path]) -> torch.Tensor:
        return predict_labels(self.segmentor, load_batch(list(paths), self.cfg.image_size),
                              batch_size=self.cfg.batch_size, device=self.ctx.device).cpu()

    def _patch_hist_raw(self, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
        return self.hist.distances(self._segment(paths))

    def _patch_hist(self, paths: Sequence[Path]) -> np.ndarray:
        d_g, d_p = self._patch_hist_raw(paths)
        return self.stats["hist"](d_g) + self.stats["patch_hist"](d_p)

    def _build_lgst(self) -> LGST:
        cfg = self.cfg
        layers = ("layer2", "layer3")
        teacher = LGSTTeacher(self.encoder, sum(probe_channels(self.encoder, layers)), channels=cfg.lgst_channels,
                              out_size=cfg.image_size // 4, layers=layers, seed=cfg.projection_seed)
        return LGST(teacher, image_size=cfg.image_size, channels=cfg.lgst_channels,
                    width_divisor=cfg.lgst_width_divisor, upsample_score=cfg.lgst_score == "upsampled")

    def fit(self, train: Sequence[Path], validation: Sequence[Path]) -> None:
        cfg, ctx = self.cfg, self.ctx
        if not validation:
            raise ArtifactError("CSAD needs validation images to fit its normalisations",
                                fix="use a dataset with a validation split or a held-out fraction of train/good")
        seg_dir = ctx.upstream_dirs.get("segmentor")
        if seg_dir is None:
            raise ArtifactError("no segmentor model directory given", fix="run the segmentor stage before csad")
        gen = seed_everything(ctx.seed)
        self.segmentor = load_segmentor(seg_dir, cfg, self.encoder)
        self.hist = PatchHistogramModel.fit(self._segment(train), self.segmentor.head.decoder[-1].out_channels)
        d_g, d_p = self._patch_hist_raw(validation)
        g = cfg.zscore_guard
        self.stats["hist"], self.stats["patch_hist"] = trimmed(d_g, g), trimmed(d_p, g)
        self.stats["ph"] = trimmed(self.stats["hist"](d_g) + self.stats["patch_hist"](d_p), g)

        self.lgst = self._build_lgst()
        images = load_uint8(list(train), cfg.image_size)
        mean, std = teacher_statistics(self.lgst, images, cfg.batch_size, progress=ctx.progress)
        self.lgst.teacher_mean.copy_(mean)
        self.lgst.teacher_std.copy_(std)
        penalty = (PenaltyImages(list_images(cfg.penalty_images), cfg.image_size) if cfg.penalty_images else None)
        train_student_autoencoder(self.lgst, images, penalty, label="LGST", steps=cfg.lgst_steps, lr=cfg.lgst_lr,
                                  weight_decay=cfg.lgst_weight_decay, batch_size=cfg.lgst_batch_size,
                                  penalty_batch_size=cfg.lgst_penalty_batch_size, gen=gen, progress=ctx.progress)
        val_images = load_uint8(list(validation), cfg.image_size)
        fit_map_quantiles(self.lgst, val_images, batch_size=cfg.batch_size, seed=ctx.seed)
        self.stats["lgst"] = trimmed(lgst_scores(self.lgst, val_images, batch_size=cfg.batch_size)[0], g)

    def score(self, images: Sequence[Path]) -> Scores:
        ph = self._patch_hist(images)
        lg, maps = lgst_scores(self.lgst, load_uint8(list(images), self.cfg.image_size), batch_size=self.cfg.batch_size)
        z_ph, z_lg = self.stats["ph"](ph), self.stats["lgst"](lg)
        total = {"both": z_ph + z_lg, "patch_hist": z_ph, "lgst": z_lg}[self.cfg.branches]
        return Scores(total.astype(np.float32), maps,
                      extras={"patch_hist": z_ph.astype(np.float32), "lgst": z_lg.astype(np.float32)})

    def save(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        state = {k: v for k, v in self.lgst.state_dict().items() if not k.startswith("teacher.encoder.")}
        torch.save(state, model_dir / "lgst.pth")  # includes the seeded teacher projection
        np.savez(model_dir / "patchhist_params.npz", **self.hist.to_arrays())
        write_json(model_dir / "normalisation.json", {k: {"mean": s.mean, "std": s.std} for k, s in self.stats.items()})

    @classmethod
    def load(cls, model_dir: Path, cfg: CSADConfig, ctx: RunContext) -> CSAD:
        model_dir = Path(model_dir)
        m = cls(cfg, ctx)
        seg_dir = ctx.upstream_dirs.get("segmentor")
        if seg_dir is None:
            raise ArtifactError("no segmentor model directory given", fix="run the segmentor stage before csad")
        m.segmentor = load_segmentor(seg_dir, cfg, m.encoder)
        m.lgst = m._build_lgst()
        state = torch.load(model_dir / "lgst.pth", map_location="cpu", weights_only=True)
        missing, unexpected = m.lgst.load_state_dict(state, strict=False)  # the encoder comes from the registry
        if unexpected or any(not k.startswith("teacher.encoder.") for k in missing):
            raise ArtifactError("lgst.pth does not match the configured LGST", path=model_dir / "lgst.pth",
                                fix="re-run the csad stage with the current params")
        with np.load(model_dir / "patchhist_params.npz") as a:
            m.hist = PatchHistogramModel.from_arrays(dict(a))
        m.stats = {k: Normalizer("trimmed_z", **v) for k, v in read_json(model_dir / "normalisation.json").items()}
        return m

    def meta(self) -> dict[str, Any]:
        return {"encoder": self.cfg.encoder, "weights": getattr(self.encoder, "weights", "unknown"),
                "num_classes": None if self.hist is None else self.hist.num_classes}

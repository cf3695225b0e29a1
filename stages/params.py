"""The typed schema of params.yaml, checked whenever a stage loads it.

An unknown or misspelt key is an error naming the key and suggesting the closest valid one;
a wrong type names the key and the expected type. Method sections are each method's own
``Config`` plus ``datasets`` (where the method runs) and, for pluggable methods, a ``backbone``;
the keys a user writes there override the paper defaults and the dataset profiles
(``datasets.<name>.profile``) on every dataset (MuSc never follows the top-level ``backbone``,
only its own section's). The resolution is in ``stages/settings.py``.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from ad_pipeline.errors import ParamsError
from ad_pipeline.numerics import NumericsConfig
from ad_pipeline.methods.efficientad.config import TeacherConfig
from ad_pipeline.methods.registry import get_method, method_names
from ad_pipeline.methods.uniad.config import VisConfig
from ad_pipeline.segmentation.config import GroundedSamConfig, PseudoLabelConfig

FORMATS = ("mvtec_ad", "mvtec_loco", "visa", "btad", "folder", "cifar10")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetParams(Strict):
    """One dataset: where it lives and how it is laid out."""

    root: str
    format: Literal["mvtec_ad", "mvtec_loco", "visa", "btad", "folder", "cifar10"]
    categories: list[str] | Literal["all"] = "all"
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    raw_root: str | None = None  # VisA only: the raw archive tree converted into ``root``
    require_masks: bool = True  # false: defect images may lack masks (image-level metrics only)
    published: str | None = None  # key of the published-numbers table shown beside ours in the report
    # What this dataset changes from the papers: {<section>: {key: value, categories: {<cat>: {...}}}}
    # and allow_random_init (missing pretrained weights are an error unless true).
    profile: dict[str, Any] = {}

    @field_validator("profile")
    @classmethod
    def _profile_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        from stages.settings import section_names

        valid = [*section_names(), "allow_random_init"]
        for key, value in v.items():
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown profile key {key!r}{hint} (valid: {', '.join(valid)})")
            if key == "allow_random_init" and not isinstance(value, bool):
                raise ValueError(f"allow_random_init must be true or false, got {value!r}")
            if key != "allow_random_init" and not isinstance(value, dict):
                raise ValueError(f"profile.{key} must be a mapping of settings, got {value!r}")
        return v

    @property
    def allow_random_init(self) -> bool:
        return bool(self.profile.get("allow_random_init", False))


class SynthesizeParams(Strict):
    out: str = "data/synthetic"


class EvaluateParams(Strict):
    aupro_limit: float = Field(0.3, gt=0.0, le=1.0)
    spro_limits: list[float] = [0.01, 0.05, 0.1, 0.3, 1.0]


class FuseParams(Strict):
    """Score fusion of several methods (``fuse@<dataset>``)."""

    datasets: list[str] = []
    methods: list[str] = []
    normalization: Literal["trimmed_z", "z", "rank"] = "trimmed_z"
    weights: list[float] | None = None
    map_size: int = Field(256, gt=0)

    @model_validator(mode="after")
    def _weights_match(self) -> FuseParams:
        if self.weights is not None and len(self.weights) != len(self.methods):
            raise ValueError(f"fuse.weights has {len(self.weights)} entries for {len(self.methods)} methods")
        return self


class PseudoLabelParams(Strict):
    """CSAD's pseudo-labelling (``pseudo_labels@<dataset>``, runs where csad runs).

    ``category_overrides``: per category name, keys of ``labels`` to override (CSAD tunes the
    MeanShift bandwidth per category). ``grounded_sam``: text prompts and thresholds per
    category name ("default" for the rest).
    """

    labels: PseudoLabelConfig = PseudoLabelConfig()
    category_overrides: dict[str, dict[str, Any]] = {}
    grounded_sam: dict[str, GroundedSamConfig] = {}

    @model_validator(mode="after")
    def _overrides_are_valid(self) -> PseudoLabelParams:
        for cat, update in self.category_overrides.items():
            try:
                PseudoLabelConfig.model_validate(self.labels.model_dump() | update)
            except ValidationError as e:
                raise ValueError(f"pseudo_labels.category_overrides.{cat}: {e.errors()[0]['msg']} "
                                 f"({', '.join(map(str, e.errors()[0]['loc']))})") from None
        return self


class UniADVisParams(VisConfig):
    """UniAD's visualisation decoders (``uniad_vis@<dataset>``, optional: runs for ``datasets``)."""

    datasets: list[str] = []


class GateParams(Strict):
    """The CI gate's noise model (ad_pipeline/metrics/gate.py): tolerance = max(k * spread, quantum,
    resolution), spread over the baseline's seed and ``seeds`` (``ad-pipeline baseline-noise``)."""

    k: float = Field(2.0, gt=0.0)
    seeds: list[int] = [1, 2]


def _pretrained(v: Any) -> Any:
    # YAML reads `true`/`false` as booleans; the schema speaks strings.
    return {True: "true", False: "false"}.get(v, v) if isinstance(v, bool) else v


class BaseParams(Strict):
    seed: int = 0
    backbone: str | None = None  # pluggable methods' backbone for every dataset; None = each paper's
    pretrained: Literal["auto", "true", "false"] = "auto"
    weights_dir: str = "weights"
    device: str = "cpu"
    cache_dir: str | None = "artifacts/cache"
    threshold_quantile: float = Field(0.99, gt=0.0, le=1.0)  # predict's decision threshold on validation scores
    synthesize: SynthesizeParams = SynthesizeParams()
    datasets: dict[str, DatasetParams]
    evaluate: EvaluateParams = EvaluateParams()
    fuse: FuseParams = FuseParams()
    efficientad_teacher: TeacherConfig = TeacherConfig()
    pseudo_labels: PseudoLabelParams = PseudoLabelParams()
    uniad_vis: UniADVisParams = UniADVisParams()
    gate: GateParams = GateParams()
    numerics: NumericsConfig = NumericsConfig()
    summary_datasets: list[str] = []  # datasets whose metrics form the top-level metrics.json

    _coerce_pretrained = field_validator("pretrained", mode="before")(_pretrained)

    @model_validator(mode="after")
    def _datasets_known(self) -> BaseParams:
        for ref in self.summary_datasets:
            _require_dataset(ref, self.datasets, "summary_datasets")
        for name in method_names():
            for ref in getattr(self, name).datasets:
                _require_dataset(ref, self.datasets, f"{name}.datasets")
        for ref in self.fuse.datasets:
            _require_dataset(ref, self.datasets, "fuse.datasets")
        for ref in self.uniad_vis.datasets:
            _require_dataset(ref, self.datasets, "uniad_vis.datasets")
            if ref not in self.uniad.datasets:
                raise ValueError(f"uniad_vis.datasets names {ref!r}, where uniad does not run; add it to uniad.datasets")
        for name in self.fuse.methods:
            if name not in method_names():
                raise ValueError(f"fuse.methods names unknown method {name!r}; known: {', '.join(method_names())}")
        return self

    def check_settings(self) -> None:
        """Resolve every (method, dataset) and profile category once: a bad profile or override
        key fails at load time, naming the dataset and section."""
        from stages.settings import effective

        for name in method_names():
            for ds in getattr(self, name).datasets:
                cats = self.datasets[ds].profile.get(name, {}).get("categories", {})
                for cat in [None, *cats]:
                    effective(self, name, ds, cat)

    def method(self, name: str) -> BaseModel:
        return getattr(self, name)

    def settings(self, section: str, dataset: str, category: str | None = None):
        """Effective settings (paper default ⊕ dataset profile ⊕ user override), see stages/settings.py."""
        from stages.settings import effective

        return effective(self, section, dataset, category)

    def methods_for(self, dataset: str) -> list[str]:
        """Result names evaluated for a dataset: enabled methods, then ``fused`` if configured."""
        names = [m for m in method_names() if dataset in getattr(self, m).datasets]
        return names + (["fused"] if dataset in self.fuse.datasets else [])


def _require_dataset(ref: str, datasets: dict, where: str) -> None:
    if ref not in datasets:
        close = difflib.get_close_matches(ref, datasets, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{where} names unknown dataset {ref!r}.{hint} Known: {', '.join(datasets)}")


@lru_cache(maxsize=1)
def params_model() -> type[BaseParams]:
    """BaseParams plus one section per registered method (built once, methods imported lazily)."""
    sections: dict[str, Any] = {}
    for name in method_names():
        method = get_method(name)
        config = method.Config
        extra: dict[str, Any] = {"datasets": (list[str], [])}
        if method.pluggable_backbone and "backbone" not in config.model_fields:
            extra["backbone"] = (str | None, None)  # overrides the top-level backbone for this method
        section = create_model(f"{config.__qualname__}Section_{name}", __base__=config, **extra)
        sections[name] = (section, section())
    return create_model("Params", __base__=BaseParams, **sections)


def load_params(path: str | Path = "params.yaml") -> BaseParams:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError("params file not found", path=path, fix="run from the repository root") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"not valid YAML ({e})", path=path) from None
    model = params_model()
    try:
        p = model.model_validate(raw)
    except ValidationError as e:
        raise ParamsError(_explain(e, model), path=path, fix="correct the key(s) above in params.yaml") from None
    try:
        p.check_settings()
    except ParamsError as e:
        raise ParamsError(e.what, path=path, fix=e.fix) from None
    return p


def unwritten_profiles(path: str | Path, p: BaseParams) -> list[str]:
    """Datasets a method runs on whose ``profile`` key is not written in the params file: their
    DVC stages depend on ``datasets.<name>.profile``, which DVC reads from the file itself."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    used = {ds for name in method_names() for ds in getattr(p, name).datasets}
    return sorted(ds for ds in used if "profile" not in (raw.get("datasets", {}).get(ds) or {}))


def _explain(error: ValidationError, model: type[BaseModel]) -> str:
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, err["loc"][:-1])
            close = difflib.get_close_matches(str(err["loc"][-1]), valid, n=1)
            hint = f"; did you mean {'.'.join([*map(str, err['loc'][:-1]), close[0]])!r}?" if close else ""
            lines.append(f"unknown key {loc!r}{hint} (valid here: {', '.join(sorted(valid))})")
        elif err["type"] == "missing":
            lines.append(f"missing key {loc!r}")
        else:
            lines.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
    return "invalid params:\n  " + "\n  ".join(lines)


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``; dict keys (dataset names) are skipped."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            continue  # a dict key such as a dataset name
        current = field.annotation
        args = getattr(current, "__args__", None)
        if args and not (isinstance(current, type) and issubclass(current, BaseModel)):
            models = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
            current = models[0] if models else current
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []

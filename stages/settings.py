"""Effective settings of a section on a dataset (and category), with the source of every value.

Layers, lowest first; a later layer replaces the keys it names (nested dicts merge key by key):

1. ``paper default``: the section's ``Config`` defaults, a pluggable method's paper backbone,
   the papers' generic-image folder (``data/imagenet``) and the paper's per-category values
   for the dataset's format (``ad_pipeline.recipes``);
2. ``dataset profile``: ``datasets.<dataset>.profile.<section>`` and its
   ``categories.<category>`` (the synthetic suite's tiny budgets live here);
3. ``user override``: the top-level ``backbone`` (pluggable methods), the params.yaml section
   itself (``<method>:``, ``efficientad_teacher:``, ``pseudo_labels.labels``) and
   ``pseudo_labels.category_overrides.<category>``.

A value's source is the layer that last changed it: a layer that repeats the value below it
does not take it over, so "paper default" means the paper's value is in effect. A run follows
the paper recipe when every value is the paper's (see :func:`deviations`).

Sections: every registered method, ``efficientad_teacher`` and ``pseudo_labels``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ad_pipeline.errors import ParamsError
from ad_pipeline.methods.efficientad.config import TeacherConfig
from ad_pipeline.methods.registry import get_method, method_names
from ad_pipeline.recipes import category_defaults
from ad_pipeline.segmentation.config import PseudoLabelConfig

if TYPE_CHECKING:
    from stages.params import BaseParams

PAPER, PROFILE, USER = "paper default", "dataset profile", "user override"
EXTRA_SECTIONS = {"efficientad_teacher": TeacherConfig, "pseudo_labels": PseudoLabelConfig}
PIPELINE_KEYS = {"datasets"}  # keys of a method section that are no setting of the method
# The papers' generic images (ImageNet; CSAD: Tiny-ImageNet, a subset) where the pipeline expects them.
PAPER_DATA = {"efficientad": {"pretrain_images": "data/imagenet"}, "efficientad_m": {"pretrain_images": "data/imagenet"},
              "efficientad_teacher": {"pretrain_images": "data/imagenet"},
              "csad": {"penalty_images": "data/imagenet"}}


def section_names() -> list[str]:
    return [*method_names(), *EXTRA_SECTIONS]


@dataclass(frozen=True)
class Effective:
    """``config``: the section's validated Config (a method's own, without pipeline keys);
    ``values`` / ``sources``: flat ``{"a.b": value}`` / ``{"a.b": source}`` of every setting,
    incl. a pluggable method's ``backbone``."""

    section: str
    dataset: str
    category: str | None
    config: BaseModel
    values: dict[str, Any]
    sources: dict[str, str]

    @property
    def backbone(self) -> str | None:
        return self.values.get("backbone")

    def deviations(self) -> dict[str, str]:
        """Settings that are not the paper's: ``{key: source}``."""
        return {k: s for k, s in self.sources.items() if not s.startswith(PAPER)}


def config_class(section: str) -> type[BaseModel]:
    return EXTRA_SECTIONS[section] if section in EXTRA_SECTIONS else get_method(section).Config


def _paper(section: str) -> dict[str, Any]:
    values = config_class(section)().model_dump(mode="json") | PAPER_DATA.get(section, {})
    if section not in EXTRA_SECTIONS and get_method(section).pluggable_backbone:
        values["backbone"] = get_method(section).paper_backbone
    return values


def _user_layers(p: BaseParams, section: str, category: str | None) -> list[tuple[str, dict]]:
    if section == "pseudo_labels":
        layers = [(USER, p.pseudo_labels.labels.model_dump(mode="json", exclude_unset=True))]
        if category in p.pseudo_labels.category_overrides:
            layers.append((f"{USER} (category {category})", p.pseudo_labels.category_overrides[category]))
        return layers
    own = getattr(p, section).model_dump(mode="json", exclude_unset=True, exclude=PIPELINE_KEYS)
    layers = []
    method = None if section in EXTRA_SECTIONS else get_method(section)
    if method is not None and method.pluggable_backbone and method.follows_top_level_backbone and p.backbone:
        layers.append((f"{USER} (top-level backbone)", {"backbone": p.backbone}))
    return [*layers, (USER, own)]


def _profile_layers(p: BaseParams, section: str, dataset: str, category: str | None) -> list[tuple[str, dict]]:
    prof = dict(p.datasets[dataset].profile.get(section, {}))
    per_cat = prof.pop("categories", {})
    layers = [(PROFILE, prof)]
    if category in per_cat:
        layers.append((f"{PROFILE} (category {category})", per_cat[category]))
    return layers


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def effective(p: BaseParams, section: str, dataset: str, category: str | None = None) -> Effective:
    """The resolved settings of ``section`` for ``dataset`` (and ``category``); see the module doc."""
    fmt = p.datasets[dataset].format
    layers = [(PAPER, _paper(section))]
    per_cat = category_defaults(fmt, section, category)
    if per_cat:
        layers.append((f"{PAPER} (category {category})", per_cat))
    layers += _profile_layers(p, section, dataset, category) + _user_layers(p, section, category)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, layer in layers:
        before = _flatten(merged)
        merged = _merge(merged, layer)
        for key, value in _flatten(merged).items():
            if key not in before or before[key] != value:
                sources[key] = source
    where = f"{section} on {dataset}" + (f"/{category}" if category else "")
    cls = config_class(section)
    own = {k: v for k, v in merged.items() if k in cls.model_fields}
    unknown = sorted(set(merged) - set(cls.model_fields) - {"backbone"})
    if unknown:
        raise ParamsError(f"unknown setting(s) {', '.join(unknown)} for {where}",
                          fix=f"valid keys: {', '.join(sorted(cls.model_fields))}")
    try:
        config = cls.model_validate(own)
    except ValidationError as e:
        err = e.errors()[0]
        raise ParamsError(f"{where}: {'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})",
                          fix="correct the dataset profile or the section in params.yaml") from None
    values = _flatten(config.model_dump(mode="json"))
    if "backbone" in merged:
        values["backbone"] = merged["backbone"]
    return Effective(section, dataset, category, config, values, {k: sources.get(k, PAPER) for k in values})


def settings_table(p: BaseParams, section: str, dataset: str, category: str | None = None) -> str:
    """A text table of :func:`effective`: setting, source, value; then whether it is the recipe."""
    if dataset not in p.datasets:
        raise ParamsError(f"no dataset {dataset!r} in params.yaml", fix=f"known: {', '.join(p.datasets)}")
    if section not in section_names():
        raise ParamsError(f"no section {section!r}", fix=f"known: {', '.join(section_names())}")
    eff = effective(p, section, dataset, category)
    rows = [(k, eff.sources[k], json.dumps(v)) for k, v in sorted(eff.values.items())]
    if section == "pseudo_labels":  # Grounded-SAM's prompt table is read as it stands
        g = p.pseudo_labels.grounded_sam.get(category or "", p.pseudo_labels.grounded_sam.get("default"))
        rows += [(f"grounded_sam.{k}", "pseudo_labels.grounded_sam", json.dumps(v))
                 for k, v in sorted((g.model_dump(mode="json") if g else {}).items())]
    head = ("setting", "source", "value")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(3)]
    lines = [f"{section} on {dataset}" + (f"/{category}" if category else "") + ":"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]
    dev = eff.deviations()
    lines.append("paper recipe: yes" if not dev else f"NOT the paper recipe: {len(dev)} setting(s) changed "
                 f"({', '.join(sorted(dev))})")
    return "\n".join(lines)

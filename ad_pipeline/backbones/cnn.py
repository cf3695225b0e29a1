"""CNN backbones (timm; lukemelas efficientnet_pytorch): features of named modules via forward hooks, stopping after the last one."""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch

from ad_pipeline.backbones.base import Backbone, BackboneSpec
from ad_pipeline.backbones.weights import LUKEMELAS, WeightsSource, load_in_order, read_state_dict
from ad_pipeline.errors import UserError
from ad_pipeline.seed import seeded


class _AllLayersCaptured(Exception):
    """Raised by the last hook to abort the forward pass early."""


class CnnBackbone(Backbone):
    """``bb(x [B,3,H,W], ["layer2", "layer3"]) -> {"layer2": [B,C2,h2,w2], ...}``.

    Any module name of ``bb.model`` is a valid layer; the forward stops as soon as every requested
    module has produced its output (e.g. layer4 and the classifier never run for layer2/layer3).
    """

    def forward(self, x: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        self._check_input(x)
        modules = self._modules_for(layers)
        captured: dict[str, torch.Tensor] = {}

        def hook_for(name: str):
            def hook(_module, _inputs, output):
                captured[name] = output
                if len(captured) == len(modules):
                    raise _AllLayersCaptured

            return hook

        handles = [m.register_forward_hook(hook_for(n)) for n, m in modules.items()]
        try:
            self.model(x)
        except _AllLayersCaptured:
            pass
        finally:
            for h in handles:
                h.remove()
        missing = [n for n in modules if n not in captured]
        if missing:
            raise UserError(f"backbone {self.spec.name!r}: layers {missing} never ran in the forward pass",
                            fix="choose modules on the main path, e.g. " + ", ".join(self.spec.default_layers))
        return {n: captured[n] for n in layers}

    def _modules_for(self, layers: Sequence[str]) -> dict[str, torch.nn.Module]:
        if not layers:
            raise UserError(f"backbone {self.spec.name!r}: no layers requested",
                            fix=f"request e.g. {list(self.spec.default_layers)}")
        named = dict(self.model.named_modules())
        unknown = [layer for layer in layers if layer not in named]
        if unknown:
            top = [n for n in named if n and n.count(".") <= 1]
            raise UserError(f"backbone {self.spec.name!r} has no module(s) {unknown}",
                            fix=f"use module names of the model, e.g. {', '.join(top[:24])}")
        return {layer: named[layer] for layer in dict.fromkeys(layers)}


def _architecture(spec: BackboneSpec) -> str:
    return spec.source.split(".")[0]


def _lukemelas(spec: BackboneSpec, weights: WeightsSource | None) -> torch.nn.Module:
    """lukemelas EfficientNet (``efficientnet_pytorch``): TF 'same' padding fixed for the native size."""
    from efficientnet_pytorch import EfficientNet

    model = EfficientNet.from_name(spec.source.removeprefix(LUKEMELAS))
    if weights is not None:
        try:
            model.load_state_dict(read_state_dict(weights.path), strict=True)
        except RuntimeError as e:
            reason = " ".join(str(e).split())
            raise UserError(f"weights do not fit backbone {spec.name!r} ({reason})", path=weights.path,
                            fix=f"use lukemelas' {spec.source.removeprefix(LUKEMELAS)} ImageNet file "
                                "(efficientnet-b4-6ed6700e.pth for B4)") from None
    return model


def build_cnn(spec: BackboneSpec, weights: WeightsSource | None, *, seed: int, trainable: bool) -> CnnBackbone:
    """A timm CNN: random init from ``seed`` when ``weights`` is None, else loaded from the file."""
    with seeded(seed):
        if spec.source.startswith(LUKEMELAS):
            model = _lukemelas(spec, weights)
        elif weights is None:
            model = timm.create_model(_architecture(spec), pretrained=False)
        elif spec.name == "efficientnet_lite0":
            # the packaged file uses other key names but the same tensor order and shapes as timm
            model = timm.create_model(_architecture(spec), pretrained=False)
            load_in_order(model, read_state_dict(weights.path), weights.path)
        else:
            try:
                model = timm.create_model(spec.source, pretrained=True,
                                          pretrained_cfg_overlay={"file": str(weights.path)})
            except (RuntimeError, KeyError, ValueError) as e:
                raise UserError(f"weights do not fit backbone {spec.name!r} ({e})", path=weights.path,
                                fix="use the torchvision / timm state dict listed in "
                                    "ad_pipeline/backbones/weights.py") from None
    return CnnBackbone(spec, model, "random-init" if weights is None else "pretrained", trainable=trainable)

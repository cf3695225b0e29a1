"""Backbone registry, offline weight resolution, hooks/early exit, ViT token semantics, feature cache."""

from __future__ import annotations

import os
import warnings
import zipfile

import pytest
import torch
import torch.nn.functional as F

from ad_pipeline.backbones import backbone_names, build_backbone, extract_features, get_spec, require_family
from ad_pipeline.backbones.weights import (PACKAGED_LITE0, cache_candidates, load_in_order, official_file_name,
                                           read_state_dict, resolve_weights)
from ad_pipeline.errors import UserError
from tests.helpers import write_random_images

ALL_NAMES = {"wide_resnet50_2", "wide_resnet101_2", "resnet18", "resnet101", "efficientnet_b4", "efficientnet_lite0",
             "efficientnet_b4_lukemelas",
             "ViT-B-16", "ViT-B-16-plus-240", "ViT-L-14", "ViT-L-14-336", "dino_vitbase8", "dino_vitbase16",
             "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14"}


@pytest.fixture(autouse=True)
def empty_library_caches(tmp_path, monkeypatch):
    """Point the HF and torch hub caches at empty folders so a developer's real cache cannot leak in."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def _state_equal(a: torch.nn.Module, b: dict) -> bool:
    return all(torch.equal(t, b[k]) for k, t in a.state_dict().items())


def test_registry_names_and_families():
    assert set(backbone_names()) == ALL_NAMES
    assert backbone_names(["dinov2"]) == ["dinov2_vitb14", "dinov2_vitl14", "dinov2_vits14"]
    assert get_spec("ViT-L-14-336").default_layers == (5, 11, 17, 23)
    assert get_spec("efficientnet_lite0").default_layers == ("blocks.2", "blocks.4")


def test_unknown_backbone_suggests_close_name():
    with pytest.raises(UserError, match=r"unknown backbone 'resnet19'.*Did you mean 'resnet18'"):
        get_spec("resnet19")


def test_require_family_lists_valid_names():
    assert require_family("resnet18", ["cnn"], "patchcore").name == "resnet18"
    with pytest.raises(UserError) as e:
        require_family("ViT-B-16", ["cnn"], "patchcore")
    assert "'patchcore' cannot use backbone 'ViT-B-16'" in str(e.value)
    assert "wide_resnet50_2" in str(e.value) and "dinov2_vits14" not in str(e.value)


def test_pretrained_true_without_file_names_file_and_folder(tmp_path):
    with pytest.raises(UserError) as e:
        build_backbone("resnet18", pretrained="true", weights_dir=tmp_path / "weights")
    msg = str(e.value)
    assert "resnet18.pth" in msg and "resnet18-f37072fd.pth" in msg and str(tmp_path / "weights") in msg


def test_bad_pretrained_mode():
    with pytest.raises(UserError, match="pretrained must be one of"):
        build_backbone("resnet18", pretrained="yes")


def test_auto_warns_loudly_false_is_silent_and_both_are_seeded():
    with pytest.warns(UserWarning, match="RANDOM INIT"):
        auto = build_backbone("resnet18", pretrained="auto", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silent = build_backbone("resnet18", pretrained="false", seed=3)
    other = build_backbone("resnet18", pretrained="false", seed=4)
    assert auto.weights == silent.weights == "random-init"
    assert _state_equal(auto.model, silent.model.state_dict())
    assert not _state_equal(auto.model, other.model.state_dict())


def test_random_init_leaves_global_rng_untouched():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_backbone("resnet18", pretrained="false", seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_resolution_order_weights_dir_then_cache_then_random(tmp_path):
    donor_dir = build_backbone("resnet18", pretrained="false", seed=11).model.state_dict()
    donor_cache = build_backbone("resnet18", pretrained="false", seed=12).model.state_dict()
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(donor_dir, weights_dir / "resnet18.pth")
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(donor_cache, hub / "resnet18-f37072fd.pth")

    from_dir = build_backbone("resnet18", pretrained="true", weights_dir=weights_dir)
    assert from_dir.weights == "pretrained" and _state_equal(from_dir.model, donor_dir)
    from_cache = build_backbone("resnet18", pretrained="true", weights_dir=tmp_path / "empty")
    assert from_cache.weights == "pretrained" and _state_equal(from_cache.model, donor_cache)
    assert resolve_weights(get_spec("resnet18"), "false", weights_dir) is None  # "false" never looks


def test_wrong_weights_file_is_a_user_error(tmp_path):
    torch.save({"not": torch.zeros(2)}, tmp_path / "resnet18.pth")
    with pytest.raises(UserError, match="resnet18.pth"):
        build_backbone("resnet18", pretrained="true", weights_dir=tmp_path)
    (tmp_path / "resnet101.pth").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"resnet101.pth: weights do not fit backbone 'resnet101'"):
        build_backbone("resnet101", pretrained="true", weights_dir=tmp_path)
    (tmp_path / "efficientnet_lite0.pth").write_bytes(b"garbage")
    with pytest.raises(UserError, match=r"efficientnet_lite0.pth: cannot read weights file"):
        build_backbone("efficientnet_lite0", pretrained="true", weights_dir=tmp_path)


def test_lukemelas_b4_loads_the_official_file_name_strictly(tmp_path):
    # UniAD's backbone: lukemelas' efficientnet-b4-6ed6700e.pth, in weights_dir or the torch hub cache.
    spec = get_spec("efficientnet_b4_lukemelas")
    assert official_file_name(spec) == "efficientnet-b4-6ed6700e.pth"
    donor = build_backbone("efficientnet_b4_lukemelas", pretrained="false", seed=3).model.state_dict()
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(donor, hub / "efficientnet-b4-6ed6700e.pth")
    bb = build_backbone("efficientnet_b4_lukemelas", pretrained="true", weights_dir=tmp_path / "empty")
    assert bb.weights == "pretrained" and _state_equal(bb.model, donor)
    torch.save({k: v for k, v in donor.items() if not k.startswith("_fc")}, tmp_path / "efficientnet_b4_lukemelas.pth")
    with pytest.raises(UserError, match="(?s)efficientnet_b4_lukemelas.pth: weights do not fit.*_fc.weight.*efficientnet-b4-6ed6700e"):
        build_backbone("efficientnet_b4_lukemelas", pretrained="true", weights_dir=tmp_path)


def test_efficientnet_lite0_packaged_weights_map_296_tensors():
    spec = get_spec("efficientnet_lite0")
    [packaged] = cache_candidates(spec)
    assert packaged.name == PACKAGED_LITE0
    bb = build_backbone("efficientnet_lite0", pretrained="true")
    assert bb.weights == "pretrained"
    state = read_state_dict(packaged)
    assert list(state)[0] == "_conv_stem.weight"  # other names than timm: mapped by position
    fresh = build_backbone("efficientnet_lite0", pretrained="false").model
    assert load_in_order(fresh, state, packaged) == 296
    assert torch.equal(fresh.conv_stem.weight, state["_conv_stem.weight"])
    assert torch.equal(fresh.classifier.bias, state["_fc.bias"])


def test_efficientnet_lite0_mapping_fails_loudly_on_mismatch():
    [packaged] = cache_candidates(get_spec("efficientnet_lite0"))
    state = read_state_dict(packaged)
    model = build_backbone("efficientnet_lite0", pretrained="false").model
    broken = dict(state)
    key5 = list(broken)[5]
    broken[key5] = torch.zeros(7, 7)
    with pytest.raises(UserError, match=rf"tensor #5 '{key5}' has shape \(7, 7\)"):
        load_in_order(model, broken, packaged)
    short = dict(list(state.items())[:-1])
    with pytest.raises(UserError, match="has 295 tensors, the model expects 296"):
        load_in_order(model, short, packaged)


def test_cnn_hooks_return_layers_and_stop_early():
    bb = build_backbone("resnet18", pretrained="false")
    ran = []
    bb.model.layer4.register_forward_hook(lambda *a: ran.append("layer4"))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = bb(x, ["layer3", "layer2"])
        m = bb.model
        manual2 = m.layer2(m.layer1(m.maxpool(m.act1(m.bn1(m.conv1(x))))))
    assert list(out) == ["layer3", "layer2"]
    assert out["layer2"].shape == (2, 128, 8, 8) and out["layer3"].shape == (2, 256, 4, 4)
    assert torch.equal(out["layer2"], manual2)
    assert ran == []
    assert not bb.training and not any(p.requires_grad for p in bb.parameters())
    bb.train()
    assert not bb.model.training  # frozen backbones stay in eval mode


def test_cnn_unknown_layer():
    bb = build_backbone("resnet18", pretrained="false")
    with pytest.raises(UserError, match=r"no module\(s\) \['layer9'\]"):
        bb(torch.randn(1, 3, 32, 32), ["layer9"])


def test_dinov2_tokens_are_final_normed_patch_tokens():
    bb = build_backbone("dinov2_vits14", pretrained="false")
    x = torch.randn(2, 3, 56, 70)  # not the native 518: pos-emb resized to a 4x5 grid
    with torch.inference_mode():
        out = bb(x, [11, 2])
        full = bb.model.forward_features(x)
        emb = bb.embed(x)
    assert bb.grid_size((56, 70)) == (4, 5)
    assert list(out) == [11, 2] and out[2].shape == (2, 20, 384)
    torch.testing.assert_close(out[11], full[:, bb.model.num_prefix_tokens:])
    torch.testing.assert_close(emb, full[:, 0])
    with pytest.raises(UserError, match="blocks 0..11"):
        bb(x, [12])


@pytest.mark.slow  # builds the 86M-parameter CLIP visual tower from scratch
def test_clip_tokens_are_raw_residual_stream_and_embed_matches_open_clip():
    bb = build_backbone("ViT-B-16", pretrained="false")
    x = torch.randn(1, 3, 224, 224)
    v = bb.model
    with torch.inference_mode():
        out = bb(x, [11])
        reference = F.normalize(v(x), dim=-1)  # open_clip's own forward at the native size
        h = v.ln_pre(torch.cat([v.class_embedding.expand(1, 1, -1), v.conv1(x).flatten(2).transpose(1, 2)], 1)
                     + v.positional_embedding)
        raw = v.transformer(h)
        small = bb(torch.randn(2, 3, 64, 48), [0, 3])
    torch.testing.assert_close(bb.embed(x), reference)
    torch.testing.assert_close(out[11], raw[:, 1:])  # no ln_post on tokens
    assert small[3].shape == (2, 12, 768) and bb.grid_size(64) == (4, 4)


def test_extract_features_batches_crops_and_caches(tmp_path, monkeypatch):
    paths = write_random_images(tmp_path, 5, size=40)
    bb = build_backbone("resnet18", pretrained="false")
    cache = tmp_path / "cache"
    feats = extract_features(bb, paths, size=80, crop=64, layers=["layer2"], batch_size=2, cache_dir=cache,
                             progress=False)
    assert feats["layer2"].shape == (5, 128, 8, 8)
    one = extract_features(bb, paths[3:4], size=80, crop=64, layers=["layer2"], progress=False)
    torch.testing.assert_close(feats["layer2"][3:4], one["layer2"])
    assert len(list(cache.glob("resnet18_80_*.safetensors"))) == 1

    monkeypatch.setattr(type(bb), "forward", lambda *a: pytest.fail("cache hit expected"))
    again = extract_features(bb, paths, size=80, crop=64, layers=["layer2"], cache_dir=cache, progress=False)
    assert torch.equal(again["layer2"], feats["layer2"])
    monkeypatch.undo()
    os.utime(paths[0], ns=(1, 1))  # a changed file gives a new cache entry
    extract_features(bb, paths, size=80, crop=64, layers=["layer2"], cache_dir=cache, progress=False)
    assert len(list(cache.glob("*.safetensors"))) == 2


def test_clip_activation_follows_the_weights(tmp_path):
    from ad_pipeline.backbones.vit import clip_activation
    from ad_pipeline.backbones.weights import WeightsSource

    spec = get_spec("ViT-B-16")
    assert clip_activation(spec, None) == ("quick_gelu", "tag openai")  # random init: the tag's rule
    assert clip_activation(get_spec("ViT-B-16-plus-240"), None) == ("gelu", "tag laion400m_e31")
    state = tmp_path / "laion" / "ViT-B-16.pt"
    state.parent.mkdir()
    torch.save({"visual.proj": torch.zeros(2, 2)}, state)
    assert clip_activation(spec, WeightsSource(state, "weights_dir")) == ("gelu", "open_clip state dict")
    assert clip_activation(spec, WeightsSource(state, "cache")) == ("quick_gelu", "tag openai")
    (state.parent / "open_clip_config.json").write_text('{"model_cfg": {"quick_gelu": true}}')
    assert clip_activation(spec, WeightsSource(state, "weights_dir"))[0] == "quick_gelu"
    archive = tmp_path / "ViT-B-16.pt"  # OpenAI's files are TorchScript zips (constants.pkl inside)
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ViT-B-16/constants.pkl", b"")
    assert clip_activation(spec, WeightsSource(archive, "weights_dir")) == ("quick_gelu", "OpenAI TorchScript archive")
    assert clip_activation(spec, WeightsSource(archive, "weights_dir"), "gelu") == ("gelu", "requested")
    with pytest.raises(UserError, match="quick_gelu"):
        clip_activation(spec, None, "relu")


@pytest.mark.slow  # writes and reads a 350 MB visual tower
def test_clip_file_loads_visual_tower_only_with_the_files_activation(tmp_path):
    random = build_backbone("ViT-B-16", pretrained="false", seed=3)
    assert random.activation == "quick_gelu"
    state = {f"module.visual.{k}": v for k, v in random.model.state_dict().items()}
    torch.save(state | {"module.token_embedding.weight": torch.zeros(3, 2)}, tmp_path / "ViT-B-16.pt")
    bb = build_backbone("ViT-B-16", pretrained="true", weights_dir=tmp_path)
    assert bb.weights == "pretrained" and bb.activation == "gelu" and bb.activation_reason == "open_clip state dict"
    assert _state_equal(bb.model, random.model.state_dict())
    assert build_backbone("ViT-B-16", pretrained="true", weights_dir=tmp_path,
                          clip_activation="quick_gelu").activation == "quick_gelu"
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "ViT-B-16.pt")
    with pytest.raises(UserError, match="do not fit"):
        build_backbone("ViT-B-16", pretrained="true", weights_dir=tmp_path)

"""Grounded-SAM: pure mask post-processing on hand-made masks, weight modes, offline seeded
random init, and tiny random-init runs (vit_tiny SAM-HQ, 224 px GroundingDINO)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ad_pipeline.data.synthetic.layout import save_image
from ad_pipeline.data.synthetic.loco import CATEGORIES, render_image
from ad_pipeline.errors import UserError
from ad_pipeline.segmentation.clustering import ComponentDescriptor
from ad_pipeline.segmentation.config import AutoMaskConfig, GroundedSamConfig, PseudoLabelConfig
from ad_pipeline.segmentation.grounded_sam import GroundedSamProposer, is_background_phrase, resolve_files
from ad_pipeline.segmentation.mask_refinement import (
    background_points,
    drop_background,
    grounding_components,
    grounding_label_image,
    keep_grounded,
    refine_automatic_masks,
)
from ad_pipeline.segmentation.pseudo_labels import generate_pseudo_labels

HF_CACHE = Path("~/.cache/huggingface").expanduser()


def box(y0, y1, x0, x1, shape=(40, 40)):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


# --- pure post-processing -------------------------------------------------------------------

def test_background_points_for_image_size():
    expected = [[10, 10], [10, 90], [190, 10], [190, 90], [0, 0], [0, 100], [200, 0], [200, 100]]
    assert background_points(100, 200).tolist() == expected  # (x, y), height 100, width 200


def test_keep_grounded_needs_overlap_ratio_above_0_9():
    grounding = box(0, 20, 0, 10)  # 200 px
    inside_95 = box(1, 21, 0, 10)  # 190 of 200 px inside → r = 0.95
    inside_90 = box(2, 22, 0, 10)  # r = 0.90, not > 0.9
    small_inside = box(5, 10, 0, 10)  # r = 1 (ratio against the smaller mask)
    outside = box(30, 40, 30, 40)
    kept = keep_grounded([inside_95, inside_90, small_inside, outside], grounding)
    assert [k.sum() for k in kept] == [200, 50]
    assert keep_grounded([inside_95], np.zeros((40, 40), bool)) == []  # no grounding mask → nothing kept


def test_drop_background_at_0_95_against_every_background():
    background = box(0, 20, 0, 10)
    r95, r90 = box(1, 21, 0, 10), box(2, 22, 0, 10)
    kept = drop_background([r95, r90], background)
    assert len(kept) == 1 and kept[0] is r90  # r = 0.95 is dropped, 0.9 kept
    assert drop_background([r90], background, box(2, 22, 0, 10)) == []  # the second background covers it


def test_refine_automatic_masks_hand_case():
    raw = [box(0, 10, 0, 10) | box(20, 30, 20, 30),  # corner blob + object, split into two
           box(22, 30, 22, 30),  # part of the object
           box(35, 40, 35, 37),  # 10 px ≤ 50 → dropped
           np.ones((40, 40), bool),  # bbox = whole image → dropped
           box(0, 20, 30, 40)]  # 200 px outside the grounding mask
    grounding = box(18, 32, 18, 32).astype(np.uint8) * 7  # any non-zero value counts
    corner_background = box(0, 12, 0, 12)
    no_background = np.zeros((40, 40), bool)
    out = refine_automatic_masks(raw, grounding=grounding, background=corner_background,
                                 grounding_background=no_background, use_grounding_filter=True)
    expected = np.zeros((40, 40), np.uint8)
    expected[20:30, 20:30] = 1
    expected[22:30, 22:30] = 2  # smaller on top
    assert out.dtype == np.uint8 and np.array_equal(out, expected)

    out = refine_automatic_masks(raw, grounding=grounding, background=corner_background,
                                 grounding_background=no_background, use_grounding_filter=False)
    expected[20:30, 20:30] = 2
    expected[22:30, 22:30] = 3
    expected[0:20, 30:40] = 1  # the 200-px mask is now kept and is the largest
    assert np.array_equal(out, expected)

    out = refine_automatic_masks(raw, grounding=grounding, background=corner_background,
                                 grounding_background=box(0, 20, 30, 40), use_grounding_filter=False)
    assert out[0:20, 30:40].max() == 0 and out.max() == 2  # removed by the grounding background


def test_grounding_components_split_values_and_drop_small():
    grounding = np.zeros((40, 40), np.uint8)
    grounding[0:10, 0:10] = 1
    grounding[20:30, 20:30] = 1  # same value, second component
    grounding[0:10, 12:20] = 2  # 80 px
    grounding[35:40, 0:5] = 3  # 25 px ≤ 50 → dropped
    out = grounding_components(grounding, min_area=50)
    assert {int(out[0, 0]), int(out[25, 25])} == {1, 2} and (out[0:10, 12:20] == 3).all()
    assert np.bincount(out.ravel()).tolist() == [1600 - 280, 100, 100, 80]


def test_grounding_label_image_combines_duplicates():
    a, b = box(0, 10, 0, 10), box(20, 35, 20, 35)
    out = grounding_label_image([a, a.copy(), b], (40, 40), combine=True)
    assert out.max() == 2 and (out[20:35, 20:35] == 1).all() and (out[0:10, 0:10] == 2).all()
    assert grounding_label_image([], (40, 40), combine=True).max() == 0


def test_is_background_phrase():
    assert is_background_phrase("zip - lock bag", "zip-lock bag")
    assert is_background_phrase("container", "container")
    assert not is_background_phrase("metal screws", "zip-lock bag")
    assert not is_background_phrase("bag", "zip-lock bag")  # the whole entry must appear
    assert not is_background_phrase("container", "")


# --- weights ----------------------------------------------------------------------------------

def test_pretrained_modes_resolve_files(tmp_path):
    with pytest.raises(UserError, match="groundingdino_swint_ogc.pth.*bert-base-uncased.*sam_hq_vit_tiny.pth"):
        resolve_files(tmp_path, "vit_tiny", "true")
    assert resolve_files(tmp_path, "vit_tiny", "false") is None
    with pytest.warns(UserWarning, match="RANDOM-INIT"):
        assert resolve_files(tmp_path, "vit_tiny", "auto") is None
    (tmp_path / "groundingdino_swint_ogc.pth").touch()
    (tmp_path / "bert-base-uncased").mkdir()
    (tmp_path / "sam_hq_vit_tiny.pth").touch()
    assert resolve_files(tmp_path, "vit_tiny", "auto")["sam_hq"] == tmp_path / "sam_hq_vit_tiny.pth"
    assert resolve_files(tmp_path, "vit_tiny", "false") is None
    with pytest.raises(UserError, match="pretrained must be one of"):
        resolve_files(tmp_path, "vit_tiny", "yes")


def test_proposer_true_without_files_names_them(tmp_path):
    with pytest.raises(UserError, match="Grounded-SAM weights not found: .*groundingdino_swint_ogc.pth"):
        GroundedSamProposer(GroundedSamConfig(sam_variant="vit_tiny"), weights_dir=tmp_path, pretrained="true")


def test_local_tokenizer_knows_prompt_words_and_special_tokens():
    from ad_pipeline.segmentation.grounding_dino import SPECIAL_TOKENS, local_tokenizer

    tok = local_tokenizer("Metal bolts. zip-lock bag")
    ids = tok("metal bolts. zip-lock bag. pineapple.")["input_ids"]
    unk = tok.convert_tokens_to_ids("[UNK]")
    assert tok.convert_ids_to_tokens(ids) == ["[CLS]", "metal", "bolts", ".", "zip", "-", "lock", "bag", ".",
                                              "[UNK]", ".", "[SEP]"]
    assert unk not in tok.convert_tokens_to_ids(["[CLS]", "[SEP]", ".", "?"])
    assert tok.convert_ids_to_tokens(list(range(len(SPECIAL_TOKENS)))) == list(SPECIAL_TOKENS)


# --- random-init models (tiny) ---------------------------------------------------------------

TINY = dict(sam_variant="vit_tiny", dino_image_size=224, max_boxes=3,
            auto_mask=AutoMaskConfig(points_per_side=2, crop_n_layers=0))


def no_network(*_args, **_kwargs):
    raise AssertionError("network access attempted")


def hf_cache_files() -> set[Path]:
    return set(HF_CACHE.rglob("*")) if HF_CACHE.exists() else set()


def synthetic_images(folder: Path, n: int) -> list[Path]:
    """``n`` tray images of the synthetic LOCO generator (256×192) under ``folder``."""
    paths = []
    for i in range(n):
        image, _, _ = render_image(CATEGORIES[0], np.random.default_rng(i), "good", i, None)
        paths.append(folder / f"{i:03d}.png")
        save_image(paths[-1], image)
    return paths


@pytest.fixture(scope="module")
def offline(tmp_path_factory):
    """No socket may connect; the Hugging Face libraries are told they are offline and get an
    empty home; yields that home."""
    hf_home = tmp_path_factory.mktemp("hf_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        mp.setenv("HF_HOME", str(hf_home))
        yield hf_home


@pytest.fixture(scope="module")
def random_proposer(offline, tmp_path_factory):
    """Seed-0 random-init no_sam proposer built from an empty weights_dir with pretrained 'auto'."""
    before = hf_cache_files()
    empty = tmp_path_factory.mktemp("weights")
    with pytest.warns(UserWarning, match="RANDOM-INIT"):
        proposer = GroundedSamProposer(GroundedSamConfig(**TINY), weights_dir=empty, pretrained="auto", seed=0)
    assert list(empty.iterdir()) == [] and list(offline.iterdir()) == [] and hf_cache_files() == before
    return proposer


def test_random_init_is_offline_and_seeded(random_proposer, tmp_path):
    from ad_pipeline.seed import seeded
    from ad_pipeline.segmentation.grounding_dino import build_grounding_dino, detect

    assert random_proposer.weights == "random-init"
    twin = GroundedSamProposer(GroundedSamConfig(**TINY), weights_dir=tmp_path, pretrained="false", seed=0)
    for a, b in ((random_proposer.dino, twin.dino), (random_proposer.sam.model, twin.sam.model)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    rgb = np.asarray(np.random.default_rng(0).integers(0, 256, (224, 288, 3)), dtype=np.uint8)
    kwargs = dict(box_threshold=0.25, text_threshold=0.2, short_side=224, max_boxes=5)
    boxes, phrases = detect(random_proposer.dino, rgb, "almond. apple.", **kwargs)
    twin_boxes, twin_phrases = detect(twin.dino, rgb, "almond. apple.", **kwargs)
    assert boxes.shape == (5, 4) and np.isfinite(boxes).all()
    assert np.array_equal(boxes, twin_boxes) and phrases == twin_phrases
    with seeded(1):
        other = build_grounding_dino(checkpoint=None, bert_dir=None, vocabulary="almond apple")
    assert not torch.equal(other.feat_map.weight, random_proposer.dino.feat_map.weight)


def test_random_init_no_sam_proposal_has_image_shape(random_proposer, tmp_path):
    (path,) = synthetic_images(tmp_path, 1)
    out = random_proposer.propose(path)
    assert out.shape == (192, 256) and out.dtype == np.uint8


@pytest.mark.slow
def test_random_init_automatic_path_proposals_have_image_shape(offline, tmp_path):
    permissive = AutoMaskConfig(points_per_side=2, crop_n_layers=0, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                min_mask_region_area=0)  # random SAM masks pass the generator's quality filters
    cfg = GroundedSamConfig(**{**TINY, "auto_mask": permissive}, no_sam=False, use_grounding_filter=False)
    proposer = GroundedSamProposer(cfg, weights_dir=tmp_path / "none", pretrained="false", seed=0)
    for path in synthetic_images(tmp_path, 2):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        assert len(proposer.generator.generate(rgb)) > 0  # the post-processing sees real generator output
        out = proposer.propose(path)
        assert out.shape == (192, 256) and out.dtype == np.uint8


@pytest.mark.slow
def test_random_init_pseudo_labels_end_to_end(offline, tmp_path):
    paths = synthetic_images(tmp_path, 2)
    proposer = GroundedSamProposer(GroundedSamConfig(**TINY), weights_dir=tmp_path / "none", pretrained="false")
    labels_cfg = PseudoLabelConfig(proposer="grounded_sam", n_rotations=2, proj_dim=3, bandwidth=1e3)
    descriptor = ComponentDescriptor(nn.Identity(), 3, proj_dim=3, n_rotations=2, seed=0)
    labels = generate_pseudo_labels(paths, proposer, descriptor, labels_cfg, progress=False)
    assert [m.shape for m in labels.label_maps] == [(192, 256)] * 2
    assert all(m.dtype == np.uint8 for m in labels.label_maps) and np.isfinite(labels.histograms).all()
    # random weights: SAM's masks are pixel noise, no component survives -> all background, K = 0
    assert labels.num_classes == 1 and all(not m.any() for m in labels.label_maps)


def test_real_weights_path_loads_local_files(offline, tmp_path):
    """The pretrained path end to end on stand-in files of the documented layout: a (small) BERT
    folder with its tokenizer, a GroundingDINO checkpoint {"model": state} and a SAM-HQ state dict."""
    from ad_pipeline.seed import seeded
    from ad_pipeline.segmentation.grounding_dino import GroundingDinoBert, build_grounding_dino, local_tokenizer
    from segment_anything_hq import sam_model_registry
    from transformers import BertConfig

    cfg = GroundedSamConfig(**TINY)
    bert_dir = tmp_path / "bert-base-uncased"
    with seeded(3):
        small = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
        GroundingDinoBert(small).save_pretrained(bert_dir)
        local_tokenizer(cfg.prompt).save_pretrained(bert_dir)
        torch.save({"model": {}}, tmp_path / "empty.pth")
        source = build_grounding_dino(checkpoint=tmp_path / "empty.pth", bert_dir=bert_dir, vocabulary="")
        sam = sam_model_registry["vit_tiny"](checkpoint=None)
    torch.save({"model": source.state_dict()}, tmp_path / "groundingdino_swint_ogc.pth")
    torch.save(sam.state_dict(), tmp_path / "sam_hq_vit_tiny.pth")
    proposer = GroundedSamProposer(cfg, weights_dir=tmp_path, pretrained="true", seed=0)
    assert proposer.weights == "pretrained" and proposer.dino.bert.config.hidden_size == 32
    for a, b in ((source, proposer.dino), (sam, proposer.sam.model)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

"""UniAD reconstruction model: neighbour mask, shapes, locality, jitter, maps and scores."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from ad_pipeline.methods.uniad.config import Config
from ad_pipeline.methods.uniad.model import (
    UniADReconstructor, anomaly_map, apply_jitter, draw_jitter_noise, image_scores, neighbour_mask,
)

# 4x4 grid, 3x3 window: row q = 4*i + j lists the visible keys: all but the window around q
# (borders clipped, self hidden), as in the reference.
EXPECTED_MASK_4x4_N3 = """
0011001111111111
0001000111111111
1000100011111111
1100110011111111
0011001100111111
0001000100011111
1000100010001111
1100110011001111
1111001100110011
1111000100010001
1111100010001000
1111110011001100
1111111100110011
1111111100010001
1111111110001000
1111111111001100
"""


def tiny_model(**kw) -> UniADReconstructor:
    torch.manual_seed(0)
    args = dict(hidden=16, heads=2, ffn=32, enc_layers=1, dec_layers=1, neighbor_size=3, dropout=0.0)
    return UniADReconstructor(8, (4, 4), **(args | kw))


def test_neighbour_mask_exact_on_4x4_grid():
    expected = torch.tensor([[c == "1" for c in row] for row in EXPECTED_MASK_4x4_N3.split()])
    assert torch.equal(neighbour_mask(4, 4, 3), expected)


def test_neighbour_mask_7x7_window_is_clipped_and_square_grid_agnostic():
    m = neighbour_mask(14, 14, 7).view(14, 14, 14, 14)
    assert m[0, 0].sum() == 196 - 16 and m[7, 7].sum() == 196 - 49 and m[0, 7].sum() == 196 - 4 * 7
    assert not m[5, 9, 5, 9] and m[5, 9, 5, 13] and not m[5, 9, 8, 12]
    assert neighbour_mask(2, 5, 3).shape == (10, 10)
    assert neighbour_mask(5, 5, 1).equal(~torch.eye(25, dtype=torch.bool))


def test_neighbour_mask_rejects_a_window_that_hides_the_whole_grid():
    with pytest.raises(ValueError, match="neighbor_size 7 hides the whole 4x4"):
        neighbour_mask(4, 4, 7)


def test_forward_shapes_and_additive_mask():
    model = tiny_model().eval()
    out = model(torch.randn(3, 8, 4, 4))
    assert out.shape == (3, 8, 4, 4) and torch.isfinite(out).all()
    assert model.attn_mask.shape == (16, 16)
    assert set(model.attn_mask.unique().tolist()) == {0.0, -math.inf}
    with pytest.raises(ValueError, match="grid"):
        model(torch.randn(1, 8, 5, 4))


def test_attention_is_blind_to_the_window_around_the_query():
    # The encoder's attention output at (0,0) ignores keys/values inside its 3x3 window, uses the rest.
    model = tiny_model().eval()
    attn, mask = model.encoder[0].attn, model.attn_mask
    x = torch.randn(1, 16, 16)
    near, far = x.clone(), x.clone()
    near[:, 1 * 4 + 1] += 10.0  # (1,1): inside the window of (0,0)
    far[:, 3 * 4 + 3] += 10.0  # (3,3): outside
    def out(t):
        return attn(t, t, t, attn_mask=mask, need_weights=False)[0][:, 0]
    assert torch.equal(out(near), out(x))
    assert not torch.allclose(out(far), out(x))


def test_position_embedding_layout_and_init():
    model = tiny_model()
    pe = model.pos_embed
    pos = pe()
    assert pos.shape == (16, 16)
    i, j = 2, 3
    assert torch.equal(pos[i * 4 + j], torch.cat([pe.cols[j], pe.rows[i]]))
    assert 0.0 <= float(pe.rows.detach().min()) and float(pe.rows.detach().max()) < 1.0


def test_init_xavier_linear_zero_bias_and_cloned_queries():
    model = tiny_model(enc_layers=2, dec_layers=2)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(float(m.bias.detach().abs().max()) == 0.0 for m in linears)
    bound = math.sqrt(6.0 / (8 + 16))
    assert float(model.input_proj.weight.detach().abs().max()) <= bound
    # layers are clones of one prototype (reference behaviour): queries equal, Linear weights re-drawn
    assert torch.equal(model.decoder[0].queries, model.decoder[1].queries)
    assert not torch.equal(model.decoder[0].ffn.linear1.weight, model.decoder[1].ffn.linear1.weight)


def test_jitter_noise_std_matches_alpha_norm_over_channels():
    torch.manual_seed(1)
    model = UniADReconstructor(272, (4, 4), hidden=16, heads=2, ffn=16, enc_layers=1, dec_layers=1,
                               neighbor_size=3, dropout=0.0, jitter_scale=20.0).train()
    seen = {}
    model.input_proj.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0]))
    f = torch.randn(16, 272, 4, 4) * torch.rand(16, 1, 4, 4) * 3  # token norms vary
    model(f)
    delta = seen["x"] - f.flatten(2).transpose(1, 2)  # [B, L, C]
    expected_std = 20.0 * f.norm(dim=1).flatten(1)[..., None] / 272  # [B, L, 1]
    ratio = delta / expected_std
    assert abs(float(ratio.std()) - 1.0) < 0.02 and abs(float(ratio.mean())) < 0.02


def test_jitter_is_off_at_eval_and_follows_given_noise_in_training():
    model = tiny_model()
    f = torch.randn(2, 8, 4, 4)
    noise = torch.randn(2, 8, 4, 4)
    model.eval()
    clean = model(f)
    assert torch.equal(model(f, noise=noise), clean)
    model.train()  # dropout 0: training differs from eval only by the jitter
    assert torch.allclose(model(f, noise=torch.zeros_like(f)), clean, atol=1e-6)
    assert not torch.allclose(model(f, noise=noise), clean, atol=1e-3)
    assert torch.equal(apply_jitter(f, noise, 0.0), f)


def test_jitter_probability_is_per_sample():
    g = torch.Generator().manual_seed(0)
    assert torch.count_nonzero(draw_jitter_noise((50, 3), 0.0, g)) == 0
    kept = draw_jitter_noise((2000, 3), 0.5, g).abs().sum(dim=1) > 0
    assert 0.45 < float(kept.float().mean()) < 0.55


def test_anomaly_map_hand_computed():
    feats = torch.zeros(1, 2, 2, 2)
    rec = torch.zeros(1, 2, 2, 2)
    rec[0, 0] = torch.tensor([[0.0, 0.6], [1.2, 1.8]])
    rec[0, 1] = torch.tensor([[0.0, 0.8], [1.6, 2.4]])  # per-position L2 error [[0, 1], [2, 3]]
    m = anomaly_map(feats, rec, (4, 4))[0]
    assert m.shape == (4, 4)
    assert torch.allclose(m[[0, 0, 3, 3], [0, 3, 0, 3]], torch.tensor([0.0, 1.0, 2.0, 3.0]))
    assert math.isclose(float(m[0, 1]), 1 / 3, rel_tol=1e-5)


def test_image_score_is_max_of_16x16_box_average():
    maps = torch.zeros(2, 32, 32)
    maps[0, 5, 7] = 256.0  # one hot pixel: box mean 1
    maps[1, :16, 16:] = 2.0  # one full 16x16 block of 2
    assert torch.allclose(image_scores(maps), torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize("bad", [dict(image_size=200), dict(hidden=30, heads=4), dict(neighbor_size=6),
                                 dict(select="test"), dict(unknown_key=1), dict(distributed={"nproc": 2}),
                                 dict(backbone="resnet18")])  # no default blocks: feature_blocks needed
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValidationError):
        Config(**bad)


def test_config_defaults_are_the_paper_setting():
    cfg = Config()
    assert (cfg.image_size, cfg.hidden, cfg.heads, cfg.ffn, cfg.enc_layers, cfg.dec_layers) == (224, 256, 8, 1024, 4, 4)
    assert (cfg.neighbor_size, cfg.jitter_scale, cfg.jitter_prob, cfg.epochs, cfg.lr_step) == (7, 20.0, 1.0, 1000, 800)
    assert (cfg.batch_size, cfg.lr, cfg.weight_decay, cfg.grad_clip, cfg.select) == (8, 1e-4, 1e-4, 0.1, "last")
    assert cfg.distributed.nproc_per_node == 1
    # the reference's own backbone and block indices [1, 5, 9, 21]; timm's B4 gets its equivalents
    assert (cfg.backbone, cfg.blocks) == ("efficientnet_b4_lukemelas", ["_blocks.1", "_blocks.5", "_blocks.9", "_blocks.21"])
    assert Config(backbone="efficientnet_b4").blocks == ["blocks.0.1", "blocks.1.3", "blocks.2.3", "blocks.4.5"]
    assert Config(backbone="resnet18", feature_blocks=["layer2"]).blocks == ["layer2"]

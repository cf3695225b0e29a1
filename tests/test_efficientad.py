"""EfficientAD building blocks: architectures, losses, map normalisation, data transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ad_pipeline.components.student_teacher.autoencoder import Autoencoder
from ad_pipeline.components.student_teacher.data import PenaltyImages, autoencoder_augment, load_unit, normalize
from ad_pipeline.components.student_teacher.maps import (MapQuantiles, combine_maps, map_quantiles, normalise_map,
                                                          raw_maps, to_working_resolution)
from ad_pipeline.components.student_teacher.model import EfficientADModel
from ad_pipeline.components.student_teacher.pdn import PDN
from ad_pipeline.components.student_teacher.train import channel_mean_std, hard_feature_loss
from ad_pipeline.data.images import IMAGENET_MEAN, IMAGENET_STD
from ad_pipeline.errors import UserError
from ad_pipeline.methods.efficientad.distill import PatchDescriptorTarget
from tests.helpers import write_random_images


META = torch.device("meta")  # shape inference without computing full-size convolutions


@pytest.mark.parametrize("size", ["small", "medium"])
@pytest.mark.parametrize(("out", "padding", "side"), [(384, False, 56), (768, False, 56), (384, True, 64), (768, True, 64)])
def test_pdn_output_shapes(size, out, padding, side):
    pdn = PDN(size, out, padding=padding).to(META)
    y = pdn(torch.empty(2, 3, 256, 256, device=META))
    assert tuple(y.shape) == (2, out, side, side)


@pytest.mark.parametrize("size", ["small", "medium"])
def test_pdn_padding_keeps_parameter_shapes_and_reference_keys(size):
    a, b = PDN(size, padding=True), PDN(size, padding=False)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    convs = [k for k in a.state_dict() if k.endswith("weight")]
    assert convs == (["0.weight", "3.weight", "6.weight", "8.weight"] if size == "small"
                     else ["0.weight", "3.weight", "6.weight", "8.weight", "10.weight", "12.weight"])
    widths = [a.state_dict()[k].shape[0] for k in convs]
    assert widths == ([128, 256, 256, 384] if size == "small" else [256, 512, 512, 512, 384, 384])


@pytest.mark.parametrize(("image", "padding", "side"), [(256, False, 56), (256, True, 64), (512, False, 120), (64, False, 8)])
def test_autoencoder_output_shape(image, padding, side):
    ae = Autoencoder(image, 384, padding=padding).to(META)
    assert tuple(ae(torch.empty(1, 3, image, image, device=META)).shape) == (1, 384, side, side)


def test_autoencoder_bottleneck_is_1x1_at_256_and_decoder_sizes_follow_formula():
    ae = Autoencoder(256).to(META)
    assert tuple(ae.encoder(torch.empty(1, 3, 256, 256, device=META)).shape) == (1, 64, 1, 1)
    assert [b.size for b in ae.up] == [3, 8, 15, 32, 63, 127]


@pytest.mark.parametrize("bad", [48, 100, 250])
def test_autoencoder_rejects_bad_image_size(bad):
    with pytest.raises(UserError, match="multiple of 32"):
        Autoencoder(bad)


def test_hard_feature_loss_selects_top_tenth_of_a_percent():
    d = torch.arange(10_000, dtype=torch.float32).flip(0).view(1, 10, 10, 100)
    # 0.999-quantile (linear) of 0..9999 is 9989.001 → elements 9990..9999 → mean 9994.5
    assert hard_feature_loss(d).item() == pytest.approx(9994.5, abs=1e-3)


def test_hard_feature_loss_has_gradient_only_on_hard_elements():
    d = torch.arange(2000, dtype=torch.float32).requires_grad_(True)
    hard_feature_loss(d).backward()
    assert torch.count_nonzero(d.grad).item() == 2 and d.grad[-1].item() == pytest.approx(0.5)


def test_map_normalisation_formula_and_combination():
    m = torch.tensor([1.0, 2.0, 3.0, 5.0])
    assert torch.allclose(normalise_map(m, 1.0, 3.0), torch.tensor([0.0, 0.05, 0.1, 0.2]))
    assert torch.allclose(combine_maps(torch.tensor([0.2]), torch.tensor([0.4])), torch.tensor([0.3]))


def test_map_quantiles_exact_and_degenerate_guard():
    q_a, q_b, degenerate = map_quantiles(np.arange(1001.0).reshape(7, 11, 13)[..., :].ravel()[:1001], cap=10**6, seed=0)
    assert (q_a, q_b, degenerate) == (pytest.approx(900.0), pytest.approx(995.0), False)
    assert map_quantiles(np.full((3, 5, 5), 2.5), cap=10**6, seed=0) == (0.0, 0.1, True)
    # (0, 0.1) is the identity normalisation
    assert torch.equal(normalise_map(torch.tensor([0.7]), 0.0, 0.1), torch.tensor([0.7]) * 0.1 / 0.1)


def test_raw_maps_split_student_channels():
    t_hat = torch.zeros(1, 2, 1, 1)
    student = torch.tensor([1.0, 3.0, 2.0, 2.0]).view(1, 4, 1, 1)
    ae = torch.tensor([0.0, 4.0]).view(1, 2, 1, 1)
    m_st, m_ae = raw_maps(t_hat, student, ae)
    assert m_st.item() == pytest.approx((1 + 9) / 2) and m_ae.item() == pytest.approx((4 + 4) / 2)


def test_working_resolution_pads_four_pixels_then_resizes():
    out = to_working_resolution(torch.full((1, 1, 56, 56), 2.0), 256)
    assert out.shape == (1, 1, 256, 256)
    assert out[0, 0, 0, 0].item() == 0.0 and out[0, 0, 128, 128].item() == pytest.approx(2.0)
    assert out[0, 0, :, :14].max().item() < 2.0 and out[0, 0, 20:236, 20:236].min().item() == pytest.approx(2.0)


def test_model_forward_is_the_composition_of_the_parts():
    torch.manual_seed(0)
    model = EfficientADModel("small", 64, channels=8, width_divisor=16).eval()
    model.quantiles.copy_(MapQuantiles(0.5, 1.5, 0.1, 0.3).as_tensor())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        m, s = model(x)
        m_st, m_ae = model.raw_maps(x)
    want = to_working_resolution(0.5 * 0.1 * (m_st - 0.5) / 1.0 + 0.5 * 0.1 * (m_ae - 0.1) / 0.2, 64)
    assert torch.allclose(m, want, atol=1e-6) and torch.equal(s, m.amax(dim=(1, 2, 3)))


def test_imagenet_normalisation_is_applied_exactly_once(tmp_path):
    path = tmp_path / "c.png"
    Image.fromarray(np.full((10, 12, 3), (255, 0, 128), np.uint8)).save(path)
    x = normalize(load_unit([path], 64))
    want = [(v / 255 - m) / s for v, m, s in zip((255, 0, 128), IMAGENET_MEAN, IMAGENET_STD)]
    assert torch.allclose(x[0, :, 5, 7], torch.tensor(want), atol=1e-6)


def test_channel_mean_std_two_pass_definition():
    a = torch.tensor([1.0, 10.0]).view(1, 2, 1, 1).expand(1, 2, 3, 3)
    b = torch.tensor([3.0, 10.0]).view(1, 2, 1, 1).expand(1, 2, 3, 3)
    mean, std = channel_mean_std([a, b])
    assert torch.allclose(mean.flatten(), torch.tensor([2.0, 10.0]))
    assert torch.allclose(std.flatten(), torch.tensor([1.0, 0.0]))


def test_patch_descriptor_target_pools_patches_channel_major():
    def features(x, layers):
        first = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1).expand(1, 2, 8, 8)
        second = torch.full((1, 4, 4, 4), 5.0)
        return {"a": first, "b": second}

    target = PatchDescriptorTarget(features, ("a", "b"), layer_dim=2, out_dim=2)
    y = target(torch.zeros(3, 3, 32, 32))
    assert y.shape == (3, 2, 8, 8)
    # interior: layer a → 9 ones then 9 threes → pooled [1, 3]; layer b → [5, 5]; concat [1,3,5,5] → [2, 5]
    assert torch.allclose(y[:, :, 4, 4], torch.tensor([2.0, 5.0]).expand(3, 2))


def test_augmentations_are_seeded_and_bounded():
    grey = torch.full((4, 3, 8, 8), 0.5)
    a = autoencoder_augment(grey, torch.Generator().manual_seed(3))
    b = autoencoder_augment(grey, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.min() >= 0.4 - 1e-6 and a.max() <= 0.6 + 1e-6


def test_penalty_images_grey_is_pils_8bit_conversion(tmp_path):
    """Resize to 2·size, grey with probability p as PIL's "L" image (the reference loaders'), centre crop."""
    path = write_random_images(tmp_path, 1, 12, seed=4)[0]
    resized = Image.open(path).convert("RGB").resize((16, 16), Image.BILINEAR)
    for p, want in ((0.0, np.asarray(resized)), (1.0, np.asarray(resized.convert("L"))[..., None].repeat(3, 2))):
        x = PenaltyImages([path], 8, grayscale_p=p).sample(2, torch.Generator().manual_seed(0))
        assert x.shape == (2, 3, 8, 8)
        assert np.array_equal(x.mul(255).round().numpy().transpose(0, 2, 3, 1), np.stack([want[4:12, 4:12]] * 2))

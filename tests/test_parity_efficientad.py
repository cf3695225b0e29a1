"""EfficientAD-S and PUAD inference against the official LeapMind/PUAD outputs
(fixtures: tests/fixtures/parity/efficientad/, written by make_fixtures.py there; docs/parity.md).

Same seeded networks (64-channel teacher, 256² input) and PNGs: raw maps, teacher statistics,
validation quantiles and scores under ``map_rule="puad"``, PUAD's Mahalanobis distances,
calibration and final scores; and the size of the switch (our default ``map_rule="nelson"``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from ad_pipeline.components.student_teacher import train as ea_train
from ad_pipeline.components.student_teacher.data import (PenaltyImages, autoencoder_augment, load_uint8, load_unit,
                                                         normalize, shuffled_batches)
from ad_pipeline.components.student_teacher.maps import MAP_BORDERS, raw_maps, to_working_resolution
from ad_pipeline.components.student_teacher.train import teacher_statistics
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.efficientad.method import PENALTY_GRAYSCALE_P, EfficientAD, EfficientADConfig
from ad_pipeline.methods.puad import PUAD, PUADConfig
from tests.parity_efficientad_common import (AUGMENT, CHANNELS, IMAGE_SIZE, PENALTY, PERMUTATION, SEED, TRAIN_SEED,
                                             TRAIN_STEPS, ScriptedTorch, model, subsample, write_dataset,
                                             write_penalty_images)

FIXTURES = Path(__file__).parent / "fixtures" / "parity" / "efficientad"


def rel(ours, theirs) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.fixture(scope="module")
def official():
    return dict(np.load(FIXTURES / "official.npz"))


@pytest.fixture(scope="module")
def official_train():
    return dict(np.load(FIXTURES / "official_train.npz"))


@pytest.fixture(scope="module")
def official_medium():
    return dict(np.load(FIXTURES / "official_medium.npz"))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The fixture's PNGs (write_dataset, write_penalty_images) and the normalised test images."""
    tmp = tmp_path_factory.mktemp("parity_efficientad")
    paths = write_dataset(tmp / "data")
    test = paths["test/good"] + paths["test/bad"]
    return {"tmp": tmp, "paths": paths, "test": test, "penalty": write_penalty_images(tmp / "data"),
            "x": normalize(load_unit(test, IMAGE_SIZE))}


@pytest.fixture(scope="module")
def run(official, data):
    """Our EfficientAD (official teacher statistics, our quantiles) per map rule, saved for PUAD."""
    tmp, paths = data["tmp"], data["paths"]
    ctx = RunContext(seed=SEED, progress=False)
    out = dict(data)
    for rule in ("puad", "nelson"):
        cfg = EfficientADConfig(channels=CHANNELS, image_size=IMAGE_SIZE, map_rule=rule)
        method = EfficientAD(cfg, ctx)
        net = model(MAP_BORDERS[rule])
        net.teacher_mean.copy_(torch.from_numpy(official["mu"]).view(1, -1, 1, 1))
        net.teacher_std.copy_(torch.from_numpy(official["sigma"]).view(1, -1, 1, 1))
        quantiles, _ = method._validation_quantiles(net, paths["validation/good"])
        net.quantiles.copy_(quantiles.as_tensor())
        method.model, method.info = net, {"model_size": "small", "image_size": IMAGE_SIZE, "channels": CHANNELS,
                                          "width_divisor": 1, "map_rule": rule}
        method.save(tmp / rule)
        out[rule] = method
        out.setdefault("dirs", {})[rule] = tmp / rule
    return out


def test_raw_maps_and_teacher_statistics_match_official(official, run):
    net = run["puad"].model
    with torch.no_grad():
        m_st, m_ae = net.raw_maps(run["x"])
        assert rel(m_st[:, 0], official["raw_st"]) < 1e-4 and rel(m_ae[:, 0], official["raw_ae"]) < 1e-4
        assert rel(to_working_resolution(m_st, IMAGE_SIZE, 0)[:, 0, ::8, ::8], official["resized_st"]) < 1e-4
        assert rel(to_working_resolution(m_ae, IMAGE_SIZE, 0)[:, 0, ::8, ::8], official["resized_ae"]) < 1e-4
        mean, std = teacher_statistics(net, load_uint8(run["paths"]["train/good"], IMAGE_SIZE))
    assert rel(mean.flatten(), official["mu"]) < 1e-4
    n = 3 * 56 * 56  # the official std is unbiased over (N, H, W): ours is the population std
    assert rel(std.flatten() * (n / (n - 1)) ** 0.5, official["sigma"]) < 1e-4


def test_puad_rule_quantiles_and_scores_match_official(official, run):
    method = run["puad"]
    assert rel(method.model.quantiles, official["quantiles"]) < 1e-4
    scores = method.score(run["test"]).scores
    assert rel(scores, official["efficientad_scores"]) < 1e-4


def test_nelson_rule_is_the_documented_deviation(official, run):
    nelson = run["nelson"].score(run["test"]).scores
    assert rel(nelson, official["efficientad_scores"]) > 1e-3  # the 4-px border and raw-map quantiles


def test_puad_matches_official(official, run):
    ctx = RunContext(seed=SEED, progress=False, upstream_dirs={"efficientad": run["dirs"]["puad"]})
    puad = PUAD(PUADConfig(), ctx)
    puad.fit(run["paths"]["train/good"], run["paths"]["validation/good"])
    c = puad.calib
    assert rel([c["mu_E"], c["sd_E"], c["mu_M"], c["sd_M"]], official["puad_calibration"]) < 1e-4
    scores = puad.score(run["test"])
    assert rel(scores.extras["efficientad_score"], official["efficientad_scores"]) < 1e-4
    assert rel(scores.extras["mahalanobis"], official["mahalanobis"]) < 1e-4
    assert rel(scores.scores, official["puad_scores"]) < 1e-4


def test_medium_inference_matches_official(official_medium, data):
    """EfficientAD-M (PDN_M teacher/student) with the official statistics and quantiles: raw maps and scores."""
    net = model(map_border=0, size="medium")
    net.teacher_mean.copy_(torch.from_numpy(official_medium["mu"]).view(1, -1, 1, 1))
    net.teacher_std.copy_(torch.from_numpy(official_medium["sigma"]).view(1, -1, 1, 1))
    net.quantiles.copy_(torch.from_numpy(official_medium["quantiles"]))
    with torch.no_grad():
        outputs = net.outputs(data["x"])
        m_st, m_ae = raw_maps(*outputs)
        _, scores = net.map_and_score(*outputs)
    assert rel(m_st[:, 0], official_medium["raw_st"]) < 1e-4 and rel(m_ae[:, 0], official_medium["raw_ae"]) < 1e-4
    assert rel(scores, official_medium["efficientad_scores"]) < 1e-4


@pytest.fixture(scope="module")
def trained(official, data):
    """Our ``train_student_autoencoder`` for TRAIN_STEPS from the same init and teacher statistics, with the
    official run's scripted draws (batch order, augmentation, penalty image and grey draw) substituted for
    its generator draws; per step: the networks' inputs and outputs, L_hard, and the weights after the step."""
    net = model(map_border=0)
    net.teacher_mean.copy_(torch.from_numpy(official["mu"]).view(1, -1, 1, 1))
    net.teacher_std.copy_(torch.from_numpy(official["sigma"]).view(1, -1, 1, 1))
    init = {(p, k): v.clone() for p in ("student", "autoencoder") for k, v in getattr(net, p).state_dict().items()}
    draws = ScriptedTorch({("shuffled_batches", "randperm"): [torch.tensor(PERMUTATION)],
                           ("autoencoder_augment", "randint"): [torch.tensor([w]) for w, _ in AUGMENT],
                           ("autoencoder_augment", "rand"): [torch.tensor([u]) for _, u in AUGMENT],
                           ("sample", "randint"): [torch.tensor([i]) for i, _ in PENALTY],
                           ("sample", "rand"): [torch.tensor([0.0 if g else 1.0]) for _, g in PENALTY]})
    calls: dict[str, list] = {"teacher": [], "student": [], "autoencoder": []}
    hooks = [getattr(net, name).register_forward_hook(lambda m, i, o, name=name: calls[name].append((i[0], o.detach())))
             for name in calls]
    hard, weights, hard_feature_loss = [], [], ea_train.hard_feature_loss

    def spy(d, *args, **kwargs):
        hard.append(hard_feature_loss(d, *args, **kwargs))
        return hard[-1]

    def snapshot(opt, args, kwargs):
        weights.append({(p, k): v.clone() for p in ("student", "autoencoder")
                        for k, v in getattr(net, p).state_dict().items()})

    after_step = register_optimizer_step_post_hook(snapshot)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for fn in (shuffled_batches, autoencoder_augment, PenaltyImages):
                mp.setattr(sys.modules[fn.__module__], "torch", draws)
            mp.setattr(ea_train, "hard_feature_loss", spy)
            torch.manual_seed(TRAIN_SEED)
            losses = ea_train.train_student_autoencoder(
                net, load_uint8(data["paths"]["train/good"], IMAGE_SIZE),
                PenaltyImages(data["penalty"], IMAGE_SIZE, PENALTY_GRAYSCALE_P),
                label="parity", steps=TRAIN_STEPS, gen=torch.Generator().manual_seed(SEED), progress=False)
    finally:
        after_step.remove()
        for h in hooks:
            h.remove()
    assert draws.unused() == {}, "a scripted draw was not made: the loop's draws changed"
    return {"losses": losses, "hard": [float(h.detach()) for h in hard], "calls": calls, "init": init, "weights": weights,
            "net": net}


def _step_terms(out, k):
    """Step k's inputs (x, x_aug, penalty) and loss terms from the recorded network calls."""
    net, calls = out["net"], out["calls"]
    x_aug, ae = calls["autoencoder"][k]
    (t_x, _), (t_aug, t_aug_out) = sorted(calls["teacher"][2 * k:2 * k + 2], key=lambda c: torch.equal(c[0], x_aug))
    student = {("x" if torch.equal(i, t_x) else "aug" if torch.equal(i, x_aug) else "p"): (i, o)
               for i, o in calls["student"][3 * k:3 * k + 3]}
    c = CHANNELS
    t_hat_aug = (t_aug_out - net.teacher_mean) / net.teacher_std
    return {"img_train": t_x, "img_aug": x_aug, "imagenet_img": student["p"][0],
            "penalty": float(student["p"][1][:, :c].pow(2).mean()),
            "loss_ae": float((t_hat_aug - ae).pow(2).mean()),
            "loss_student_ae": float((ae - student["aug"][1][:, c:]).pow(2).mean())}


def test_training_steps_match_official(official_train, trained):
    """Losses of each step, its inputs, and the weights after each step at the same learning rate."""
    for k in range(TRAIN_STEPS):
        ours = _step_terms(trained, k)
        for name in ("img_train", "img_aug", "imagenet_img"):
            assert rel(ours[name][:, :, ::8, ::8], official_train[name][k:k + 1]) < 1e-4, (k, name)
        assert rel(trained["hard"][k], official_train["loss_hard"][k]) < 1e-4
        # the official penalty term is only inside loss_student = loss_hard + penalty (float32, ulp ≈ 1e-6)
        assert rel(trained["hard"][k] + ours["penalty"], official_train["loss_student"][k]) < 1e-6
        assert rel(ours["loss_ae"], official_train["loss_ae"][k]) < 1e-4
        assert rel(ours["loss_student_ae"], official_train["loss_student_ae"][k]) < 1e-4
        assert rel(trained["losses"][k], official_train["loss_total"][k]) < 1e-4
    # Ours drops the lr ×0.1 after ⌊0.95·steps⌋ steps (StepLR, as nelson1425), the official after
    # step 66 500 of 70 000: with 3 steps ours runs the last at lr/10; Adam's step is linear in lr.
    last_lr = [1.0] * (TRAIN_STEPS - 1) + [0.1]
    for key, update in ((k, v) for k, v in official_train.items() if k.startswith("update.")):
        _, prefix, name = key.split(".", 2)
        init = trained["init"][prefix, name]
        ours = np.stack([subsample(w[prefix, name] - init).numpy() for w in trained["weights"]])
        steps_ours, steps_theirs = np.diff(ours, axis=0, prepend=0), np.diff(update, axis=0, prepend=0)
        for k in range(TRAIN_STEPS):
            assert rel(steps_ours[k], steps_theirs[k] * last_lr[k]) < 1e-3, (key, k)

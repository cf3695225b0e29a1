"""PatchCore leave-one-image-out train scores (PSAD's train_loo dump) against brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ad_pipeline.components.coreset import greedy_coreset
from ad_pipeline.components.knn import build_index, search_excluding
from ad_pipeline.components.memory_bank import MemoryBank
from ad_pipeline.errors import UserError
from ad_pipeline.methods.base import RunContext
from ad_pipeline.methods.patchcore import PatchCore, PatchCoreConfig
from tests.helpers import write_random_images

CTX = RunContext(seed=0, pretrained="false", progress=False)


def tiny(**extra) -> PatchCoreConfig:
    return PatchCoreConfig(**({"backbone": "resnet18", "resize": 48, "image_size": 48, "pretrain_embed_dim": 32,
                               "target_embed_dim": 32, "coreset_ratio": 0.2, "batch_size": 4} | extra))


@pytest.fixture(scope="module")
def train_images(tmp_path_factory):
    return write_random_images(tmp_path_factory.mktemp("loo"), 7, 48, seed=7)


def test_excluding_knn_hand_computed():
    bank = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    bank_owner = torch.tensor([0, 0, 1, 1])
    queries = torch.tensor([[0.4], [1.9], [0.4]])
    index = build_index(bank)
    sq, idx = search_excluding(index, queries, 2, torch.tensor([0, 1, 2]), bank_owner)
    assert idx.tolist() == [[2, 3], [1, 0], [0, 1]]
    torch.testing.assert_close(sq, torch.tensor([[2.56, 92.16], [0.81, 3.61], [0.16, 0.36]]))
    with pytest.raises(ValueError, match="fewer than k=3"):
        search_excluding(index, queries, 3, torch.tensor([0, 1, 2]), bank_owner)


@pytest.mark.parametrize("extra", [{}, {"num_neighbors": 3}, {"coreset_ratio": 1.0}, {"knn_backend": "pruned"}])
def test_train_loo_equals_brute_force_without_own_patches(train_images, extra):
    cfg = tiny(**extra)
    method = PatchCore(cfg, CTX)
    method.fit(train_images, [])
    loo = method.train_loo_scores()

    feats = method.embed(train_images).double()  # [7, 6, 6, D]
    per_image = feats.shape[1] * feats.shape[2]
    flat = feats.flatten(0, 2)
    keep = greedy_coreset(flat.float(), cfg.coreset_ratio, projection_dim=cfg.projection_dim, seed=CTX.seed)
    assert torch.equal(method.memory.bank, flat[keep].float())
    source = keep // per_image
    expected = []
    for i in range(len(train_images)):
        others = flat[keep[source != i]]
        sq = torch.cdist(flat[i * per_image:(i + 1) * per_image], others) ** 2
        expected.append(sq.topk(cfg.num_neighbors, dim=1, largest=False).values.mean(dim=1).max())
    np.testing.assert_allclose(loo, torch.stack(expected).numpy(), rtol=1e-5)

    plain = method.score(train_images).scores  # with its own patches in the bank
    assert loo.dtype == np.float32 and (loo >= plain * (1 - 1e-6)).all() and (loo > plain * 1.01).any()


def test_train_loo_with_reweighting_equals_scoring_against_the_reduced_bank(train_images):
    method = PatchCore(tiny(reweight=True, reweight_neighbors=4), CTX)
    method.fit(train_images, [])
    loo = method.train_loo_scores()
    full_bank, source = method.memory.bank, method.memory.source
    expected = []
    for i, path in enumerate(train_images):
        method.memory = MemoryBank(full_bank[source != i], method.scoring)
        expected.append(method.score([path]).scores[0])
    np.testing.assert_allclose(loo, expected, rtol=1e-5)


def test_train_loo_needs_fit_and_two_images(train_images, tmp_path):
    method = PatchCore(tiny(coreset_ratio=1.0), CTX)
    with pytest.raises(RuntimeError, match="needs fit"):
        method.train_loo_scores()
    method.fit(train_images[:1], [])
    with pytest.raises(UserError, match="at least 2 train images"):
        method.train_loo_scores()

"""Exact kNN indexes (faiss, torch, principal-subspace pruning) against float64 brute force; save/load."""

from __future__ import annotations

import pytest
import torch

from ad_pipeline.components.knn import KnnIndex, PrunedKnnIndex, build_index


# float32 ‖q‖² + ‖m‖² − 2qᵀm (as faiss computes it) is off by ~1e-6 of the squared norms (~600 here)
ATOL = 2e-3


def assert_exact_knn(dist: torch.Tensor, idx: torch.Tensor, queries: torch.Tensor, bank: torch.Tensor) -> None:
    """The returned rows are the k nearest (float64 truth, up to float32 near-ties), their distances
    are right, and wherever the truth has no near-tie the indices are identical."""
    k = idx.shape[1]
    true = torch.cdist(queries.double(), bank.double()) ** 2
    ref = torch.topk(true, k + 1, dim=1, largest=False)
    torch.testing.assert_close(true.gather(1, idx), ref.values[:, :k], rtol=0, atol=ATOL)
    torch.testing.assert_close(dist.double(), ref.values[:, :k], rtol=0, atol=ATOL)
    clear = (ref.values.diff(dim=1) > 2 * ATOL).all(dim=1)
    assert clear.float().mean() > 0.5 and torch.equal(idx[clear], ref.indices[clear, :k])


def clustered(n: int, centres: torch.Tensor, g: torch.Generator, spread: float = 0.3) -> torch.Tensor:
    """Points near a few centres, varying mostly inside a 6-dim subspace (like real patch features)."""
    basis = torch.linalg.qr(torch.randn(centres.shape[1], 6, generator=torch.Generator().manual_seed(9)))[0]
    which = torch.randint(len(centres), (n,), generator=g)
    inside = torch.randn(n, 6, generator=g) @ basis.T
    return centres[which] + spread * inside + 0.02 * torch.randn(n, centres.shape[1], generator=g)


@pytest.mark.parametrize("k", [1, 3])
def test_pruned_search_is_exact_and_prunes_clustered_features(k):
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(12, 64, generator=g)
    bank, queries = clustered(3000, centres, g), clustered(700, centres, g)
    index = PrunedKnnIndex(bank, dims=8, chunk_elements=3000 * 200, group=16)
    assert_exact_knn(*index.search(queries, k), queries, bank)
    assert index.stats.pruned_fraction > 0.5  # measured 0.64 (k=1)


def test_pruned_search_falls_back_to_brute_force_on_white_noise_and_stays_exact():
    g = torch.Generator().manual_seed(1)
    bank, queries = torch.randn(2000, 48, generator=g), torch.randn(300, 48, generator=g)
    index = PrunedKnnIndex(bank, dims=8, chunk_elements=2000 * 64)
    assert_exact_knn(*index.search(queries, 2), queries, bank)
    assert index.stats.brute_force_groups == index.stats.groups and index.stats.pruned_fraction < 0.01


def test_pruned_search_mixes_pruned_and_brute_force_groups():
    g = torch.Generator().manual_seed(2)
    centres = 3 * torch.randn(8, 32, generator=g)
    bank = clustered(2500, centres, g)
    queries = torch.cat([clustered(400, centres, g), 10 * torch.randn(100, 32, generator=g)])  # outliers last
    index = PrunedKnnIndex(bank, dims=8, chunk_elements=2500 * 128)
    assert_exact_knn(*index.search(queries, 1), queries, bank)
    assert 0 < index.stats.brute_force_groups < index.stats.groups


def test_pruned_search_is_deterministic_and_checks_k():
    g = torch.Generator().manual_seed(3)
    bank, queries = torch.randn(500, 16, generator=g), torch.randn(50, 16, generator=g)
    a = PrunedKnnIndex(bank, dims=4).search(queries, 2)
    b = PrunedKnnIndex(bank, dims=4).search(queries, 2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    with pytest.raises(ValueError, match="fewer than k=501"):
        PrunedKnnIndex(bank, dims=4).search(queries, 501)


@pytest.mark.parametrize("backend", ["faiss", "torch", "pruned"])
def test_index_is_built_once_and_round_trips_through_save_load(backend, tmp_path):
    g = torch.Generator().manual_seed(4)
    bank, queries = torch.randn(400, 16, generator=g), torch.randn(60, 16, generator=g)
    index = build_index(bank, backend)
    first = index.search(queries, 3)
    assert_exact_knn(*first, queries, bank)
    second = index.search(queries[:7], 3)  # the same object serves many searches
    assert torch.equal(second[1], first[1][:7])
    index.save(tmp_path / "index")
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["knn_bank.npy", "knn_index.json"]
    loaded = KnnIndex.load(tmp_path / "index")
    assert type(loaded) is type(index) and loaded.options == index.options
    again = loaded.search(queries, 3)
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])
    with pytest.raises(ValueError, match="unknown kNN backend 'annoy'"):
        build_index(bank, "annoy")

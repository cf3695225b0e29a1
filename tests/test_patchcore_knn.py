"""Exact kNN indexes (faiss, torch, principal-subspace pruning) against float64 brute force; save/load."""

from __future__ import annotations

import pytest
import torch

from ad_pipeline.components import knn
from ad_pipeline.components.knn import KnnIndex, PrunedKnnIndex, build_index


# float32 ‖q‖² + ‖m‖² − 2qᵀm (as faiss computes it) is off by ~1e-6 of the squared norms (~600 here)
ATOL = 2e-3


def assert_exact_knn(dist: torch.Tensor, idx: torch.Tensor, queries: torch.Tensor, bank: torch.Tensor,
                     atol: float = ATOL) -> None:
    """The returned rows are the k nearest (float64 truth, up to float32 near-ties), their distances
    are right, and wherever the truth has no near-tie the indices are identical."""
    k = idx.shape[1]
    true = torch.cdist(queries.double(), bank.double()) ** 2
    ref = torch.topk(true, k + 1, dim=1, largest=False)
    torch.testing.assert_close(true.gather(1, idx), ref.values[:, :k], rtol=0, atol=atol)
    torch.testing.assert_close(dist.double(), ref.values[:, :k], rtol=0, atol=atol)
    clear = (ref.values.diff(dim=1) > 2 * atol).all(dim=1)
    assert clear.float().mean() > 0.5 and torch.equal(idx[clear], ref.indices[clear, :k])


def clustered(n: int, centres: torch.Tensor, g: torch.Generator, spread: float = 0.3) -> torch.Tensor:
    """Points near a few centres, varying mostly inside a 6-dim subspace (like real patch features)."""
    basis = torch.linalg.qr(torch.randn(centres.shape[1], 6, generator=torch.Generator().manual_seed(9)))[0]
    which = torch.randint(len(centres), (n,), generator=g)
    inside = torch.randn(n, 6, generator=g) @ basis.T
    return centres[which] + spread * inside + 0.02 * torch.randn(n, centres.shape[1], generator=g)


@pytest.mark.parametrize("bound_dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("k", [1, 3])
def test_pruned_search_is_exact_and_prunes_clustered_features(k, bound_dtype):
    g = torch.Generator().manual_seed(0)
    centres = 3 * torch.randn(12, 64, generator=g)
    bank, queries = clustered(3000, centres, g), clustered(700, centres, g)
    index = PrunedKnnIndex(bank, dims=8, chunk_elements=3000 * 200, group=16, bound_dtype=bound_dtype)
    assert_exact_knn(*index.search(queries, k), queries, bank)
    assert index.stats.pruned_fraction > 0.5  # measured 0.64 (k=1, float32), 0.62 (bfloat16)


@pytest.mark.parametrize("k", [1, 3])
def test_bfloat16_bounds_that_misorder_rows_still_give_the_exact_neighbours(k):
    """Bank rows on a thin shell around the queries: their distances differ by less than bfloat16
    resolves, so the rounded bounds misorder rows (and one query per group: no union hides it)."""
    g = torch.Generator().manual_seed(5)
    basis = torch.linalg.qr(torch.randn(32, 6, generator=g))[0]
    directions = torch.nn.functional.normalize(torch.randn(600, 6, generator=g), dim=1)
    bank = (directions * (1 + 0.02 * torch.rand(600, 1, generator=g))) @ basis.T
    queries = 1e-3 * torch.randn(200, 6, generator=g) @ basis.T
    index = PrunedKnnIndex(bank, dims=8, group=1, max_union_fraction=1.0, bound_dtype="bfloat16")
    assert_exact_knn(*index.search(queries, k), queries, bank, atol=1e-5)  # unit norms: float32 error ~1e-7
    assert index.stats.brute_force_groups == 0 and index.stats.pruned_fraction > 0.3  # measured 0.56 (k=1)
    lifted = index.lift(queries)
    bounds = (knn._bound_queries(lifted.bfloat16()) @ index.bound_bank.T).float()
    assert (bounds.argmin(dim=1) != torch.cdist(queries, bank).argmin(dim=1)).float().mean() > 0.5


def test_bfloat16_bound_never_exceeds_the_threshold_of_its_true_value():
    """The threshold's guarantee, pair by pair, at its tightest: ``upper`` = the exact lifted
    distance. Without the input-rounding terms the same check fails."""
    g = torch.Generator().manual_seed(6)
    centres = 3 * torch.randn(6, 48, generator=g)
    bank, queries = clustered(500, centres, g), clustered(120, centres, g)
    index = PrunedKnnIndex(bank, dims=8, bound_dtype="bfloat16")
    lifted, rounded = index.lift(queries), index.lift(queries).bfloat16()
    computed = knn._order_keys(knn._bound_queries(rounded) @ index.bound_bank.T).flatten()  # [Q·M]
    true = torch.cdist(lifted.double(), index.lift(bank).double()).square().float().flatten()
    pair_queries = lifted.repeat_interleave(len(bank), dim=0)
    q_rounding = torch.linalg.vector_norm(rounded.float() - lifted, dim=1).repeat_interleave(len(bank))
    assert index.bank_rounding > 0 and (q_rounding > 0).all()
    assert (computed <= knn._order_keys(index._threshold(true, pair_queries, q_rounding))).all()
    index.bank_rounding = 0.0
    assert not (computed <= knn._order_keys(index._threshold(true, pair_queries, 0 * q_rounding))).all()


def test_order_keys_compare_like_floats_against_non_negative_thresholds():
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.tensor([-2.0, -0.5, -0.0, 0.0, 1.5, 3.0, 7.0], dtype=dtype)
        for t in (0.0, 1.5, 2.0, 100.0):
            assert torch.equal(knn._order_keys(x) <= knn._order_keys(torch.tensor([t], dtype=dtype)), x <= t)
        assert x[knn._order_keys(x).argmin()] <= 0  # a bound rounded to or below 0, as a probe


def test_row_argmin_finds_each_rows_minimum_in_sets_and_in_the_tail():
    keys = torch.tensor([[5, 3, 9, 1, 7, 8, 6],    # 7 columns, 3 sets of width 2: column 6 is the tail
                         [5, 3, 9, 4, 7, 8, 0],    # minimum in the tail
                         [2, 2, 2, 2, 2, 2, 2]], dtype=torch.int16)
    assert knn._row_argmin(keys, sets=3).tolist() == [3, 6, 0]
    assert knn._row_argmin(keys[:, :2], sets=3).tolist() == [1, 1, 0]  # fewer columns than sets
    wide = torch.randint(-2000, 2000, (64, 1001), generator=torch.Generator().manual_seed(8), dtype=torch.int32)
    picked = knn._row_argmin(wide)
    assert torch.equal(wide.gather(1, picked[:, None])[:, 0], wide.amin(dim=1))


def test_round_up_gives_the_nearest_value_not_below():
    x = torch.tensor([1.0, 1 + 2.0 ** -10, 3.0 - 2.0 ** -12, 0.0])
    assert knn._round_up(x, torch.bfloat16).float().tolist() == [1.0, 1 + 2.0 ** -7, 3.0, 0.0]
    assert torch.equal(knn._round_up(x, torch.float32), x)


def test_bound_dtype_auto_follows_the_cpu_and_its_onednn_cap_and_rejects_unknown_names(monkeypatch):
    bank = torch.randn(50, 8, generator=torch.Generator().manual_seed(7))
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    for avx512_bf16, isa_cap, expected in ((True, None, torch.bfloat16), (False, None, torch.float32),
                                           (True, "AVX2", torch.float32), (True, "avx512_core_bf16", torch.bfloat16)):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        if isa_cap is None:
            monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("DNNL_MAX_CPU_ISA", isa_cap)
        assert PrunedKnnIndex(bank, dims=4).bound_dtype == expected
    with pytest.raises(ValueError, match="bound_dtype must be auto, float32 or bfloat16, got 'float16'"):
        PrunedKnnIndex(bank, dims=4, bound_dtype="float16")


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

"""ad_pipeline.seed: a seeded block draws the same values whatever ran before and leaves the
caller's RNG where it was."""

from __future__ import annotations

import torch

from ad_pipeline.seed import seeded


def test_seeded_block_is_reproducible_and_restores_the_callers_rng():
    torch.manual_seed(123)
    with seeded(7):
        first = torch.rand(3)
    after = torch.rand(3)
    torch.manual_seed(123)
    want_after = torch.rand(3)
    torch.manual_seed(999)  # other caller state: same draws inside the block
    with seeded(7):
        second = torch.rand(3)
    assert torch.equal(first, second) and torch.equal(after, want_after)
    with seeded(8):
        assert not torch.equal(torch.rand(3), first)

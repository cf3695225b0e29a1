"""Greedy k-center coreset (PatchCore's approximate greedy coreset, spec/patchcore.md §4)."""

from __future__ import annotations

import contextlib
from typing import Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ad_pipeline.seed import seeded


Rng = Literal["seeded", "global"]


def project(features: torch.Tensor, dim: int, seed: int, rng: Rng = "seeded") -> torch.Tensor:
    """[N, D] -> [N, dim] through a bias-free ``nn.Linear`` with PyTorch's default init (identity when
    D == dim, as the reference). ``rng="seeded"``: drawn from ``seed``, global RNG untouched;
    ``"global"``: drawn from (and advancing) the global torch RNG, as the reference does."""
    if features.shape[1] == dim:
        return features.float().contiguous()
    with seeded(seed) if rng == "seeded" else contextlib.nullcontext():
        mapper = nn.Linear(features.shape[1], dim, bias=False)
    with torch.no_grad():
        return mapper(features.float()).contiguous()


def starting_points(n: int, k: int, seed: int, rng: Rng = "seeded") -> np.ndarray:
    """``min(k, n)`` distinct random indices < ``n``: from ``seed`` (``"seeded"``) or, as the reference,
    from the global numpy RNG (``np.random.choice``, ``"global"``)."""
    k = min(k, n)
    if rng == "global":
        return np.random.choice(n, k, replace=False)
    return np.random.default_rng(seed).choice(n, k, replace=False)


def greedy_coreset(features: torch.Tensor, ratio: float, *, projection_dim: int = 128, num_starting_points: int = 10,
                   seed: int = 0, rng: Rng = "seeded", candidates: int = 4096,
                   progress: bool = False) -> torch.Tensor:
    """Indices [n = int(N·ratio)] of a greedy k-center coreset of ``features`` [N, D] (ratio >= 1: all).

    Rule (reference): in the projected space, every point's "distance to the coreset" starts as
    its mean Euclidean distance to ``num_starting_points`` random points (not selected); then
    n times pick the argmax, and lower every distance to min(old, distance to the pick).
    Distances are tracked squared (argmax/min are unchanged by the monotone square root; the
    start-point mean is taken over plain distances, then squared). The projection and the start
    points come from ``seed`` (``rng="seeded"``, reproducible whatever ran before) or from the
    global torch / numpy RNGs (``"global"``, the reference's draws given the same global state).

    Speed (hand-written because no library offers it): the literal loop is n memory-bound
    matrix-vector products over the whole bank. Here distances only ever shrink, so stale values
    are upper bounds: each round keeps exact values for the ``candidates`` points with the largest
    bounds and picks among them while the best exceeds the largest bound outside the set; then all
    points are brought up to date with one compute-bound matrix product against the round's picks.
    The selection is the same as the literal loop (up to exact float ties). Memory: the projected
    bank [N, projection_dim] float32, O(N) vectors and a [min(N, 8192), picks-per-round] block.
    """
    n_total = features.shape[0]
    if ratio >= 1:
        return torch.arange(n_total)
    n_select = int(n_total * ratio)
    if n_select < 1:
        raise ValueError(f"coreset ratio {ratio} selects no point out of {n_total}")
    x = project(features, projection_dim, seed, rng)
    sq_norms = (x * x).sum(dim=1)
    starts = starting_points(n_total, num_starting_points, seed, rng)
    to_starts = (sq_norms[:, None] + sq_norms[starts][None, :] - 2 * x @ x[starts].T).clamp_(min=0).sqrt_()
    min_sq = to_starts.mean(dim=1).square_()
    selected: list[int] = []
    n_cand = min(candidates, n_total)
    with tqdm(total=n_select, desc="coreset", disable=not progress, mininterval=1.0) as bar:
        while len(selected) < n_select:
            top = torch.topk(min_sq, min(n_cand + 1, n_total))
            cand = top.indices[:n_cand]
            outside_bound = float(top.values[n_cand]) if n_cand < n_total else -1.0
            cand_x, cand_sq, cand_val = x[cand], sq_norms[cand], min_sq[cand]
            round_start = len(selected)
            pick = int(torch.argmax(min_sq))  # exact global argmax: the round's first pick
            while True:
                selected.append(pick)
                step = torch.addmv(cand_sq + sq_norms[pick], cand_x, x[pick], alpha=-2).clamp_(min=0)
                torch.minimum(cand_val, step, out=cand_val)
                best = int(torch.argmax(cand_val))
                if len(selected) == n_select or float(cand_val[best]) <= outside_bound:
                    break
                pick = int(cand[best])
            _lower_to_centers(min_sq, x, sq_norms, torch.tensor(selected[round_start:]))
            bar.update(len(selected) - round_start)
    return torch.tensor(selected, dtype=torch.long)


def _lower_to_centers(min_sq: torch.Tensor, x: torch.Tensor, sq_norms: torch.Tensor, centers: torch.Tensor,
                      rows_per_chunk: int = 8192) -> None:
    """In place: min_sq[i] = min(min_sq[i], min_c ‖x_i − x_c‖²) over ``centers``, in row chunks."""
    cx, csq = x[centers], sq_norms[centers]
    for start in range(0, x.shape[0], rows_per_chunk):
        rows = slice(start, start + rows_per_chunk)
        d = torch.addmm(csq[None, :], x[rows], cx.T, alpha=-2).add_(sq_norms[rows, None]).clamp_(min=0)
        torch.minimum(min_sq[rows], d.amin(dim=1), out=min_sq[rows])


def literal_greedy_coreset(features: torch.Tensor, ratio: float, *, projection_dim: int = 128,
                           num_starting_points: int = 10, seed: int = 0, rng: Rng = "seeded") -> list[int]:
    """The reference k-center rule written literally (a full distance column per selected point).

    O(n·|coreset|) time: the yardstick that tests and ``bench/patchcore.py`` hold
    :func:`greedy_coreset` to (same indices), not for production use.
    """
    x = project(features, projection_dim, seed, rng)

    def dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (-2 * a @ b.T + (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None]).clamp(min=0).sqrt()

    starts = starting_points(len(x), num_starting_points, seed, rng)
    min_d = dist(x, x[starts]).mean(dim=1, keepdim=True)
    picks = []
    for _ in range(int(len(x) * ratio)):
        j = int(torch.argmax(min_d))
        picks.append(j)
        min_d = torch.minimum(min_d, dist(x, x[j:j + 1]))
    return picks

"""``divide_num`` stratified subset splitting (MuSc spec §3).

Images are grouped by defect type (first appearance order); one ``random.Random(seed)`` shuffles
each group in turn; each shuffled group is cut into consecutive chunks of ``divide_num`` and subset
t takes element t of every chunk that has one. The official code uses seed 42.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path


def defect_type_of(path: str | Path) -> str:
    """The defect type of a test image: its parent folder name."""
    return Path(path).parent.name


def stratified_subsets(defect_types: Sequence[str], divide_num: int, seed: int) -> list[list[int]]:
    """Index lists of the ``divide_num`` subsets, in subset order (a subset may come out empty)."""
    if divide_num < 1:
        raise ValueError(f"divide_num must be >= 1, got {divide_num}")
    if divide_num == 1:  # the official code does not shuffle then
        return [list(range(len(defect_types)))]
    groups: dict[str, list[int]] = {}
    for index, defect in enumerate(defect_types):
        groups.setdefault(defect, []).append(index)
    rng = random.Random(seed)
    subsets: list[list[int]] = [[] for _ in range(divide_num)]
    for members in groups.values():
        rng.shuffle(members)
        for position, index in enumerate(members):
            subsets[position % divide_num].append(index)
    return subsets

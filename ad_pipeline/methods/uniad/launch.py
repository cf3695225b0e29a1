"""How a stage runs UniAD training under torchrun: re-execute itself with K processes.

    if cfg.distributed.nproc_per_node > 1 and not under_torchrun():
        raise SystemExit(relaunch_under_torchrun(cfg.distributed.nproc_per_node, ["-m", "stages", "uniad", ds]))
    result = train_unified(...)          # every rank
    if not is_main_process():
        return                           # rank 0 alone scores and writes the dumps
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence


def under_torchrun() -> bool:
    """True inside a process started by torchrun (it exports ``WORLD_SIZE``/``RANK``)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def is_main_process() -> bool:
    """Rank 0 of a torchrun launch, or a plain single process."""
    return int(os.environ.get("RANK", "0")) == 0


def torchrun_command(nproc_per_node: int, argv: Sequence[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node K <argv>`` (single node,
    local rendezvous; ``argv`` is a script path or ``["-m", module, *args]``)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
            *argv]


def relaunch_under_torchrun(nproc_per_node: int, argv: Sequence[str]) -> int:
    """Run ``argv`` under torchrun with ``nproc_per_node`` processes; return its exit status."""
    return subprocess.run(torchrun_command(nproc_per_node, argv), check=False).returncode

"""Global CLI options, set by the typer callback (kept import-light so `--help` is instant)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Options:
    params_path: Path = Path("params.yaml")
    quiet: bool = False


OPTIONS = Options()

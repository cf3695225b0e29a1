"""Stage ``synthesize``: the embedded synthetic datasets under ``data/synthetic``."""

from __future__ import annotations

from pathlib import Path

from stages.common import OPTIONS, log, params


def run() -> None:
    from ad_pipeline.data.synthetic import generate_all

    p = params()
    summary = generate_all(Path(p.synthesize.out), p.seed, progress=not OPTIONS.quiet)
    log.info("synthetic datasets written to %s: %s", p.synthesize.out, summary)

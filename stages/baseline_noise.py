"""``ad-pipeline baseline-noise``: the gate's noise model, written beside the baseline metrics.json.

Re-runs every stage upstream of ``summarize`` (except those writing data/, whose outputs are
shared read-only) once per extra seed, each in a scratch copy of the workspace beside it (symlinks
to the code and data, its own params.yaml, artifacts/ and metrics/; removed afterwards), then writes ``metrics_noise.json``:
per flattened metric name its values over the seeds (the workspace's metrics.json counts as the
run of ``params.seed``), spread = max - min, and the one-rank-swap quantum of the test set
(see ad_pipeline/metrics/gate.py). Run it after ``dvc repro``, so that metrics.json is current.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import yaml

from ad_pipeline import numerics
from ad_pipeline.errors import ArtifactError, UserError
from ad_pipeline.io import read_json, write_json
from ad_pipeline.metrics.gate import NoiseModel, flatten_metrics, image_quanta
from ad_pipeline.metrics.loco import GOOD, SPLITS
from stages.common import load_manifests, log, params

PRIVATE = {"params.yaml", ".dvc", ".git"}  # plus the outputs of the stages it re-runs
DATA = "data"  # stage outputs under it (synthesize, visa_convert) are shared, not re-run


def dataset_quanta(dataset: str) -> dict[str, float]:
    """{image metric name: quantum} of a dataset's test split, from the manifests' labels."""
    manifests = load_manifests(dataset)
    tests = [m.split("test") for m in manifests]
    if manifests[0].format != "mvtec_loco":
        return image_quanta((sum(s.label for s in t), sum(1 - s.label for s in t)) for t in tests)
    per_split = {f"image_auroc_{split}": image_quanta(
        (sum(s.defect_type == folder for s in t), sum(s.defect_type == GOOD for s in t)) for t in tests)["image_auroc"]
        for split, folder in SPLITS.items()}
    return per_split | {"image_auroc_mean": 0.5 * max(per_split.values())}


def metric_quanta(names: list[str], quanta: dict[str, dict[str, float]]) -> dict[str, float]:
    """Quantum of each flattened name: that of its last part in the first dataset named in it."""
    out = {}
    for name in names:
        parts = name.split(".")
        dataset = next((p for p in parts if p in quanta), None)
        out[name] = quanta[dataset].get(parts[-1], 0.0) if dataset else 0.0
    return out


def pipeline_commands(target: str = "summarize") -> list[tuple[str, str, list[str]]]:
    """(stage name, cmd, outs) of ``target`` and every stage upstream, dependencies first."""
    import networkx as nx
    from dvc.repo import Repo

    repo = Repo(".")
    stages = set(repo.stage.collect(target, with_deps=True))
    order = reversed(list(nx.topological_sort(repo.index.graph.subgraph(stages))))
    return [(s.addressing, s.cmd, [str(o.def_path) for o in s.outs]) for s in order]


def seed_run(seed: int, root: Path, workspace: Path = Path(".")) -> dict[str, float]:
    """Flattened metrics.json of the pipeline re-run with ``seed`` in ``root``."""
    root.mkdir(parents=True)
    commands = pipeline_commands()
    stages = [(s, cmd) for s, cmd, outs in commands if all(Path(o).parts[0] != DATA for o in outs)]
    private = PRIVATE | {Path(o).parts[0] for _, _, outs in commands for o in outs} - {DATA}
    for entry in workspace.resolve().iterdir():
        if entry.name not in private:
            (root / entry.name).symlink_to(entry)
    p = yaml.safe_load((workspace / "params.yaml").read_text()) | {"seed": seed}
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    env = os.environ | {"PYTHONPATH": str(root)}
    for stage, cmd in stages:
        log.warning("baseline-noise seed %d: %s", seed, stage)
        done = subprocess.run(cmd, shell=True, cwd=root, env=env)
        if done.returncode:
            raise ArtifactError(f"stage {stage} failed with seed {seed} (exit {done.returncode})", path=root,
                                fix="run `dvc repro` first and fix that stage; its log is above")
    return flatten_metrics(read_json(root / "metrics.json"))


def recorded_runs(noise_file: Path, base: dict[str, float], base_seed: int) -> dict[int, dict[str, float]]:
    """{seed: flattened metrics} of the extra seeds an existing noise file recorded for this very
    baseline (seed ``base_seed`` first, every value equal, same numerics); {} when it is another's."""
    if not noise_file.exists():
        return {}
    old = read_json(noise_file)
    seeds, metrics = old.get("seeds", []), old.get("metrics", {})
    same = (seeds[:1] == [base_seed] and set(metrics) == set(base)
            and all(len(m["values"]) == len(seeds) and m["values"][0] == base[n] for n, m in metrics.items())
            and _settings(old.get("numerics", {})) == _settings(numerics.record()))
    if not same:
        return {}
    return {s: {n: m["values"][i] for n, m in metrics.items()} for i, s in enumerate(seeds) if i}


def _settings(record: dict) -> dict:
    """The numerics settings that decide the bits of a run (not the CPU's name)."""
    return {key: record.get(key) for key in ("profile", "level", "threads", "env")}


def run(seeds: list[int] | None = None, out: Path = Path("metrics_noise.json"),
        baseline: Path = Path("metrics.json"), fresh: bool = False) -> None:
    p = params()
    seeds = p.gate.seeds if seeds is None else seeds
    if p.seed in seeds or len(set(seeds)) != len(seeds) or not seeds:
        raise UserError(f"seeds {seeds}: expected distinct seeds other than params' seed {p.seed}",
                        fix="set gate.seeds in params.yaml (or --seed) to e.g. [1, 2]")
    base = flatten_metrics(read_json(baseline))
    recorded = {} if fresh else recorded_runs(out, base, p.seed)
    reused = [s for s in seeds if s in recorded]
    runs = {p.seed: base} | {s: recorded[s] for s in reused}
    if reused:
        log.warning("baseline-noise: seeds %s reused from %s (same baseline values and numerics; "
                    "--fresh re-runs them)", reused, out)
    workspace = Path.cwd()
    # a sibling of the workspace, so that relative paths out of it (../shared/...) resolve the same
    with tempfile.TemporaryDirectory(prefix=f".{workspace.name}-noise-", dir=workspace.parent) as tmp:
        for seed in (s for s in seeds if s not in runs):
            runs[seed] = seed_run(seed, Path(tmp) / f"seed{seed}")
    values = {n: [runs[s][n] for s in runs if n in runs[s]] for n in base}
    spread = {n: max(v) - min(v) for n, v in values.items()}
    quanta = metric_quanta(list(base), {d: dataset_quanta(d) for d in p.summary_datasets})
    model = NoiseModel(quantum=quanta, spread=spread, k=p.gate.k)
    write_json(out, model.to_json(values, seeds=list(runs), reused_seeds=reused, baseline=str(baseline),
                                  command="ad-pipeline baseline-noise" + "".join(f" --seed {s}" for s in seeds),
                                  numerics=numerics.record()))
    log.warning("baseline-noise: %d metrics, seeds %s -> %s", len(values), list(runs), out)

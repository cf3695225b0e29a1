"""dvc.yaml's code deps are complete: every file of ``ad_pipeline/`` and ``stages/`` that a stage's
command imports is a dep (the file or a folder above it), so editing it re-runs the stage; and
none is stale (each code dep covers an imported file). Every other dep exists in a fresh clone or
is a stage's output, also when an optional stage list (``uniad_vis.datasets``) is empty.

The import closure is static (``ast``): the module-level imports of ``stages/cli.py``, the lazy
imports in the body of the subcommand's function, then every import (module-level or in a
function) of each module reached, transitively; plus the registry's module of a method named in
the command (``run patchcore …``: ``get_method`` imports it by name), and for ``export`` every
registered inference graph. Generic over dvc.yaml: a
new stage is checked without editing this test.
"""

from __future__ import annotations

import ast
import functools
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ad_pipeline.methods.registry import INFERENCE, METHODS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ad_pipeline", "stages")


def module_file(module: str) -> Path | None:
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def imported_modules(nodes: list[ast.AST], package: str) -> set[str]:
    """Modules of our packages imported anywhere in ``nodes`` (parents included: importing
    ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``)."""
    found: set[str] = set()
    for node in (n for tree in nodes for n in ast.walk(tree)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                found.update(m for m in _with_parents(name) if module_file(m))
    return found


@functools.cache
def module_imports(module: str) -> frozenset[str]:
    path = module_file(module)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return frozenset(imported_modules([ast.parse(path.read_text())], package))


def closure(roots: set[str]) -> set[Path]:
    """Files of every module reachable from ``roots`` by imports."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += module_imports(module) - seen
    return {module_file(m).relative_to(REPO) for m in seen}


@functools.cache
def command_roots() -> dict[str, set[str]]:
    """``ad-pipeline`` subcommand → the modules it imports first (cli.py's module level + the lazy
    imports in its function's body)."""
    tree = ast.parse((REPO / "stages/cli.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    base = imported_modules(top, "stages")
    roots = {}
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef)):
        for deco in fn.decorator_list:
            if isinstance(deco, ast.Call) and getattr(deco.func, "attr", None) == "command":
                name = deco.args[0].value if deco.args else fn.name.replace("_", "-")
                roots[name] = base | imported_modules(fn.body, "stages")
    return roots


def stage_definitions() -> dict[str, dict]:
    """dvc.yaml stages (a foreach stage by its ``do`` template)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: st.get("do", st) for name, st in stages.items()}


def required_files(cmd: str) -> set[Path]:
    """Files of ``ad_pipeline/`` and ``stages/`` that ``cmd`` (an ``ad-pipeline`` command) imports."""
    args = shlex.split(cmd)
    assert args[0] == "ad-pipeline", f"stage command is not an ad-pipeline command: {cmd}"
    words = [a for a in args[1:] if not a.startswith("-")]
    subcommand, rest = words[0], words[1:]
    roots = set(command_roots()[subcommand])
    roots |= {METHODS[a].split(":")[0] for a in rest if a in METHODS}
    if subcommand == "check-params":  # validation builds every method section from its Config
        roots |= {target.split(":")[0] for target in METHODS.values()}
    if subcommand == "export":  # every method's inference graph, imported by name from the registry
        roots |= {target.split(":")[0] for target in (*METHODS.values(), *INFERENCE.values())}
    return closure(roots) | {Path("stages/cli.py")}  # its module level only: the rest is lazy


def _dep_path(dep) -> str:
    return next(iter(dep)) if isinstance(dep, dict) else dep


def missing_deps(stage: dict) -> list[str]:
    """Imported files that no dep of ``stage`` (the file or a folder above it) covers."""
    deps = [Path(_dep_path(d)) for d in stage.get("deps", [])]
    return sorted(str(f) for f in required_files(stage["cmd"])
                  if not any(f == d or d in f.parents for d in deps))


@pytest.mark.parametrize("name", sorted(stage_definitions()))
def test_stage_deps_cover_its_import_closure(name):
    stage = stage_definitions()[name]
    assert missing_deps(stage) == [], f"add these to the deps of {name} in dvc.yaml"


def stale_deps(stage: dict) -> list[str]:
    """Code deps (under ``ad_pipeline/`` or ``stages/``) that cover no imported file: they re-run the
    stage for edits it cannot see."""
    files = required_files(stage["cmd"])
    return [d for d in map(_dep_path, stage.get("deps", []))
            if d.split("/")[0] in PACKAGES and not any(f == Path(d) or Path(d) in f.parents for f in files)]


@pytest.mark.parametrize("name", sorted(stage_definitions()))
def test_stage_code_deps_are_all_imported(name):
    assert stale_deps(stage_definitions()[name]) == [], f"remove these from the deps of {name} in dvc.yaml"


def test_an_unused_dep_is_reported():
    stage = dict(stage_definitions()["synthesize"])
    stage["deps"] = [*stage["deps"], "stages/run_method.py", "ad_pipeline/methods/csad"]
    assert stale_deps(stage) == ["stages/run_method.py", "ad_pipeline/methods/csad"]


def test_a_removed_dep_is_reported():
    stage = dict(stage_definitions()["csad"])
    assert missing_deps(stage) == []
    pdn = Path("ad_pipeline/components/student_teacher/pdn.py")
    stage["deps"] = [d for d in stage["deps"] if not (Path(_dep_path(d)) == pdn or Path(_dep_path(d)) in pdn.parents)]
    assert missing_deps(stage) == [str(pdn)]  # CSAD's LGST student is the shared PDN


def test_closure_follows_lazy_and_relative_imports():
    files = required_files("ad-pipeline --quiet run patchcore x")
    assert Path("stages/run_method.py") in files  # cli.py imports it inside `run_method`
    assert Path("ad_pipeline/components/knn.py") in files  # via the registry entry
    assert Path("ad_pipeline/methods/csad/method.py") not in files


def test_every_stage_runs_after_check_params():
    """check_params validates params.yaml first; its constant output is every stage's dep."""
    for name, stage in stage_definitions().items():
        if name != "check_params":
            assert "artifacts/params.valid" in map(_dep_path, stage.get("deps", [])), name


def unresolved_deps(params_edit: dict[str, list], tmp_path: Path, tracked: set[str]) -> list[tuple[str, str]]:
    """(stage, dep) of dvc.yaml, as DVC resolves it with ``params.yaml`` edited by ``params_edit``
    ({"section": new datasets list}), whose dep a fresh clone neither holds (``tracked``: git's
    files) nor gets from a stage's output (the dep, a folder above it or one inside it); deps
    outside the repository (``../shared``) are not judged. No stage runs."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, datasets in params_edit.items():
        params[section]["datasets"] = datasets
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with Repo(str(tmp_path)) as repo:
        stages = list(repo.index.stages)
    outs = {Path(o.def_path).as_posix() for st in stages for o in st.outs}
    missing = []
    for st in stages:
        for dep in (d for d in st.deps if not isinstance(d, ParamsDependency)):
            path = Path(dep.def_path).as_posix()
            produced = any(path == o or o.startswith(f"{path}/") or path.startswith(f"{o}/") for o in outs)
            if not (path.startswith("..") or produced or any(t == path or t.startswith(f"{path}/") for t in tracked)):
                missing.append((st.name, path))
    return missing


@functools.cache
def tracked_files() -> frozenset[str]:
    """What a commit of the working tree would hold: tracked files and untracked ones git does not ignore."""
    return frozenset(subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                    capture_output=True, text=True, check=True).stdout.split())


@pytest.mark.parametrize("edit", [{}, {"uniad_vis": []}], ids=["as committed", "uniad_vis.datasets empty"])
def test_every_dep_exists_in_a_fresh_clone_or_is_a_stage_output(edit, tmp_path):
    assert unresolved_deps(edit, tmp_path, set(tracked_files())) == []


def test_report_vis_dep_needs_its_committed_readme(tmp_path):
    """Without artifacts/vis/README.md in the clone, ``dvc repro report`` would stop on the missing
    artifacts/vis whenever uniad_vis.datasets is empty."""
    tracked = set(tracked_files()) - {"artifacts/vis/README.md"}
    assert unresolved_deps({"uniad_vis": []}, tmp_path, tracked) == [("report", "artifacts/vis")]

"""Import rules of the layers (docs/architecture.md, "Import rules"), checked on the source (AST):
a method never imports a sibling method (only ``methods.base`` and ``methods.registry``), and
``ad_pipeline/components`` never imports ``ad_pipeline.methods``."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from ad_pipeline.methods.registry import INFERENCE, METHODS

PACKAGE = Path(__file__).resolve().parents[1] / "ad_pipeline"
SHARED = {"base", "registry"}  # ad_pipeline.methods.<these>: the interface every method may use


def imported_modules(path: Path, package: str) -> Iterator[str]:
    """Absolute names of the modules ``path`` (module ``package.<stem>``) imports, relative imports
    resolved; ``from a import b`` yields ``a.b`` (b may be a module)."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            yield from (f"{base}.{alias.name}" for alias in node.names)


def module_owners() -> dict[str, str]:
    """Top-level modules ``methods/<x>.py`` the registries assign to a method (e.g. puad_inference: puad)."""
    owners = {}
    for name, target in [*METHODS.items(), *INFERENCE.items()]:
        parts = target.split(":")[0].split(".")
        if len(parts) == 3:
            owners[parts[2]] = name
    return owners


def violations(package_dir: Path, owners: Mapping[str, str]) -> list[str]:
    """"<file>: imports <module>" for every broken rule in the ``ad_pipeline`` tree at ``package_dir``.

    The method of ``methods/<m>/…`` is ``m``; of ``methods/<x>.py``, ``owners.get(x, x)``."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        package = ".".join(("ad_pipeline", *rel.parts[:-1]))
        if rel.parts[0] == "components":
            found += [f"{rel}: imports {m}" for m in imported_modules(path, package)
                      if m == "ad_pipeline.methods" or m.startswith("ad_pipeline.methods.")]
        elif rel.parts[0] == "methods" and rel.parts[1:] not in {("__init__.py",), *((f"{s}.py",) for s in SHARED)}:
            own = rel.parts[1] if len(rel.parts) > 2 else owners.get(path.stem, path.stem)
            for module in imported_modules(path, package):
                parts = module.split(".")
                if parts[:2] != ["ad_pipeline", "methods"] or len(parts) < 3 or parts[2] in SHARED:
                    continue
                if owners.get(parts[2], parts[2]) != own:
                    found.append(f"{rel}: imports {module}")
    return found


def test_methods_import_no_sibling_method_and_components_no_method():
    assert violations(PACKAGE, module_owners()) == []


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


CLEAN = {
    "methods/__init__.py": "",
    "methods/base.py": "import ad_pipeline.methods.registry\n",
    "methods/registry.py": "METHODS = {'a': 'ad_pipeline.methods.a.method:A'}\n",
    "methods/a/__init__.py": "from ad_pipeline.methods.a.method import A\n",
    "methods/a/method.py": ("from ad_pipeline.methods.base import AnomalyMethod\n"
                            "from ad_pipeline.methods import registry\n"
                            "from . import model\nfrom .model import Net\nfrom ad_pipeline.components.knn import X\n"),
    "methods/a/model.py": "import torch\n",
    "methods/b.py": "from ad_pipeline.methods.b_inference import build\n",
    "methods/b_inference.py": "from ad_pipeline.methods.b import B\n",
    "components/knn.py": "import numpy\nfrom ad_pipeline.backbones import Backbone\n",
}


def test_a_clean_fake_tree_passes(tmp_path):
    assert violations(_tree(tmp_path, CLEAN), {"b_inference": "b"}) == []


@pytest.mark.parametrize("file, text, imported", [
    ("methods/a/method.py", "from ad_pipeline.methods.c.pdn import PDN\n", "ad_pipeline.methods.c.pdn.PDN"),
    ("methods/a/model.py", "import ad_pipeline.methods.b\n", "ad_pipeline.methods.b"),
    ("methods/a/model.py", "from ad_pipeline.methods import b\n", "ad_pipeline.methods.b"),
    ("methods/a/sub/x.py", "from ...b import B\n", "ad_pipeline.methods.b.B"),
    ("methods/b.py", "def f():\n    from ad_pipeline.methods.a.model import Net\n", "ad_pipeline.methods.a.model.Net"),
    ("methods/b_inference.py", "from ad_pipeline.methods.a import A\n", "ad_pipeline.methods.a.A"),
    ("components/knn.py", "from ad_pipeline.methods.base import RunContext\n", "ad_pipeline.methods.base.RunContext"),
    ("components/knn.py", "from ..methods.a import model\n", "ad_pipeline.methods.a.model"),
])
def test_an_injected_violation_is_reported(tmp_path, file, text, imported):
    root = _tree(tmp_path, CLEAN | {file: text})
    assert violations(root, {"b_inference": "b"}) == [f"{Path(file)}: imports {imported}"]

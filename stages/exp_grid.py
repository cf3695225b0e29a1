"""``ad-pipeline exp-grid queue|table <grid>``: a seed's ablation table as DVC experiments.

A grid file (``experiments/<name>.yaml``) names the parameter sets, one table row each, either
as ``rows: [{params: {k: v}, published: {column: value}}]`` or as ``axes: {k: [v, …]}`` (rows =
the product, first axis outermost) with ``published: [{params: {…}, column: value}]`` matched
on the given params. ``columns`` map a table column to a metric path in ``metrics_file``;
``{dataset}`` in ``targets`` / ``metrics_file`` is the grid's ``dataset`` (or ``--dataset``).

``queue`` turns row i into ``dvc exp run --queue -n <name>-<ii> -S ++k=v … <targets>`` (``--run``:
without ``--queue``, now, one after the other). ``table`` reads ``dvc exp show --json``, takes the
experiment named for each row (if its params still match), reads ``metrics_file`` from the
experiment's commit and writes the seed's layout (ours beside the published values, metrics
×100) as markdown and JSON.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from ad_pipeline.errors import ParamsError, UserError
from ad_pipeline.io import write_json


class GridRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any]
    published: dict[str, float] = {}


class PublishedRow(BaseModel):
    model_config = ConfigDict(extra="allow")  # the columns' values beside ``params``

    params: dict[str, Any]


class Grid(BaseModel):
    """One experiment grid (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""  # the file stem when loaded from a file
    title: str
    source: str = ""
    dataset: str
    targets: list[str] = ["evaluate@{dataset}"]
    metrics_file: str = "metrics/{dataset}.json"
    columns: dict[str, str]  # table column → dotted path in metrics_file (a fraction; shown ×100)
    base: dict[str, Any] = {}  # -S applied to every row
    rows: list[GridRow] = []
    axes: dict[str, list[Any]] = {}
    published: list[PublishedRow] = []
    transpose: bool = False  # markdown: one column per row (the seed's N_M table)

    @model_validator(mode="after")
    def _rows_or_axes(self) -> Grid:
        if bool(self.rows) == bool(self.axes):
            raise ValueError("give exactly one of 'rows' or 'axes'")
        return self

    def expand(self) -> list[GridRow]:
        """The rows in table order, each with its published values."""
        if self.rows:
            return list(self.rows)
        keys = list(self.axes)
        rows = []
        for values in itertools.product(*self.axes.values()):
            params = dict(zip(keys, values))
            pub = next((p for p in self.published if p.params.items() <= params.items()), None)
            rows.append(GridRow(params=params, published={k: v for k, v in (pub.model_extra if pub else {}).items()}))
        return rows

    def experiment_name(self, i: int) -> str:
        return f"{self.name}-{i:02d}"

    def resolved(self, text: str) -> str:
        return text.replace("{dataset}", self.dataset)


def load_grid(path: Path, dataset: str | None = None) -> Grid:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        grid = Grid.model_validate({"name": path.stem, **raw})
    except FileNotFoundError:
        raise UserError("experiment grid not found", path=path, fix="see experiments/*.yaml") from None
    except (yaml.YAMLError, ValidationError) as e:
        raise ParamsError(f"invalid experiment grid: {e}", path=path,
                          fix="see the format in stages/exp_grid.py") from None
    return grid.model_copy(update={"dataset": dataset}) if dataset else grid


def set_value(value: Any) -> str:
    """A value as ``-S key=<value>`` takes it (YAML flow style: h, 0.5, [1, 3, 5], 'true')."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[:-3].strip() if text.endswith("...") else text


def set_args(params: Mapping[str, Any]) -> list[str]:
    """``-S ++key=value`` each: Hydra's add-or-override, since a paper default may be absent from params.yaml."""
    return [a for k, v in params.items() for a in ("-S", f"++{k}={set_value(v)}")]


def commands(grid: Grid, *, run_now: bool = False) -> list[list[str]]:
    """One ``dvc exp run`` argv per row."""
    targets = [grid.resolved(t) for t in grid.targets]
    return [["dvc", "exp", "run", *([] if run_now else ["--queue"]), "-n", grid.experiment_name(i),
             *set_args(grid.base | row.params), *targets] for i, row in enumerate(grid.expand())]


def _experiments(node: Any) -> Iterator[dict]:
    """Every experiment record (a dict with ``name`` and ``data``) in ``dvc exp show --json``."""
    if isinstance(node, list):
        for item in node:
            yield from _experiments(item)
    elif isinstance(node, dict):
        if node.get("name") and isinstance(node.get("data"), dict):
            yield node
        for key in ("experiments", "revs"):
            yield from _experiments(node.get(key) or [])


def _lookup(data: Mapping[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


ReadFile = Callable[[str, str], Any]  # (experiment rev, path) → parsed JSON or None


def collect(grid: Grid, exp_show: Any, read_file: ReadFile | None = None) -> dict[str, Any]:
    """The table (JSON-ready) from ``dvc exp show --json`` output. ``metrics_file`` is taken from
    the experiment's metrics there, else from ``read_file(rev, metrics_file)`` (its git commit:
    ``metrics/<dataset>.json`` is an output, not a DVC metric)."""
    by_name = {e["name"]: e for e in _experiments(exp_show)}
    metrics_file = grid.resolved(grid.metrics_file)
    rows = []
    for i, row in enumerate(grid.expand()):
        name = grid.experiment_name(i)
        exp = by_name.get(name) or {}
        data = exp.get("data") or {}
        params = (data.get("params") or {}).get("params.yaml", {}).get("data", {})
        metrics = (data.get("metrics") or {}).get(metrics_file, {}).get("data")
        if metrics is None and read_file is not None and exp.get("rev"):
            metrics = read_file(exp["rev"], metrics_file)
        metrics = metrics or {}
        matches = bool(params) and all(_lookup(params, k) == v for k, v in (grid.base | row.params).items())
        ours = {}
        for col, path in grid.columns.items():
            value = _lookup(metrics, path) if matches else None
            ours[col] = None if value is None else round(100.0 * float(value), 1)
        rows.append({"experiment": name, "found": matches, "params": row.params, "ours": ours,
                     "published": row.published})
    return {"grid": grid.name, "title": grid.title, "source": grid.source, "dataset": grid.dataset,
            "metrics_file": metrics_file, "columns": list(grid.columns), "transpose": grid.transpose, "rows": rows}


def _cell(v: Any, ours: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:.1f}" if ours else f"{v:g}" if isinstance(v, float) else str(v)


def _label(params: Mapping[str, Any]) -> list[str]:
    return [_cell(v) for v in params.values()]


def render_markdown(table: Mapping[str, Any]) -> str:
    """Rows = parameter sets (or columns, when transposed); ours beside the seed's values."""
    rows = table["rows"]
    keys = list(rows[0]["params"]) if rows else []
    short = [k.rsplit(".", 1)[-1] for k in keys]
    lines = [f"### {table['title']}", ""]
    if table["source"]:
        lines += [f"{table['source']} — ours on `{table['dataset']}` (`{table['metrics_file']}`), image AUROC %.", ""]
    has_pub = any(r["published"] for r in rows)
    if table.get("transpose"):
        header = [" / ".join(short)] + [", ".join(_label(r["params"])) for r in rows]
        body = []
        for col in table["columns"]:
            body.append([col] + [_cell(r["ours"][col], True) for r in rows])
            if has_pub:
                body.append([f"{col} (seed)"] + [_cell(r["published"].get(col)) for r in rows])
    else:
        header = short + list(table["columns"]) + ([f"{c} (seed)" for c in table["columns"]] if has_pub else [])
        body = [_label(r["params"]) + [_cell(r["ours"][c], True) for c in table["columns"]] +
                ([_cell(r["published"].get(c)) for c in table["columns"]] if has_pub else []) for r in rows]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(lines) + "\n"


def _dvc(args: Sequence[str]) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"`{' '.join(args)}` failed:\n{done.stdout}{done.stderr}",
                        fix="run it by hand to see the stage's error")
    return done.stdout


def queue(path: Path, *, dataset: str | None = None, run_now: bool = False, dry_run: bool = False) -> list[str]:
    """Queue (or run) every row; returns the command lines."""
    grid = load_grid(path, dataset)
    lines = []
    for argv in commands(grid, run_now=run_now):
        lines.append(" ".join(argv))
        if not dry_run:
            _dvc(argv)
    return lines


def git_json(rev: str, path: str) -> Any:
    """JSON file ``path`` as committed in ``rev`` (an experiment's commit), or None."""
    done = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else None


def table(path: Path, *, dataset: str | None = None, out: Path = Path("experiments/results"),
          exp_show: Any = None) -> dict[str, Any]:
    """Collect the finished experiments; write ``<out>/<grid>.md`` and ``.json``."""
    grid = load_grid(path, dataset)
    if exp_show is None:
        exp_show = json.loads(_dvc(["dvc", "exp", "show", "--json"]) or "[]")
    result = collect(grid, exp_show, git_json)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{grid.name}.md").write_text(render_markdown(result))
    write_json(out / f"{grid.name}.json", result)
    return result

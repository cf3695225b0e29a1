"""Render the results report as markdown and as one offline HTML page (inline CSS, images as
relative files: no CDN, no scripts)."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

from ad_pipeline.report.published import published_for

HEADLINE = {
    "mvtec_loco": ["image_auroc_logical", "image_auroc_structural", "image_auroc_mean",
                   "spro_logical", "spro_structural", "spro_mean"],
    "default": ["image_auroc", "image_ap", "image_f1_max", "pixel_auroc", "pixel_ap", "aupro"],
}

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.2em}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f3f3}
.pub{color:#777;font-size:.85em}.warn{background:#fff3cd;border:1px solid #e0c060;padding:.4em .8em}
.figs img{max-width:360px;margin:4px;border:1px solid #ddd}.overlays img{max-width:100%;border:1px solid #ddd}
"""


def columns(result: Mapping) -> list[str]:
    """Headline metrics of the dataset's format that at least one method reports."""
    wanted = HEADLINE.get(result["format"], HEADLINE["default"])
    present = {k for res in result["methods"].values() for k in res["mean"]}
    return [k for k in wanted if k in present]


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f}"


def weights_line(result: Mapping) -> str:
    modes = {m: r["weights"] for m, r in result["methods"].items()}
    random = sorted(m for m, w in modes.items() if w != "pretrained")
    if not random:
        return "weights: pretrained for every method"
    return f"weights: RANDOM-INIT for {', '.join(random)} — numbers are not comparable to published ones"


def recipe_line(recipe: Mapping | None) -> str:
    """'paper recipe' or 'NOT the paper recipe: <setting> (<source>), …', then the budget used."""
    if recipe is None:
        return "recipe: unknown (no recipe marks in meta.json)"
    budget = ", ".join(f"{k} {v}" for k, v in recipe.get("budget", {}).items() if v is not None)
    if recipe["paper_recipe"]:
        head = "paper recipe"
    else:
        dev = recipe["deviations"]
        head = f"NOT the paper recipe: {', '.join(f'{k} ({v})' for k, v in sorted(dev.items()))}" if dev else \
            "NOT the paper recipe"
    return head + (f" — budget: {budget}" if budget else "")


def recipe_summary(result: Mapping) -> str:
    """One line per dataset: which methods did not run the paper recipe."""
    off = sorted(m for m, r in result["methods"].items() if not (r.get("recipe") or {}).get("paper_recipe", False))
    if not off:
        return "every method ran its paper recipe"
    return f"NOT the paper recipe: {', '.join(off)} (budgets / settings / weights per method below)"


def _published(result: Mapping, method: str, key: str, category: str | None = None) -> float | None:
    return published_for(result.get("published"), method, category).get(key)


def _auroc_cell(auroc: Mapping[str, float]) -> str:
    """"logical / structural / mean" for LOCO, the single image AUROC otherwise (points)."""
    keys = [k for k in ("image_auroc_logical", "image_auroc_structural", "image_auroc_mean") if k in auroc]
    return " / ".join(f"{auroc[k]:.3f}" for k in keys or ["image_auroc"] if k in auroc)


def _diff_cell(absolute: float | None, relative: float | None) -> str:
    """"abs (rel)": max |Δ| and max |Δ| / max(1, |PyTorch value|)."""
    return "—" if absolute is None else f"{absolute:.1e} ({relative:.1e})"


def export_rows(exports: Mapping[str, Mapping]) -> list[list[str]]:
    """One row per dataset × method × category × format of the export stages' tables (see EXPORT_HEAD)."""
    return [[ds, r["method"], r["category"], r["format"], _auroc_cell(r["auroc"]), _auroc_cell(r["pytorch_auroc"]),
             _diff_cell(r["max_abs_diff_map"], r["max_rel_diff_map"]),
             _diff_cell(r["max_abs_diff_score"], r["max_rel_diff_score"]), f"{r['cpu_ms_per_image']:.1f}"]
            for ds, table in exports.items() for r in table["rows"]]


def export_notes(exports: Mapping[str, Mapping]) -> list[str]:
    """Methods enabled but not exported, graphs the exporter could not convert, and formats not
    installed, per dataset."""
    notes = [f"{ds}: {m} not exported ({why})" for ds, t in exports.items() for m, why in t.get("skipped", {}).items()]
    notes += [f"{ds}: {m} has no exportable graph ({why})" for ds, t in exports.items()
              for m, why in t.get("unsupported", {}).items()]
    return notes + [f"{ds}: format(s) {', '.join(t['not_installed'])} not installed"
                    for ds, t in exports.items() if t.get("not_installed")]


EXPORT_HEAD = ["dataset", "method", "category", "format", "image AUROC (LOCO: logical / structural / mean)",
               "PyTorch model's AUROC", "max |Δ| map vs PyTorch (relative)",
               "max |Δ| score vs PyTorch (relative)", "CPU ms/image (1 thread)"]


def _md_cell(result: Mapping, method: str, key: str, vals: Mapping, category: str | None = None) -> str:
    pub = _published(result, method, key, category)
    return _fmt(vals.get(key)) + (f" (pub. {_fmt(pub)})" if pub is not None else "")


def render_markdown(results: Sequence[Mapping], exports: Mapping[str, Mapping] | None = None,
                    absent: Mapping[str, str] | None = None) -> str:
    """``absent``: dataset → what is missing and where to put it (shown instead of results)."""
    out = ["# ad-pipeline results", ""]
    for ds, missing in (absent or {}).items():
        out += [f"## {ds}: DATA ABSENT (no results)", "", "```", missing, "```", ""]
    for result in results:
        cols = columns(result)
        out += [f"## {result['dataset']} ({result['format']})", "", f"_{weights_line(result)}_", "",
                f"_{recipe_summary(result)}_", "",
                "| method | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for method, res in result["methods"].items():
            out.append(f"| {method} | " + " | ".join(_md_cell(result, method, k, res["mean"]) for k in cols) + " |")
        out.append("")
        for method, res in result["methods"].items():
            out += [f"### {result['dataset']} / {method} per category", "", f"_{recipe_line(res.get('recipe'))}_", "",
                    "| category | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
            for cat, vals in res["categories"].items():
                out.append(f"| {cat} | " + " | ".join(_md_cell(result, method, k, vals, cat) for k in cols) + " |")
            out.append("")
    if exports:
        out += ["## Exports", "", "| " + " | ".join(EXPORT_HEAD) + " |", "|---" * len(EXPORT_HEAD) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in export_rows(exports)]
        out += [""] + [f"- {note}" for note in export_notes(exports)] + [""]
    return "\n".join(out)


def _table_html(result: Mapping, rows: Mapping[str, Mapping], cols: list[str], method: str | None) -> str:
    """Rows are methods (``method`` None: means) or one method's categories."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for name, vals in rows.items():
        cells = []
        for k in cols:
            pub = _published(result, method or name, k, name if method else None)
            extra = f' <span class="pub">pub. {_fmt(pub)}</span>' if pub is not None else ""
            cells.append(f"<td>{_fmt(vals.get(k))}{extra}</td>")
        body.append(f"<tr><td>{html.escape(name)}</td>{''.join(cells)}</tr>")
    first = "method" if method is None else "category"
    return f"<table><tr><th>{first}</th>{head}</tr>{''.join(body)}</table>"


def render_html(results: Sequence[Mapping], figures: Mapping[str, Mapping[str, list[str]]], generated: str,
                exports: Mapping[str, Mapping] | None = None, absent: Mapping[str, str] | None = None) -> str:
    """``figures[dataset][category]`` lists relative PNG paths (curves first, then overlays
    ``img/cases_*`` and visualisations ``img/vis_*``, shown full width); ``absent``: dataset →
    what is missing and where to put it (shown instead of results)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>ad-pipeline results</title>"
             f"<style>{CSS}</style></head><body><h1>ad-pipeline results</h1><p>generated {html.escape(generated)}</p>"]
    parts += [f"<h2 id='{html.escape(ds)}'>{html.escape(ds)}: DATA ABSENT (no results)</h2>"
              f"<pre class='warn'>{html.escape(missing)}</pre>" for ds, missing in (absent or {}).items()]
    for result in results:
        ds = result["dataset"]
        cols = columns(result)
        warn = weights_line(result)
        cls = "warn" if "RANDOM" in warn else ""
        recipe = recipe_summary(result)
        parts.append(f"<h2 id='{html.escape(ds)}'>{html.escape(ds)} ({html.escape(result['format'])})</h2>"
                     f"<p class='{cls}'>{html.escape(warn)}</p>"
                     f"<p class='{'warn' if recipe.startswith('NOT') else ''}'>{html.escape(recipe)}</p>")
        parts.append(_table_html(result, {m: r["mean"] for m, r in result["methods"].items()}, cols, None))
        for method, res in result["methods"].items():
            parts.append(f"<details><summary>{html.escape(method)} per category</summary>"
                         f"<p class='{cls}'>weights: {html.escape(res['weights'])}</p>"
                         f"<p>{html.escape(recipe_line(res.get('recipe')))}</p>"
                         f"{_table_html(result, res['categories'], cols, method)}</details>")
        for cat, paths in figures.get(ds, {}).items():
            overlays = [p for p in paths if "/cases_" in p or "/vis_" in p]
            curves = [p for p in paths if p not in overlays]
            parts.append(f"<h3>{html.escape(ds)} / {html.escape(cat)}</h3><div class='figs'>"
                         + "".join(f"<img src='{html.escape(p)}' alt='{html.escape(p)}'>" for p in curves)
                         + "</div><div class='overlays'>"
                         + "".join(f"<img src='{html.escape(p)}' alt='{html.escape(p)}'>" for p in overlays)
                         + "</div>")
    if exports:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in EXPORT_HEAD)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in export_rows(exports))
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in export_notes(exports))
        parts.append(f"<h2 id='exports'>Exports</h2><table><tr>{head}</tr>{rows}</table><ul>{notes}</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)

"""Experiment grids: expansion into `dvc exp run -S` sets and the table collector (no DVC run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ad_pipeline.errors import ParamsError
from stages.exp_grid import Grid, collect, commands, load_grid, render_markdown, set_value

REPO = Path(__file__).resolve().parents[1]


def test_psad_bank_grid_expands_to_the_exact_set_commands():
    grid = load_grid(REPO / "experiments" / "psad_banks.yaml", dataset="synthetic_loco")
    cmds = commands(grid)
    assert len(cmds) == 8
    assert cmds[0] == ["dvc", "exp", "run", "--queue", "-n", "psad_banks-00", "-S", "++psad.memory_type=h",
                       "-S", "++psad.scale_type=none", "evaluate@synthetic_loco"]
    sets = [[a for a in c if "=" in a] for c in cmds]
    assert sets == [[f"++psad.memory_type={m}", f"++psad.scale_type={s}"] for m in ("h", "c", "p", "hcp")
                    for s in ("none", "max")]
    rows = grid.expand()
    assert rows[6].published == {"LA": 96.8, "SA": 87.6} and rows[7].published == {"LA": 98.1, "SA": 91.6}
    assert rows[1].published == {}  # the seed has no "h with AS" row
    assert commands(grid, run_now=True)[0][:5] == ["dvc", "exp", "run", "-n", "psad_banks-00"]


def test_musc_grid_rows_and_values():
    grid = load_grid(REPO / "experiments" / "musc_backbones.yaml")
    cmds = commands(grid)
    assert [c[-5:] for c in cmds[:2]] == [
        ["-S", "++musc.backbone=ViT-B-16", "-S", "++musc.image_size=256", "evaluate@mvtec_ad"],
        ["-S", "++musc.backbone=ViT-B-16", "-S", "++musc.image_size=512", "evaluate@mvtec_ad"]]
    assert {r.params["musc.backbone"] for r in grid.expand()} == {
        "ViT-B-16", "ViT-B-16-plus-240", "ViT-L-14", "ViT-L-14-336", "dino_vitbase16", "dinov2_vitb14", "dinov2_vitl14"}
    assert set_value([1, 3, 5]) == "[1, 3, 5]" and set_value("true") == "'true'" and set_value(0.125) == "0.125"


def test_every_declared_grid_loads():
    for path in sorted((REPO / "experiments").glob("*.yaml")):
        assert load_grid(path).expand(), path


def test_bad_grid_is_a_params_error(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("title: t\ndataset: d\ncolumns: {A: x}\n")
    with pytest.raises(ParamsError, match="exactly one of 'rows' or 'axes'"):
        load_grid(bad)


def _exp(name, params, metrics):
    return {"rev": "abc", "name": name, "data": {"params": {"params.yaml": {"data": params}},
                                                 "metrics": {"metrics/d.json": {"data": metrics}}}}


def test_collector_builds_the_table_from_stub_experiments():
    grid = Grid(name="g", title="T", source="seed", dataset="d", columns={"LA": "m.la", "SA": "m.sa"},
                axes={"psad.memory_type": ["h", "hcp"]},
                published=[{"params": {"psad.memory_type": "hcp"}, "LA": 98.1, "SA": 91.6}])
    shown = [{"rev": "workspace", "data": {}, "experiments": None},
             {"rev": "HEAD", "data": {}, "experiments": [
                 {"revs": [_exp("g-00", {"psad": {"memory_type": "h"}}, {"m": {"la": 0.5, "sa": 0.25}})]},
                 {"revs": [_exp("g-01", {"psad": {"memory_type": "c"}}, {"m": {"la": 0.9, "sa": 0.9}})]}]}]
    table = collect(grid, shown)
    assert [r["found"] for r in table["rows"]] == [True, False]  # g-01 ran with other params
    assert render_markdown(table) == (
        "### T\n\nseed — ours on `d` (`metrics/d.json`), image AUROC %.\n\n"
        "| memory_type | LA | SA | LA (seed) | SA (seed) |\n"
        "|---|---|---|---|---|\n"
        "| h | 50.0 | 25.0 | – | – |\n"
        "| hcp | – | – | 98.1 | 91.6 |\n")
    # metrics that are no DVC metric come from the experiment's commit
    shown[1]["experiments"][0]["revs"][0]["data"]["metrics"] = {}
    files = {("abc", "metrics/d.json"): {"m": {"la": 0.75, "sa": 0.5}}}
    assert collect(grid, shown, lambda rev, path: files.get((rev, path)))["rows"][0]["ours"] == {"LA": 75.0, "SA": 50.0}
    transposed = render_markdown(table | {"transpose": True, "source": ""})
    assert transposed == ("### T\n\n| memory_type | h | hcp |\n|---|---|---|\n| LA | 50.0 | – |\n"
                          "| LA (seed) | – | 98.1 |\n| SA | 25.0 | – |\n| SA (seed) | – | 91.6 |\n")

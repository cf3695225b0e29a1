"""The report page in a real headless browser (slow; needs Debian's chromium: apt-get install chromium).

Renders a report of a tiny run and checks from the DOM that the tables and every image are there
and the images actually decoded (naturalWidth > 0) — i.e. the page works offline as shipped."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from ad_pipeline.report.figures import overlay_figure, roc_figure
from ad_pipeline.report.render import render_html
from tests.test_report import RESULT

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

PROBE = """
<script>
window.onload = () => {
  const imgs = [...document.images];
  document.title = JSON.stringify({
    tables: document.querySelectorAll("table").length,
    images: imgs.length,
    decoded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
  });
};
</script>
"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_tables_and_images_in_chromium(tmp_path):
    (tmp_path / "img").mkdir()
    roc_figure(np.array([0, 1, 0, 1]), {"patchcore": np.array([0.1, 0.9, 0.2, 0.8])}, "roc", tmp_path / "img/roc_x.png")
    rows = [{"image": np.zeros((8, 8, 3), np.uint8), "mask": None, "map": np.random.rand(8, 8), "caption": "c"}]
    overlay_figure(rows, "cases", tmp_path / "img/cases_x.png")
    page = render_html([RESULT], {"mvtec_ad": {"bottle": ["img/roc_x.png", "img/cases_x.png"]}}, "now")
    (tmp_path / "index.html").write_text(page.replace("</body>", PROBE + "</body>"))
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", (tmp_path / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    title = done.stdout.split("<title>", 1)[1].split("</title>", 1)[0]
    import json

    seen = json.loads(title.replace("&quot;", '"'))
    assert seen["tables"] >= 3  # dataset summary + two per-category tables
    assert seen["images"] == 2 and seen["decoded"] == 2

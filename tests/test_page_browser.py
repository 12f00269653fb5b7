"""The retrieval page rendered by a real browser (headless Chromium, 1400 px wide): every tile is
the same box and the tiles line up in columns, whatever the pictures' shapes. Skipped, with the
reason, where no Chromium is installed (Debian: apt-get install chromium)."""
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from evaluation.page import Hit, QueryResult, Thumbnails, write_page

BROWSER = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")
                if shutil.which(b)), None)
# Written into the page copy the browser opens: each tile's box and its picture's, after load.
PROBE = """<script>
window.addEventListener("load", () => {
  const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; };
  const tiles = [...document.querySelectorAll(".hits")].map(h => [...h.querySelectorAll("figure")]
      .map(f => ({tile: box(f), img: box(f.querySelector("img"))})));
  const out = document.createElement("pre"); out.id = "probe";
  out.textContent = JSON.stringify(tiles); document.body.appendChild(out);
});
</script>"""


def render(page, tmp_path, width=1400):
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    # The flags a sandboxed, offline machine needs: no sandbox as root, no GPU, no background
    # connections (each would be refused), a fresh profile.
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={width},1000",
           "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the browser printed no probe ({dom[:300]!r})"
    return json.loads(found.group(1).replace("&quot;", '"'))


@pytest.mark.skipif(BROWSER is None, reason="no Chromium on PATH (apt-get install chromium)")
def test_tiles_are_one_box_and_line_up_whatever_the_pictures_shapes(tmp_path):
    shapes = [(100, 100), (30, 400), (400, 30), (100, 100), (60, 500), (100, 100), (500, 80),
              (100, 100), (100, 100), (20, 600), (100, 100), (100, 100)]
    paths = []
    for i, (w, h) in enumerate(shapes):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(np.full((h, w, 3), 40 * (i % 6), np.uint8)).save(paths[-1])
    labels = ["a short one", "a label long enough to wrap onto several lines of the caption " * 2]
    hits = [Hit(r, 1 - r / 20, p, labels[r % 2], r == 3) for r, p in enumerate(paths, 1)]
    out = tmp_path / "page"
    thumbs = Thumbnails(out, 128)
    page = write_page(out, [QueryResult("text", "a query", "truth", hits)], ["sheet.png"], thumbs, "t")

    [tiles] = render(page, tmp_path)
    assert len(tiles) == len(shapes)
    for t in tiles:   # the picture is contained in a fixed square, whatever its shape
        assert t["img"][2:] == [128, 128]
        assert t["tile"][2] == tiles[0]["tile"][2]
    rows: dict[float, list[float]] = {}
    for t in tiles:
        rows.setdefault(t["tile"][1], []).append(t["tile"][0])
    lefts = list(rows.values())
    per_row = len(lefts[0])
    assert per_row >= 5, f"only {per_row} tiles of 138 px fit a row of a 1400 px page"
    # Every row full but the last, and each row's tiles in the first row's columns.
    assert [len(r) for r in lefts] == [per_row] * (len(tiles) // per_row) + \
        ([len(tiles) % per_row] if len(tiles) % per_row else [])
    for r in lefts:
        assert r == lefts[0][:len(r)]

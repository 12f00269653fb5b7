"""retrieve.py end to end on a checkpoint trained here: the page, the sheets, ground truth,
bad queries; and the search and page building blocks."""
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import InputError
from evaluation.neighborhood import top_k
from evaluation.page import Hit, QueryResult, Thumbnails, contact_sheet, read_query_file
from conftest import cli, one_line_error, train_tiny


@pytest.fixture(scope="module")
def trained(module_tmp):
    manifest, work, best = train_tiny(module_tmp("retrieve"), seed=4)
    test = [json.loads(line) for line in manifest.read_text().splitlines()]
    return manifest, best, [r for r in test if r["split"] == "test"]


class Page(HTMLParser):
    """The page's img sources, and per section the classes of its result figures."""

    def __init__(self):
        super().__init__()
        self.sources, self.sections = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.sources.append(attrs["src"])
        elif tag == "section":
            self.sections.append([])
        elif tag == "figure":
            self.sections[-1].append(attrs.get("class") or "")


def test_page_sheets_and_ground_truth(trained, tmp_path):
    manifest, best, test = trained
    out = tmp_path / "r"
    queries = tmp_path / "queries.txt"
    queries.write_text(f"storm thunder hurricane\n\n{test[1]['texts'][0]}\n")
    k = len(test)   # the whole gallery, so the ground truth is always on the page
    image = manifest.parent / test[3]["image"]
    result = cli("retrieve.py", "--checkpoint", best, "--query", test[0]["texts"][0],
                 "--queries", queries, "--image", image, "--k", k, "--out", out, "--workers", "0")

    page = Page()
    page.feed((out / "index.html").read_text())
    assert page.sources and all(not Path(src).is_absolute() for src in page.sources)
    assert all((out / src).is_file() for src in page.sources)
    for src in page.sources:
        with Image.open(out / src) as thumb:
            assert max(thumb.size) == 128    # 32 px images are scaled up to the tile
    assert [len(s) for s in page.sections] == [k] * 4
    # Text queries equal to a test text mark its image; the free query marks nothing; the
    # test image marks its one text.
    assert [s.count("correct") for s in page.sections] == [1, 0, 1, 1]
    for n in range(1, 5):
        with Image.open(out / "sheets" / f"query_{n:03d}.png") as sheet:
            assert sheet.format == "PNG" and sheet.width > 128

    blocks = result.out.split("\nquery ")[1:]
    assert len(blocks) == 4
    for block in blocks:
        scores = [float(line.split()[1]) for line in block.splitlines()[2:2 + k]]
        assert len(scores) == k and scores == sorted(scores, reverse=True)
    assert blocks[0].count("[GT]") == 1 and test[0]["id"] in blocks[0].split("[GT]")[0].splitlines()[-1]
    assert "no ground truth" in blocks[1] and "[GT]" not in blocks[1]
    assert blocks[3].count("[GT]") == 1
    assert f"{test[3]['id']}: " in next(line for line in blocks[3].splitlines() if "[GT]" in line)


def test_bad_queries_give_one_line_errors(trained, tmp_path):
    _, best, _ = trained
    run = ["retrieve.py", "--checkpoint", best, "--out", tmp_path / "r", "--workers", "0"]
    not_image = tmp_path / "photo.jpg"
    not_image.write_text("plain text")
    one_line_error(cli(*run, "--image", not_image, check=False), str(not_image),
                   "query image cannot be read")
    one_line_error(cli(*run, "--image", tmp_path / "absent.png", check=False), "absent.png")
    one_line_error(cli(*run, "--query", "xylophone zeppelin quokka", check=False),
                   "none of its words", "vocabulary")
    one_line_error(cli(*run, "--query", "it is on the", check=False), "leaves no token")
    one_line_error(cli(*run, "--queries", tmp_path / "none.txt", check=False), "none.txt")
    one_line_error(cli("retrieve.py", "--checkpoint", tmp_path / "no.pt", "--query", "storm",
                       check=False), "checkpoint not found")
    assert cli("retrieve.py", "--checkpoint", best, check=False).code == 2   # no query at all
    a_file = tmp_path / "taken"
    a_file.write_text("")
    taken = cli("retrieve.py", "--checkpoint", best, "--query", "storm", "--out", a_file, check=False)
    assert taken.code == 2 and "is a file: pass a folder" in taken.err, taken.err
    assert not (tmp_path / "r" / "index.html").exists()


# --- building blocks --------------------------------------------------------------------------

@pytest.mark.parametrize("block", [1, 4, 1000])
def test_top_k_matches_a_full_sort(block):
    g = torch.Generator().manual_seed(1)
    queries, gallery = torch.randn(9, 5, generator=g), torch.randn(30, 5, generator=g)
    scores, index = top_k(queries, gallery, 6, block)
    for q in range(9):
        full = [float(queries[q] @ gallery[j]) for j in range(30)]
        order = sorted(range(30), key=lambda j: -full[j])[:6]
        assert index[q].tolist() == order
        assert scores[q].tolist() == pytest.approx([full[j] for j in order], abs=1e-6)
    assert top_k(queries, gallery[:3], 10, block)[1].shape == (9, 3)


@pytest.mark.parametrize("block", [1, 4, 1000])
def test_top_k_without_self_matches_a_full_sort(block):
    items = torch.randn(12, 5, generator=torch.Generator().manual_seed(2))
    scores, index = top_k(items, items, 4, block, exclude_self=True)
    for q in range(12):
        full = {j: float(items[q] @ items[j]) for j in range(12) if j != q}
        order = sorted(full, key=lambda j: -full[j])[:4]
        assert index[q].tolist() == order
        assert scores[q].tolist() == pytest.approx([full[j] for j in order], abs=1e-6)
    assert top_k(items, items, 50, block, exclude_self=True)[1].shape == (12, 11)
    with pytest.raises(ValueError, match="exclude_self"):
        top_k(items, items[:5], 2, block, exclude_self=True)


def test_query_file_skips_blank_lines_and_rejects_empty_files(tmp_path):
    path = tmp_path / "q.txt"
    path.write_text("  first query \n\n second\n")
    assert read_query_file(path) == ["first query", "second"]
    path.write_text("\n \n")
    with pytest.raises(InputError, match="holds no query"):
        read_query_file(path)


def test_thumbnails_and_contact_sheet(tmp_path):
    src = tmp_path / "wide.png"
    Image.fromarray(np.zeros((50, 200, 3), np.uint8)).save(src)
    thumbs = Thumbnails(tmp_path / "out", 64)
    rel = thumbs(str(src))
    assert thumbs(str(src)) == rel     # written once
    with Image.open(tmp_path / "out" / rel) as t:
        assert t.size == (64, 16)
    broken = thumbs(str(tmp_path / "missing.png"))
    with Image.open(tmp_path / "out" / broken) as t:
        assert t.size == (64, 64)
    hits = [Hit(r, 1.0 - r / 10, str(src), f"id{r}", r == 2) for r in range(1, 8)]
    sheet = contact_sheet(QueryResult("text", "a query", "", hits), thumbs, tmp_path / "s.png")
    with Image.open(sheet) as img:
        assert img.width == 8 + 5 * (64 + 8)      # five columns
        pixels = np.asarray(img.convert("RGB"))
    assert (pixels == (26, 158, 58)).all(axis=2).any()   # the ground truth frame

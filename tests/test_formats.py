"""Articles with several pictures in JSONL ("images": [...]) and open_clip-style CSV files."""
import json
from pathlib import Path

import pytest

from cli import parser
from data.datasets.load import load_items
from conftest import input_error
from data.datasets.items import Item, assign_validation
from data.datasets.readers import detect_format, load_dataset, read_jsonl
from data.datasets.tabular import CsvKeys, read_csv


def jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


# --- JSONL "images" ------------------------------------------------------------------------

def test_an_article_with_several_images_is_one_item_per_image_in_one_group(tmp_path):
    path = jsonl(tmp_path / "m.jsonl", [
        {"id": "art", "images": ["a.jpg", "b.jpg", "c.jpg"], "text": "One story.", "split": "test",
         "label": "news"},
        {"id": "solo", "images": ["d.jpg"], "text": "Alone."},
        {"id": "plain", "image": "e.jpg", "texts": ["Two.", "Texts."]},
    ])
    items = read_jsonl(path)
    assert [it.id for it in items] == ["art@0", "art@1", "art@2", "solo", "plain"]
    article = items[:3]
    assert [Path(it.image).name for it in article] == ["a.jpg", "b.jpg", "c.jpg"]
    assert all(it.texts == ("One story.",) and it.split == "test" and it.label == "news"
               for it in article)
    assert len({it.group for it in article}) == 1 and article[0].group is not None
    assert items[3].group is None and items[4].group is None    # one image: no group needed


@pytest.mark.parametrize("record, words", [
    ({"id": "x", "image": "a.jpg", "images": ["b.jpg"], "text": "t"}, ['both "image" and "images"']),
    ({"id": "x", "images": [], "text": "t"}, ['"images" must be a non-empty list']),
    ({"id": "x", "images": "a.jpg", "text": "t"}, ['"images" must be a non-empty list']),
    ({"id": "x", "images": ["a.jpg", 3], "text": "t"}, ['"images" holds 3']),
    ({"id": "x", "images": ["a.jpg", ""], "text": "t"}, ["holds ''"]),
    ({"id": "x", "images": ["a.jpg", "a.jpg"], "text": "t"}, ["'a.jpg' twice"]),
    ({"id": "x", "text": "t"}, ['no "image" path (or "images" list)']),
])
def test_bad_images_lists_are_one_line_naming_the_line(tmp_path, record, words):
    path = jsonl(tmp_path / "m.jsonl", [{"id": "0", "image": "z.jpg", "text": "fine"}, record])
    msg = input_error(read_jsonl, path)
    assert "m.jsonl:2" in msg
    for w in words:
        assert w in msg


def test_article_item_ids_that_collide_are_refused(tmp_path):
    path = jsonl(tmp_path / "m.jsonl", [{"id": "a@1", "image": "z.jpg", "text": "x"},
                                        {"id": "a", "images": ["p.jpg", "q.jpg"], "text": "y"}])
    assert "duplicate id 'a@1'" in input_error(read_jsonl, path)


def test_the_validation_slice_keeps_an_article_whole():
    items = [Item(f"{g}@{k}", f"/{g}{k}.jpg", ("t",), "train", group=f"g{g}")
             for g in range(20) for k in range(3)]
    items += [Item(f"t{i}", f"/t{i}.jpg", ("t",), "test") for i in range(5)]
    for seed in range(5):
        out = assign_validation(items, None, seed)
        val = [it for it in out if it.split == "val"]
        groups = {it.group for it in val}
        assert len(val) >= 5 and len(val) == 3 * len(groups)   # whole articles only
    # Without groups the slice is exactly as before: n items.
    plain = [Item(str(i), f"/{i}.jpg", ("t",), "train") for i in range(30)] + items[-5:]
    assert sum(it.split == "val" for it in assign_validation(plain, None, 0)) == 5


# --- CSV -----------------------------------------------------------------------------------

def test_csv_default_open_clip_columns_optional_split_id_label(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text('filepath,title,split,label\n'
                    'img/a.jpg,"A caption, with a comma",test,cats\n'
                    '\n'
                    '/abs/b.jpg,"Two\nlines ""quoted""",,\n'
                    'c.jpg,   ,train,\n', encoding="utf-8")
    assert detect_format(path) == "csv" and detect_format(tmp_path / "d.tsv") == "csv"
    items = read_csv(path)
    assert items == [
        Item("2", str(tmp_path / "img" / "a.jpg"), ("A caption, with a comma",), "test", "cats"),
        Item("4", "/abs/b.jpg", ('Two\nlines "quoted"',), "train", None),
    ]
    assert "dropped 1 empty captions (first: " in capsys.readouterr().out


def test_csv_keys_separators_and_the_shared_flags(tmp_path):
    tsv = tmp_path / "d.tsv"
    tsv.write_text("id\tpath\tcaption\nx\ta.jpg\tHello there.\n", encoding="utf-8")
    items = read_csv(tsv, keys=CsvKeys("path", "caption"))
    assert [(it.id, it.texts) for it in items] == [("x", ("Hello there.",))]
    semi = tmp_path / "d.txt"
    semi.write_text("path;caption;split\na.jpg;Hello;train\nb.jpg;World;test\nc.jpg;Again;train\n",
                    encoding="utf-8")
    args = parser("").parse_args(["--dataset", str(semi), "--dataset-format", "csv",
                                  "--csv-img-key", "path", "--csv-caption-key", "caption",
                                  "--csv-separator", ";"])
    assert sorted(it.split for it in load_items(args)) == ["test", "train", "val"]
    tab = read_csv(tmp_path / "d.tsv", keys=CsvKeys("path", "caption", "tab"))
    assert tab == items


@pytest.mark.parametrize("content, keys, words", [
    ("", CsvKeys(), ["empty file", "header"]),
    ("image,caption\na.jpg,x\n", CsvKeys(), ["d.csv:1", "'filepath' or 'title'", "--csv-image-key",
                                             "'image', 'caption'"]),
    ("filepath,title\na.jpg,x,extra\n", CsvKeys(), ["d.csv:2", "3 fields", "header has 2"]),
    ("filepath,title\na.jpg,x\nb.jpg\n", CsvKeys(), ["d.csv:3", "1 fields"]),
    ("filepath,title\n,x\n", CsvKeys(), ["d.csv:2", "empty 'filepath'"]),
    ("filepath,title,split\na.jpg,x,dev\n", CsvKeys(), ["d.csv:2", "'dev'", "train, val, test"]),
    ('filepath,title\na.jpg,"x"y\n', CsvKeys(), ["d.csv:2", "not readable as CSV", "quoting"]),
    ("id,filepath,title\n1,a.jpg,x\n1,b.jpg,y\n", CsvKeys(), ["duplicate id '1'"]),
    ("filepath,title\na.jpg,x\n", CsvKeys(separator=";;"), ["--csv-separator"]),
    # Read from the last one, the captions became the labels.
    ("filepath,title,split,title\na.jpg,x,train,y\n", CsvKeys(),
     ["d.csv:1", "column 'title' twice"]),
    ("filepath,title, filepath\na.jpg,x,b.jpg\n", CsvKeys(), ["d.csv:1", "'filepath' twice"]),
])
def test_malformed_csv_is_one_line_naming_the_row(tmp_path, content, keys, words):
    path = tmp_path / "d.csv"
    path.write_text(content, encoding="utf-8")
    msg = input_error(read_csv, path, keys=keys)
    for w in words:
        assert w in msg, msg


def test_a_quoted_caption_longer_than_csvs_own_field_limit_is_read(tmp_path):
    caption = "word, " * 40_000          # 240,000 characters, commas and all
    path = tmp_path / "d.csv"
    path.write_text(f'filepath,title\na.jpg,"{caption}"\n', encoding="utf-8")
    assert read_csv(path)[0].texts == (caption,)


def test_csv_through_load_dataset_needs_training_items(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("filepath,title,split\na.jpg,x,test\n", encoding="utf-8")
    assert "no training items" in input_error(load_dataset, path)


@pytest.mark.slow
def test_a_csv_dataset_trains_and_evaluates_with_its_keys_from_the_checkpoint(tmp_path):
    from conftest import RUN, cli
    from demo.synthetic import generate_synthetic
    from pipeline import TINY_TRAIN
    manifest = generate_synthetic(tmp_path / "data", n_items=80, image_size=32, seed=4)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    table = tmp_path / "data" / "pairs.txt"
    quote = lambda t: '"' + t.replace('"', '""') + '"'  # noqa: E731
    table.write_text("caption;path;split\n" + "".join(
        f"{quote(r['texts'][0] if 'texts' in r else r['text'])};{r['image']};{r['split']}\n"
        for r in rows), encoding="utf-8")
    flags = ["--dataset", table, "--dataset-format", "csv", "--csv-image-key", "path",
             "--csv-caption-key", "caption", "--csv-separator", ";", "--work-dir", tmp_path / "w",
             "--workers", "1"]
    cli("train_doc2vec.py", *flags, "--min-count", "2", "--epochs", "10")
    cli("extract_doc2vec_vectors.py", *flags)
    cli("knn_document_features.py", *flags, "--k", "10")
    cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", *flags, *TINY_TRAIN,
        "--epochs", "1")
    # Evaluation finds the CSV columns and separator in the checkpoint's record.
    out = cli("evaluate_retrieval.py", "--checkpoint", tmp_path / "w" / "models" / RUN / "best.pt",
              "--out", tmp_path / "m.json", "--device", "cpu", "--workers", "0").out
    n_test = sum(r["split"] == "test" for r in rows)
    assert f"{n_test} images, {n_test} texts" in out


def test_an_articles_items_share_a_group_and_are_never_each_others_neighbours_or_negatives(tmp_path):
    import numpy as np
    import torch
    from data.datasets.items import documents, item_groups
    from training.data import PairDataset
    from training.neighbors import NeighborSampler
    path = jsonl(tmp_path / "m.jsonl", [
        {"id": "art", "images": ["a.jpg", "b.jpg", "c.jpg"], "text": "One story."},
        {"id": "x", "image": "x.jpg", "text": "Other."},
        {"id": "y", "image": "y.jpg", "text": "Another."},
    ])
    items = read_jsonl(path)
    groups = item_groups(items)
    assert groups[0] == groups[1] == groups[2] and len(set(groups.tolist())) == 3
    docs = documents(items)
    # Each article picture's nearest documents are its mates (same text, a tiny distance).
    n = len(docs)
    order = [[i] + [j for j in range(n) if j != i] for i in range(n)]
    knn = {"ids": [d.id for d in docs], "neighbors": np.array(order),
           "distances": np.array([[0.0] + [0.01 * (k + 1) for k in range(n - 1)]] * n, dtype=np.float32)}
    sampler = NeighborSampler(knn, docs, pool=10, groups=groups)
    for row in range(3):
        start = sampler.offsets[row]
        assert set(sampler.candidates[start:start + sampler.counts[row]].tolist()) == {3, 4}
    ds = PairDataset([d.item for d in docs], [[1, 2]] * n, lambda i: torch.zeros(3, 2, 2), groups)
    ids = [ds[i]["image_id"] for i in range(n)]
    assert ids[0] == ids[1] == ids[2] and len(set(ids)) == 3   # what the objective compares

"""Dataset readers (JSONL, Politics, Karpathy), the seeded validation slice, and their errors."""
import json
import pickle
from pathlib import Path

import pytest

from cli import parser
from data.datasets.load import load_items
from conftest import input_error
from common.errors import InputError
from data.datasets.items import Item, assign_validation, documents
from data.datasets.readers import (detect_format, load_dataset, read_jsonl, read_karpathy,
                                   read_politics)


def write_lines(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def dump(obj, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


# --- JSONL ---------------------------------------------------------------------------------

def test_jsonl_fields_defaults_and_image_paths(tmp_path):
    path = write_lines(tmp_path / "d" / "m.jsonl", [
        {"id": "x1", "image": "img/a.jpg", "texts": ["First text.", "Second text."], "split": "test",
         "label": "sports"},
        {"image": "/abs/b.jpg", "text": "Only one."},
        "",
        {"id": 7, "image": "../c.jpg", "texts": ["Seven."], "split": "val", "label": 3},
    ])
    items = read_jsonl(path)
    d = str(tmp_path / "d")
    assert items == [
        Item("x1", f"{d}/img/a.jpg", ("First text.", "Second text."), "test", "sports"),
        Item("2", "/abs/b.jpg", ("Only one.",), "train", None),   # id: the line number
        Item("7", str(tmp_path / "c.jpg"), ("Seven.",), "val", "3"),
    ]
    root = tmp_path / "elsewhere"
    moved = read_jsonl(path, root)
    assert [it.image for it in moved] == [f"{root}/img/a.jpg", "/abs/b.jpg", str(tmp_path / "c.jpg")]


def test_jsonl_empty_texts_are_dropped_and_counted(tmp_path, capsys):
    path = write_lines(tmp_path / "m.jsonl", [
        {"id": "a", "image": "a.jpg", "texts": ["Kept.", "  ", ""]},
        {"id": "b", "image": "b.jpg", "text": ""},
        {"id": "c", "image": "c.jpg", "text": "Kept too."},
    ])
    items = read_jsonl(path)
    assert [(it.id, it.texts) for it in items] == [("a", ("Kept.",)), ("c", ("Kept too.",))]
    assert "dropped 3 empty texts" in capsys.readouterr().out


@pytest.mark.parametrize("line, words", [
    ('{"id": "a", "image": "a.jpg", "text": "ok"', ["m.jsonl:2", "not valid JSON", "fix"]),
    ('{"id": "a", "text": "no image"}', ["m.jsonl:2", '"image"', "add"]),
    ('{"id": "a", "image": "a.jpg"}', ["m.jsonl:2", '"text"', "add"]),
    ('["a", "b"]', ["m.jsonl:2", "JSON object"]),
    ('{"id": "z", "image": "z.jpg", "text": "t", "split": "dev"}',
     ["m.jsonl:2", "'dev'", "train, val, test"]),
    ('{"id": "a", "image": "z.jpg", "texts": [3]}', ["m.jsonl:2", "not a string"]),
    ('{"id": "0", "image": "a2.jpg", "text": "dup"}', ["m.jsonl", "duplicate id '0'", "unique"]),
])
def test_jsonl_bad_lines(tmp_path, line, words):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "0", "image": "a.jpg", "text": "fine"}\n' + line + "\n")
    msg = input_error(read_jsonl, path)
    for w in words:
        assert w in msg


def test_document_ids_of_several_texts_cannot_collide_with_an_item_id(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [{"id": "a", "image": "a.jpg", "texts": ["x", "y"]},
                                              {"id": "a#1", "image": "b.jpg", "text": "z"}])
    msg = input_error(read_jsonl, path)
    assert "items 'a' and 'a#1' both make document id 'a#1'" in msg and "rename" in msg
    # A '#' alone collides with nothing.
    write_lines(path, [{"id": "a", "image": "a.jpg", "texts": ["x", "y"]},
                       {"id": "a#2", "image": "b.jpg", "text": "z"}])
    assert [d.id for d in documents(read_jsonl(path))] == ["a#0", "a#1", "a#2"]


def test_jsonl_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"id": "a", "image": "a.jpg", "text": "t"}\n', encoding="utf-8-sig")
    assert [it.id for it in read_jsonl(path)] == ["a"]


def test_jsonl_unreadable_file(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"id": "0", "image": "a.jpg", "text": "caf\xe9"}\n')
    assert "m.jsonl: unreadable" in input_error(read_jsonl, path)


def test_jsonl_line_separators_inside_strings_are_text(tmp_path):
    path = tmp_path / "m.jsonl"
    rec = {"id": "a", "image": "a.jpg", "text": "one\u2028two\u0085three"}
    path.write_text(json.dumps(rec, ensure_ascii=False) + "\n", encoding="utf-8")
    assert read_jsonl(path)[0].texts == ("one\u2028two\u0085three",)


# --- Politics ------------------------------------------------------------------------------

def politics_db(folder: Path, split_name: str = "train_test_paths.pickle") -> Path:
    dump([("img/a.jpg", "Text a."), ("img/b.jpg", "Text b."), ("img/c.jpg", "Text c."),
          ("img/d.jpg", "   "), ("img/unsplit.jpg", "Nobody lists me.")], folder / "db.pickle")
    dump({"train": ["img/a.jpg", "img/b.jpg", "img/d.jpg"], "test": ["img/c.jpg"]}, folder / split_name)
    return folder


@pytest.mark.parametrize("split_name", ["train_test_paths.pickle", "train_test_pths.pickle"])
@pytest.mark.parametrize("by_file", [False, True])
def test_politics_db_pickle(tmp_path, capsys, split_name, by_file):
    folder = politics_db(tmp_path / "pol", split_name)
    items = read_politics(folder / "db.pickle" if by_file else folder)
    assert items == [Item("img/a.jpg", f"{folder}/img/a.jpg", ("Text a.",), "train"),
                     Item("img/b.jpg", f"{folder}/img/b.jpg", ("Text b.",), "train"),
                     Item("img/c.jpg", f"{folder}/img/c.jpg", ("Text c.",), "test")]
    out = capsys.readouterr().out
    assert "dropped 1 empty texts" in out and "left out 1 items" in out
    assert read_politics(folder, tmp_path / "root")[0].image == str(tmp_path / "root/img/a.jpg")


def complete_db(folder: Path) -> Path:
    long_text = "word " * 120  # 600 characters
    db = {"left": {"guns": [{"content_text": long_text + "one", "local_path": "l/1.jpg", "url": "u"},
                            {"content_text": "short", "local_path": "l/2.jpg"}]},
          "right": {"tax": [{"content_text": long_text + "three", "local_path": "r/3.jpg"}],
                    "guns": [{"content_text": "x" * 500, "local_path": "r/4.jpg"}]}}
    dump(db, folder / "complete_db.pickle")
    dump({"train": ["l/1.jpg", "l/2.jpg", "r/4.jpg"], "test": ["r/3.jpg"]},
         folder / "train_test_paths.pickle")
    return folder


def test_politics_complete_db_with_and_without_the_length_filter(tmp_path, capsys):
    folder = complete_db(tmp_path / "pol")
    items = read_politics(folder)   # no db.pickle: complete_db.pickle is found
    assert [(it.id, it.split) for it in items] == [("l/1.jpg", "train"), ("r/3.jpg", "test")]
    assert "dropped 2 items of 500 characters or fewer" in capsys.readouterr().out
    everything = read_politics(folder / "complete_db.pickle", min_chars=0)
    assert [it.id for it in everything] == ["l/1.jpg", "l/2.jpg", "r/4.jpg", "r/3.jpg"]
    assert everything[1].texts == ("short",)
    assert [it.id for it in read_politics(folder, min_chars=5)] == ["l/1.jpg", "r/4.jpg", "r/3.jpg"]


def test_politics_repeated_paths_are_counted(tmp_path, capsys):
    folder = politics_db(tmp_path / "pol")
    dump([("img/a.jpg", "Old a."), ("img/b.jpg", "Text b."), ("img/a.jpg", "Text a."),
          ("img/c.jpg", "Text c."), ("img/d.jpg", "Text d.")], folder / "db.pickle")
    assert read_politics(folder)[0].texts == ("Text a.",)
    assert "1 image paths appear more than once in db.pickle: the last text of each is kept " \
           "(first: img/a.jpg)" in capsys.readouterr().out


def test_politics_errors(tmp_path):
    folder = politics_db(tmp_path / "pol")
    dump({"train": ["img/a.jpg", "img/zzz.jpg"], "test": ["img/c.jpg"]}, folder / "train_test_paths.pickle")
    msg = input_error(read_politics, folder)
    assert "train_test_paths.pickle" in msg and "'img/zzz.jpg'" in msg and "db.pickle" in msg

    dump({"train": ["img/a.jpg"], "test": ["img/a.jpg"]}, folder / "train_test_paths.pickle")
    assert "duplicate id 'img/a.jpg'" in input_error(read_politics, folder)

    dump({"train": ["img/a.jpg"]}, folder / "train_test_paths.pickle")
    assert "'train' and 'test'" in input_error(read_politics, folder)
    dump({"train": ["img/a.jpg"], "test": None}, folder / "train_test_paths.pickle")
    assert "'train' and 'test' path lists" in input_error(read_politics, folder)

    (folder / "train_test_paths.pickle").unlink()
    assert "train_test_paths.pickle: not found" in input_error(read_politics, folder)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "db.pickle: not found" in input_error(read_politics, empty)


@pytest.mark.parametrize("content", [b"", b"garbage, not a pickle", pickle.dumps([("a", "b")])[:-5],
                                     b"\x80\x04\x95\xff\xff\xff\xff"])
def test_politics_unreadable_pickle(tmp_path, content):
    folder = politics_db(tmp_path / "pol")
    (folder / "db.pickle").write_bytes(content)
    msg = input_error(read_politics, folder)
    assert "db.pickle: unreadable pickle" in msg and "re-create" in msg


def test_politics_wrong_layouts(tmp_path):
    folder = politics_db(tmp_path / "pol")
    dump([("a", "b", "c")], folder / "db.pickle")
    assert "entry 0 is not an (image_path, text) pair" in input_error(read_politics, folder)
    dump([("img/a.jpg", "t"), (["img/b.jpg"], "t")], folder / "db.pickle")
    assert "entry 1 is not an (image_path, text) pair" in input_error(read_politics, folder)
    dump({"left": ["not", "a", "dict"]}, folder / "db.pickle")
    assert "complete_db layout" in input_error(read_politics, folder)
    dump("text", folder / "db.pickle")
    assert "expected a list" in input_error(read_politics, folder)


# --- Karpathy ------------------------------------------------------------------------------

def karpathy(path: Path) -> Path:
    def img(i, split, fp="val2014"):
        return {"filepath": fp, "filename": f"im{i}.jpg", "imgid": i, "cocoid": 100 + i, "split": split,
                "sentences": [{"raw": f"Caption {j} of image {i}.", "tokens": []} for j in range(5)]}
    images = [img(0, "train"), img(1, "restval"), img(2, "val"), img(3, "test", fp="")]
    images[1]["sentences"][2]["raw"] = " "
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def test_karpathy_split_paths_and_captions(tmp_path, capsys):
    path = karpathy(tmp_path / "dataset_coco.json")
    items = read_karpathy(path, tmp_path / "coco")
    assert [(it.id, it.split) for it in items] == [("100", "train"), ("101", "train"), ("102", "val"),
                                                   ("103", "test")]
    assert items[0].image == str(tmp_path / "coco/val2014/im0.jpg")
    assert items[3].image == str(tmp_path / "coco/im3.jpg")
    assert items[0].texts == tuple(f"Caption {j} of image 0." for j in range(5))
    assert len(items[1].texts) == 4 and "dropped 1 empty captions" in capsys.readouterr().out
    assert read_karpathy(path)[0].image == str(tmp_path / "val2014/im0.jpg")
    docs = documents(items)
    assert [d.id for d in docs] == [f"100#{j}" for j in range(5)] + [f"101#{j}" for j in range(4)]
    assert [d.id for d in documents(items, ["test"])] == [f"103#{j}" for j in range(5)]


def test_karpathy_errors(tmp_path):
    path = tmp_path / "dataset_flickr30k.json"
    path.write_text('{"images": [{"filename": "a.jpg", "split": "train"}]}')
    assert "images[0]" in input_error(read_karpathy, path)
    path.write_text('[1, 2]')
    assert "not a Karpathy split file" in input_error(read_karpathy, path)
    path.write_text('{"images": [')
    assert "not a Karpathy split file" in input_error(read_karpathy, path)


# --- Format detection, load_dataset, validation slice --------------------------------------

def test_format_detection_and_missing_dataset(tmp_path):
    assert detect_format(tmp_path) == "politics"
    assert detect_format(tmp_path / "db.pickle") == "politics"
    assert detect_format(tmp_path / "m.jsonl") == "jsonl"
    assert detect_format(tmp_path / "dataset_coco.json") == "karpathy"
    assert "--dataset-format" in input_error(detect_format, tmp_path / "data.txt")
    msg = input_error(load_dataset, tmp_path / "nope.jsonl")
    assert str(tmp_path / "nope.jsonl") in msg and "not found" in msg
    txt = write_lines(tmp_path / "data.txt", [{"id": "a", "image": "a.jpg", "text": "t"}])
    assert [it.id for it in load_dataset(txt, "jsonl")] == ["a"]
    test_only = write_lines(tmp_path / "t.jsonl",
                            [{"id": "a", "image": "a.jpg", "text": "t", "split": "test"}])
    assert "no training items" in input_error(load_dataset, test_only)


def _splits(n_train: int, n_test: int, n_val: int = 0) -> list[Item]:
    splits = ["train"] * n_train + ["test"] * n_test + ["val"] * n_val
    return [Item(str(i), f"/{i}.jpg", ("t",), s) for i, s in enumerate(splits)]


def test_validation_slice_is_seeded_sized_and_from_train_only():
    items = _splits(50, 8)
    a = assign_validation(items, None, seed=0)
    val = [it.id for it in a if it.split == "val"]
    assert len(val) == 8                                        # as large as test
    assert all(items[int(i)].split == "train" for i in val)     # never test
    assert [it.split for it in a if int(it.id) >= 50] == ["test"] * 8
    assert assign_validation(items, None, seed=0) == a          # same on every call
    assert assign_validation(list(items), None, seed=1) != a    # the seed matters
    assert sum(it.split == "val" for it in assign_validation(items, 13, 0)) == 13
    assert assign_validation(items, 0, 0) == items
    marked = _splits(50, 8, 3)
    assert assign_validation(marked, 20, 0) == marked           # items marked val: no slice
    assert assign_validation(_splits(50, 0), None, 0) == _splits(50, 0)
    assert "--val-size" in input_error(assign_validation, items, 50, 0)


def test_validation_slice_through_the_shared_flags(tmp_path):
    recs = [{"id": str(i), "image": f"{i}.jpg", "text": f"t{i}", "split": "test" if i % 5 == 0 else "train"}
            for i in range(40)]
    path = write_lines(tmp_path / "m.jsonl", recs)
    args = parser("x").parse_args(["--dataset", str(path)])
    first = load_items(args)
    assert sum(it.split == "val" for it in first) == 8 and load_items(args) == first
    args = parser("x").parse_args(["--dataset", str(path), "--val-size", "3", "--seed", "4"])
    assert sum(it.split == "val" for it in load_items(args)) == 3


# --- Politics: which file a folder is read from --------------------------------------------

def test_politics_folder_with_both_files_reads_complete_db_with_its_filter(tmp_path, capsys):
    folder = complete_db(tmp_path / "pol")
    dump([(p, f"Whole text of {p}.") for p in ("l/1.jpg", "l/2.jpg", "r/3.jpg", "r/4.jpg")],
         folder / "db.pickle")
    items = read_politics(folder)
    assert [(it.id, it.split) for it in items] == [("l/1.jpg", "train"), ("r/3.jpg", "test")]
    assert items[0].texts[0].endswith("one")                  # complete_db's text, not db's
    out = capsys.readouterr().out
    assert f"read {folder / 'complete_db.pickle'} (preferred to db.pickle beside it): 4 records" in out
    assert "dropped 2 items of 500 characters or fewer (first: l/2.jpg, r/4.jpg)" in out

    # db.pickle named as the file is read as given, without the filter.
    items = read_politics(folder / "db.pickle")
    assert [it.texts for it in items][:1] == [("Whole text of l/1.jpg.",)] and len(items) == 4
    out = capsys.readouterr().out
    assert f"read {folder / 'db.pickle'}: 4 records" in out and "characters or fewer" not in out

    assert len(read_politics(folder, min_chars=0)) == 4
    assert "no length filter (--politics-min-chars 0)" in capsys.readouterr().out
    assert len(read_politics(folder, min_chars=1000)) == 0
    assert "dropped 4 items of 1000 characters or fewer" in capsys.readouterr().out


# --- JSONL: a separate text for Doc2Vec ------------------------------------------------------

def test_jsonl_doc2vec_text_as_a_string_or_one_per_text(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)   # a short path: the report cuts what it quotes at 80 characters
    path = write_lines(Path("m.jsonl"), [
        {"id": "a", "image": "a.jpg", "texts": ["Cap one.", "Cap two."], "doc2vec_text": "Article A."},
        {"id": "b", "image": "b.jpg", "texts": ["B one.", "  ", "B three."],
         "doc2vec_text": ["Doc b0.", "Doc b1.", "Doc b2."]},
        {"id": "c", "image": "c.jpg", "texts": ["C one.", "C two."], "doc2vec_text": ["Doc c0.", " "]},
        {"id": "d", "image": "d.jpg", "text": "D.", "doc2vec_text": ""},
    ])
    items = read_jsonl(path)
    assert [(it.id, it.texts, it.doc2vec_text) for it in items] == [
        ("a", ("Cap one.", "Cap two."), ("Article A.", "Article A.")),
        ("b", ("B one.", "B three."), ("Doc b0.", "Doc b2.")),   # the pair of the empty text goes
        ("c", ("C one.",), ("Doc c0.",)),
    ]
    assert [items[1].doc2vec(j) for j in range(2)] == ["Doc b0.", "Doc b2."]
    out = capsys.readouterr().out
    assert "dropped 1 empty texts (first: " in out
    assert f"dropped 2 texts whose doc2vec_text is empty (first: {path}:3 (id c), {path}:4 (id d))" in out
    # The validation slice keeps the field.
    val = assign_validation(items, 1, seed=0)
    assert [it.doc2vec_text for it in val] == [it.doc2vec_text for it in items]
    assert sum(it.split == "val" for it in val) == 1
    # Without the field Doc2Vec reads the texts.
    plain = Item("p", "/p.jpg", ("T0", "T1"), "train")
    assert plain.doc2vec_text is None and plain.doc2vec(1) == "T1"
    with pytest.raises(ValueError, match="1 Doc2Vec texts for 2 texts"):
        Item("x", "/x.jpg", ("t", "u"), "train", doc2vec_text=("only one",))


@pytest.mark.parametrize("second, words", [
    ({"doc2vec_text": 3}, ["m.jsonl:2", '"doc2vec_text" must be a string or a list of strings']),
    ({"doc2vec_text": None}, ["m.jsonl:2", "must be a string or a list"]),
    ({"doc2vec_text": ["x", 4]}, ["m.jsonl:2", "must be a string or a list"]),
    ({"doc2vec_text": ["x", "y"]}, ["m.jsonl:2", "has 2 entries for 1 texts", "one per text"]),
    ({}, ["m.jsonl:2", 'no "doc2vec_text", but line 1 has one', "every item or to none"]),
])
def test_jsonl_bad_doc2vec_text(tmp_path, second, words):
    path = write_lines(tmp_path / "m.jsonl", [
        {"id": "a", "image": "a.jpg", "text": "fine", "doc2vec_text": "Article."},
        {"id": "b", "image": "b.jpg", "text": "fine too", **second}])
    msg = input_error(read_jsonl, path)
    for w in words:
        assert w in msg


def test_jsonl_doc2vec_text_missing_on_the_first_line_but_given_later(tmp_path):
    path = write_lines(tmp_path / "m.jsonl", [
        {"id": "a", "image": "a.jpg", "text": "fine"}, "",
        {"id": "b", "image": "b.jpg", "text": "fine", "doc2vec_text": "Article."}])
    msg = input_error(read_jsonl, path)
    assert 'm.jsonl:3: a "doc2vec_text", but line 1 has none' in msg

"""The GoodNews reader, on small files in the release's structure: article+caption.json
{article_id: {"article", "images": {index: caption}, ...}} and img_splits.json
{"<article_id>_<index>": split}."""
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest

from cli import parser
from data.datasets.load import load_items
from conftest import cli, input_error
from common.errors import InputError
from data.datasets.goodnews import read_goodnews
from data.datasets.items import Item
from data.datasets.readers import detect_format, load_dataset
from fixtures import TOPICS, topic_text

A1, A2, A3 = "5a1b2c3d4e5f60718293a4b5", "5a1b2c3d4e5f60718293a4b6", "5a1b2c3d4e5f60718293a4b7"


def articles() -> dict:
    return {
        A1: {"article": "The senate passed the bill. Critics objected.", "article_url": "https://x/1",
             "headline": {"main": "Bill passes", "kicker": None}, "abstract": "A bill.",
             "images": {"0": "Senators voted on Tuesday.", "1": "The chamber after the vote.\n"}},
        A2: {"article": "A storm hit the coast. Homes flooded.", "article_url": "https://x/2",
             "images": {"0": "Flooded streets.", "1": "   ", "2": "Rescue boats."}},
        A3: {"article": "", "article_url": "https://x/3", "images": {"0": "An empty article's image."}},
    }


def splits() -> dict:
    return {f"{A2}_2": "test", f"{A1}_0": "train", f"{A1}_1": "val", f"{A2}_1": "train",
            f"{A3}_0": "train", f"{A2}_0": "train"}


def write_release(folder: Path, arts: dict | None = None, img_splits: dict | None = None,
                  name: str = "article+caption.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(json.dumps(articles() if arts is None else arts))
    (folder / "img_splits.json").write_text(json.dumps(splits() if img_splits is None else img_splits))
    return folder


def test_one_item_per_listed_image_caption_as_text_article_for_doc2vec(tmp_path, capsys):
    folder = write_release(tmp_path / "goodnews")
    items = read_goodnews(folder)
    arts = articles()
    img = folder / "images"
    assert items == [   # in img_splits.json's order
        Item(f"{A2}_2", str(img / f"{A2}_2.jpg"), ("Rescue boats.",), "test",
             doc2vec_text=(arts[A2]["article"],)),
        Item(f"{A1}_0", str(img / f"{A1}_0.jpg"), ("Senators voted on Tuesday.",), "train",
             doc2vec_text=(arts[A1]["article"],)),
        Item(f"{A1}_1", str(img / f"{A1}_1.jpg"), ("The chamber after the vote.\n",), "val",
             doc2vec_text=(arts[A1]["article"],)),
        Item(f"{A2}_0", str(img / f"{A2}_0.jpg"), ("Flooded streets.",), "train",
             doc2vec_text=(arts[A2]["article"],)),
    ]
    out = capsys.readouterr().out
    assert f"read {folder / 'article+caption.json'} (3 articles) and {folder / 'img_splits.json'} " \
           "(6 images)" in out
    assert f"dropped 1 images with an empty caption (first: {A2}_1)" in out
    assert f"dropped 1 images with an empty article (first: {A3}_0)" in out
    assert "puts in no split" not in out

    moved = read_goodnews(folder, tmp_path / "resized")
    assert moved[0].image == str(tmp_path / "resized" / f"{A2}_2.jpg")


def test_images_no_split_lists_are_left_out_and_counted(tmp_path, capsys):
    listed = {k: v for k, v in splits().items() if not k.startswith(A1)}
    folder = write_release(tmp_path / "goodnews", img_splits=listed)
    assert [it.id for it in read_goodnews(folder)] == [f"{A2}_2", f"{A2}_0"]
    assert f"left out 2 images that img_splits.json puts in no split (first: {A1}_0, {A1}_1)" \
        in capsys.readouterr().out


@pytest.mark.parametrize("name", ["article+caption.json", "article_caption.json", "captioning_dataset.json"])
def test_the_article_file_under_each_of_its_names_and_every_path_to_the_release(tmp_path, name):
    folder = write_release(tmp_path / "g", name=name)
    (folder / "news_dataset.json").write_text("[]")   # GoodNews's preprocessed captions: not read
    expected = [it.id for it in read_goodnews(folder)]
    assert len(expected) == 4
    for path in (folder, folder / name, folder / "img_splits.json", folder / "news_dataset.json"):
        assert detect_format(path) == "goodnews"
        assert [it.id for it in load_dataset(path)] == expected
    # The shared flags: the format forced, the release's val split kept (no slice of train).
    args = parser("x").parse_args(["--dataset", str(folder / name), "--dataset-format", "goodnews"])
    items = load_items(args)
    assert [it.id for it in items] == expected
    assert [it.split for it in items] == ["test", "train", "val", "train"]


def test_other_folders_and_json_files_keep_their_formats(tmp_path):
    (tmp_path / "pol").mkdir()
    assert detect_format(tmp_path / "pol") == "politics"
    assert detect_format(tmp_path / "dataset_coco.json") == "karpathy"


def test_missing_files(tmp_path):
    folder = write_release(tmp_path / "g")
    (folder / "img_splits.json").unlink()
    msg = input_error(read_goodnews, folder)
    assert f"{folder / 'img_splits.json'}: not found" in msg and "GoodNews README" in msg
    only_splits = tmp_path / "s"
    only_splits.mkdir()
    (only_splits / "img_splits.json").write_text("{}")
    (only_splits / "news_dataset.json").write_text("[]")
    msg = input_error(load_dataset, only_splits / "news_dataset.json")
    assert f"{only_splits}: no article+caption.json or article_caption.json or " \
           "captioning_dataset.json" in msg and "news_dataset.json holds no article" in msg


@pytest.mark.parametrize("image_id, split, words", [
    (f"{A1}_7", "train", [f"image '{A1}_7' is not in article+caption.json",
                          f"article '{A1}' has images 0, 1"]),
    ("5a1b2c3d4e5f60718293ffff_0", "test", ["image '5a1b2c3d4e5f60718293ffff_0' is not in "
                                            "article+caption.json (no article '5a1b2c3d4e5f60718293ffff')"]),
    ("no-underscore", "train", ["image 'no-underscore' is not named <article id>_<index>"]),
    (f"{A1}_0", "dev", [f"image '{A1}_0'", "split 'dev' is not one of train, val, test"]),
])
def test_a_bad_split_entry_is_named(tmp_path, image_id, split, words):
    folder = write_release(tmp_path / "g", img_splits={**splits(), image_id: split})
    msg = input_error(read_goodnews, folder)
    assert str(folder / "img_splits.json") in msg
    for w in words:
        assert w in msg


@pytest.mark.parametrize("entry, words", [
    (["not", "an", "object"], ["is a list, not an object"]),
    ({"article": "Text.", "images": ["a caption"]}, ['no "images" object {index: caption}']),
    ({"images": {"0": "Caption."}}, ['no "article"']),
    ({"article": 12, "images": {"0": "Caption."}}, ['"article" is a int, not a string']),
    ({"article": "Text.", "images": {"0": {"caption": "x"}}}, ["the caption of image '0' is a dict"]),
])
def test_a_malformed_article_entry_is_named(tmp_path, entry, words):
    folder = write_release(tmp_path / "g", arts={**articles(), "5bad": entry})
    msg = input_error(read_goodnews, folder)
    assert f"{folder / 'article+caption.json'}: article '5bad'" in msg
    for w in words:
        assert w in msg


def test_unreadable_and_wrongly_shaped_files(tmp_path):
    folder = write_release(tmp_path / "g")
    (folder / "article+caption.json").write_text('{"a": ')
    assert "article+caption.json: not valid JSON" in input_error(read_goodnews, folder)
    (folder / "article+caption.json").write_text("[]")
    assert "article+caption.json: expected a JSON object" in input_error(read_goodnews, folder)
    write_release(folder)
    (folder / "img_splits.json").write_bytes(b'{"x": "caf\xe9"}')
    assert "img_splits.json: unreadable" in input_error(read_goodnews, folder)
    (folder / "img_splits.json").write_text('["a_0"]')
    assert "img_splits.json: expected a JSON object" in input_error(read_goodnews, folder)


def test_the_text_scripts_on_a_release_folder(tmp_path):
    """Doc2Vec reads the articles: the images of one article share a vector (distance 0), and
    the nearest other documents are the images of articles on the same topic."""
    rng, names = random.Random(0), sorted(TOPICS)
    arts, img_splits, topic = {}, {}, {}
    for a in range(150):
        aid = f"{a:024x}"
        # Captions on a topic unrelated to the article's: only the article can group them.
        arts[aid] = {"article": topic_text(rng, names[a % 5], sentences=3), "article_url": "u",
                     "images": {str(i): topic_text(rng, names[(a // 5) % 5], sentences=1)
                                for i in range(1 + a % 3)}}
        for i in arts[aid]["images"]:
            img_splits[f"{aid}_{i}"] = {0: "test", 5: "val"}.get(a % 10, "train")
            topic[f"{aid}_{i}"] = names[a % 5]
    folder = write_release(tmp_path / "goodnews", arts, img_splits)
    common = ["--dataset", folder, "--work-dir", tmp_path / "work", "--workers", "1", "--max-sentences", "0"]
    out = cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "20", "--vector-size", "32").out
    assert "Doc2Vec reads doc2vec_text, first 2 sentences" in out
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "10", "--backend", "exact")
    knn = pickle.loads((tmp_path / "work" / "document_feats_knn.pickle").read_bytes())
    assert knn["ids"] == [i for i, s in img_splits.items() if s == "train"]
    ids, nb, d = knn["ids"], knn["neighbors"], knn["distances"]
    article = np.array([i.rsplit("_", 1)[0] for i in ids])
    same = article[nb] == article[:, None]
    assert ((d == 0) == same).all()          # distance 0 exactly for the images of one article
    labels = np.array([topic[i] for i in ids])
    others = ~same
    share = (labels[nb][others] == np.repeat(labels[:, None], nb.shape[1], 1)[others]).mean()
    assert share >= 0.9

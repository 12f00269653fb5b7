"""doc2vec_text: Doc2Vec, the kNN and the neighbourhood metric read it (with its own sentence cut)
while the GRU reads the texts."""
import argparse
import json
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from data.datasets.items import Item
from data.datasets.readers import load_dataset
from data.text.corpus import doc2vec_documents, tokenized_documents
from data.text.doc2vec import infer_vectors
from data.text.preprocess import preprocess
from evaluation.neighborhood import knn_overlap
from evaluation.split import load_split, reference_tokens
from fixtures import TOPICS, topic_text
from conftest import RUN, cli
from pipeline import TINY_TRAIN
from demo.synthetic import generate_synthetic

ARTICLE = "Voters queued early. Turnout broke records. Officials counted overnight."


def args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"max_sentences": 1, "doc2vec_max_sentences": 2, "max_chars": 10_000,
                                 "workers": 1, **kw})


def test_the_gru_reads_the_texts_and_doc2vec_the_doc2vec_text_each_with_its_cut():
    items = [Item("a", "/a.jpg", ("Crowds cheered loudly. Flags waved.",), "train",
                  doc2vec_text=(ARTICLE,)),
             Item("b", "/b.jpg", ("Ballots arrived late. Clerks sorted.",), "train",
                  doc2vec_text=(ARTICLE,)),
             Item("c", "/c.jpg", ("Skip me.",), "test", doc2vec_text=("Other article.",))]
    docs, gru = tokenized_documents(items, ["train"], args())
    assert [d.id for d in docs] == ["a", "b"]
    assert gru == [["crowds", "cheered", "loudly"], ["ballots", "arrived", "late"]]
    docs, d2v = doc2vec_documents(items, ["train"], args())
    assert [d.id for d in docs] == ["a", "b"]
    assert d2v[0] == ["voters", "queued", "early", "turnout", "broke", "records"]
    assert d2v[1] is d2v[0]   # one article, preprocessed once
    assert doc2vec_documents(items, ["train"], args(doc2vec_max_sentences=0))[1][0][-3:] == \
        ["officials", "counted", "overnight"]
    # Without the field Doc2Vec reads the texts with the texts' cut, as the GRU does.
    plain = [Item(it.id, it.image, it.texts, it.split) for it in items]
    assert doc2vec_documents(plain, ["train"], args(doc2vec_max_sentences=0))[1] == gru


def test_the_neighbourhood_reference_reads_the_doc2vec_text():
    items = [Item("a", "/1.jpg", ("Storm rain.", "Thunder cloud."), "test",
                  doc2vec_text=("Storms flooded towns. Rivers rose. Dams held.", "Unused second.")),
             Item("b", "/2.jpg", ("Guitar song.",), "test", doc2vec_text=("Concerts sold out. Bands toured.",)),
             Item("c", "/3.jpg", ("Rocket orbit.",), "test", doc2vec_text=("Launch delayed. Weather.",))]
    split = load_split(items, "test", args(max_sentences=0))
    ids, tokens = reference_tokens(split, 2, 10_000)
    assert ids == ["a", "b", "c"]
    assert tokens == [["storms", "flooded", "towns", "rivers", "rose"], ["concerts", "sold", "bands", "toured"],
                      ["launch", "delayed", "weather"]]
    sub, _ = split.keep_images([2, 0])
    assert reference_tokens(sub, 1, 10_000) == (["c", "a"], [["launch", "delayed"], ["storms", "flooded", "towns"]])
    plain = load_split([Item(it.id, it.image, it.texts, it.split) for it in items], "test", args(max_sentences=0))
    assert plain.doc2vec_texts is None
    assert reference_tokens(plain, 2, 10_000)[1] == [plain.text_tokens[t] for t in plain.first_texts()]


def two_topic_manifest(folder: Path, n: int = 250) -> Path:
    """Texts on topic A; doc2vec_text a long first sentence on topic B, then two on topic C. The
    three topics are assigned independently of each other."""
    rng = random.Random(0)
    names = sorted(TOPICS)
    folder.mkdir(parents=True)
    with open(folder / "manifest.jsonl", "w") as f:
        for i in range(n):
            a, b, c = names[i % 5], names[(i // 5) % 5], names[(i // 25) % 5]
            article = topic_text(rng, b, sentences=1, words=16) + " " + topic_text(rng, c, sentences=2)
            f.write(json.dumps({"id": f"{i:03d}", "image": f"{i}.png", "text": topic_text(rng, a),
                                "doc2vec_text": article, "label": f"{a}|{b}|{c}",
                                "split": "test" if i % 10 == 0 else "train"}) + "\n")
    return folder / "manifest.jsonl"


def test_the_text_scripts_build_neighbourhoods_from_the_doc2vec_text(tmp_path):
    manifest = two_topic_manifest(tmp_path / "data")
    common = ["--dataset", manifest, "--work-dir", tmp_path / "work", "--workers", "1",
              "--doc2vec-max-sentences", "1"]
    out = cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "20", "--vector-size", "50").out
    assert "Doc2Vec reads doc2vec_text, first 1 sentences" in out
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "11", "--backend", "exact")
    knn = pickle.loads((tmp_path / "work" / "document_feats_knn.pickle").read_bytes())
    labels = {it.id: it.label.split("|") for it in load_dataset(manifest)}
    topics = np.array([labels[i] for i in knn["ids"]])        # [N, 3]: A, B, C
    nb = knn["neighbors"][:, 1:]
    share = (topics[nb] == topics[:, None, :]).mean(axis=(0, 1))
    # Neighbours share the first sentence's topic B; the texts' topic A and the cut-off topic C
    # only by chance (1 in 5).
    assert share[1] >= 0.9, share
    assert share[0] < 0.35 and share[2] < 0.35, share


@pytest.fixture(scope="module")
def trained_on_articles(module_tmp):
    """A tiny run whose items carry a doc2vec_text unlike their captions."""
    root = module_tmp("articles")
    manifest = generate_synthetic(root / "data", n_items=120, image_size=32, seed=5)
    rng = random.Random(1)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    for r in records:   # an "article": a sentence on another topic, then the caption
        r["doc2vec_text"] = topic_text(rng, sorted(TOPICS)[int(r["id"]) % 5], sentences=1) + " " \
            + r["texts"][0]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    work = root / "work"
    common = ["--dataset", manifest, "--work-dir", work]
    cli("train_doc2vec.py", *common, "--workers", "1", "--min-count", "2", "--epochs", "20")
    cli("extract_doc2vec_vectors.py", *common, "--workers", "1")
    cli("knn_document_features.py", *common, "--workers", "1", "--k", "20")
    cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", *common, *TINY_TRAIN, "--epochs", "1")
    return records, work, work / "models" / RUN / "best.pt"


@pytest.mark.slow   # trains a tiny model (about 25 s of CPU)
def test_evaluation_measures_the_neighbourhoods_of_the_doc2vec_text(trained_on_articles, tmp_path):
    records, work, best = trained_on_articles
    out = tmp_path / "m.json"
    cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0", "--out", out,
        "--save-embeddings", tmp_path / "emb")
    metrics = json.loads(out.read_text())["neighborhood"]
    images = torch.from_numpy(np.load(tmp_path / "emb" / "images.npy"))
    texts = torch.from_numpy(np.load(tmp_path / "emb" / "texts.npy"))
    test = [r for r in records if r["split"] == "test"]
    model = str(work / "doc2vec_model.gensim")

    def overlaps(docs):
        reference = torch.from_numpy(infer_vectors(model, [preprocess(d, 2) for d in docs]))
        return knn_overlap(reference, images, 10), knn_overlap(reference, texts, 10)

    articles = overlaps([r["doc2vec_text"] for r in test])
    assert (metrics["image_overlap@10"], metrics["text_overlap@10"]) == pytest.approx(articles)
    # ... which is not what the captions' Doc2Vec vectors would give.
    assert overlaps([r["texts"][0] for r in test]) != pytest.approx(articles)

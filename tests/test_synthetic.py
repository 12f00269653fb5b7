import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from gensim.parsing.preprocessing import (STOPWORDS, preprocess_string, remove_stopwords,
                                          strip_multiple_whitespaces, strip_non_alphanum,
                                          strip_punctuation, strip_short, strip_tags)
from PIL import Image

from demo import build_synthetic as build_synthetic_dataset
from demo.synthetic import (FILLER_WORDS, make_motifs, render_motif, topic_names, topic_vocabularies,
                            generate_synthetic)

# The authors' filters, in their order.
FILTERS = [lambda s: s.lower(), strip_tags, strip_punctuation, strip_multiple_whitespaces,
           strip_non_alphanum, remove_stopwords, strip_short]


def read(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines()]


def test_same_seed_same_bytes(tmp_path):
    kw = dict(n_items=40, image_size=32, texts_per_item=2, seed=3)
    for fmt in ("png", "jpg"):
        a = generate_synthetic(tmp_path / f"a-{fmt}", image_format=fmt, **kw)
        b = generate_synthetic(tmp_path / f"b-{fmt}", image_format=fmt, **kw)
        assert a.read_bytes() == b.read_bytes()
        for rec in read(a):
            assert (a.parent / rec["image"]).read_bytes() == (b.parent / rec["image"]).read_bytes()
    other = generate_synthetic(tmp_path / "c", **{**kw, "seed": 4})
    assert other.read_bytes() != (tmp_path / "a-png" / "manifest.jsonl").read_bytes()


def test_counts_fractions_labels_and_files(tmp_path):
    m = generate_synthetic(tmp_path, n_items=100, n_topics=5, motifs_per_topic=2, image_size=24,
                           texts_per_item=2, sentences_per_text=4, val_fraction=0.1,
                           test_fraction=0.2, seed=1)
    recs = read(m)
    assert len(recs) == 100 and len({r["id"] for r in recs}) == 100
    assert Counter(r["split"] for r in recs) == {"train": 70, "val": 10, "test": 20}
    assert Counter(r["label"] for r in recs) == {name: 20 for name in topic_names(5)}
    for r in recs:
        assert set(r) == {"id", "image", "texts", "split", "label"}
        assert r["image"] == f"images/{r['id']}.png"
        with Image.open(m.parent / r["image"]) as im:
            assert im.size == (24, 24) and im.mode == "RGB"
        assert len(r["texts"]) == 2
        for text in r["texts"]:
            assert text.endswith(".") and text.count(".") == 4


def test_vocabularies_survive_the_authors_filters():
    vocab = topic_vocabularies(10, seed=0)      # 8 real-word topics and 2 made-up ones
    assert list(vocab) == topic_names(10)
    words = [w for ws in vocab.values() for w in ws] + FILLER_WORDS
    assert len(words) == len(set(words)), "a word is in two topics or in a topic and the filler"
    for ws in vocab.values():
        assert len(ws) >= 30
    for w in words:
        assert w.isalpha() and w.islower() and w not in STOPWORDS
        assert preprocess_string(w, FILTERS) == [w]


def test_texts_keep_every_word_and_mostly_topic_words(tmp_path):
    recs = read(generate_synthetic(tmp_path, n_items=60, image_size=16, seed=2))
    vocab = topic_vocabularies(6, seed=2)
    topic_share = []
    for r in recs:
        raw = r["texts"][0].replace(".", " ").lower().split()
        tokens = preprocess_string(r["texts"][0], FILTERS)
        assert tokens == raw
        own = set(vocab[r["label"]])
        assert set(tokens) <= own | set(FILLER_WORDS)
        topic_share.append(sum(t in own for t in tokens) / len(tokens))
    assert 0.65 < np.mean(topic_share) < 0.85


def test_motifs_of_a_topic_look_different_but_each_is_recognisable():
    motifs = make_motifs(6, 3, seed=0)
    means = {}
    for t, j in itertools.product(range(6), range(3)):
        assert len({m.kind for m in motifs[t]}) == 3
        pics = [np.asarray(render_motif(motifs[t][j], np.random.default_rng([t, j, k]), 32), float)
                for k in range(12)]
        means[t, j] = np.mean(pics, axis=0)
    for t in range(6):
        for a, b in itertools.combinations(range(3), 2):
            rms = np.sqrt(((means[t, a] - means[t, b]) ** 2).mean())
            assert rms > 30, f"topic {t}: motifs {a} and {b} look alike (rms {rms:.1f} of 255)"
    # New pictures are nearest their own motif's mean picture far more often than chance (1/18).
    hits = 0
    for key in means:
        for k in range(5):
            x = np.asarray(render_motif(motifs[key[0]][key[1]], np.random.default_rng([*key, 100 + k]), 32), float)
            hits += min(means, key=lambda q: ((x - means[q]) ** 2).mean()) == key
    assert hits / (5 * len(means)) > 0.5


def test_topics_are_learnable_from_text():
    """Bag-of-words nearest neighbour (cosine) of a text is almost always of its topic."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        recs = read(generate_synthetic(Path(d), n_items=120, image_size=16, seed=5))
    words = sorted({t for r in recs for t in preprocess_string(r["texts"][0], FILTERS)})
    index = {w: i for i, w in enumerate(words)}
    bow = np.zeros((len(recs), len(words)))
    for i, r in enumerate(recs):
        for t in preprocess_string(r["texts"][0], FILTERS):
            bow[i, index[t]] += 1
    bow /= np.linalg.norm(bow, axis=1, keepdims=True)
    sim = bow @ bow.T
    np.fill_diagonal(sim, -1)
    nearest = sim.argmax(axis=1)
    same = np.mean([recs[i]["label"] == recs[j]["label"] for i, j in enumerate(nearest)])
    assert same > 0.95


def test_bad_arguments_raise_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="motif kinds"):
        generate_synthetic(tmp_path, motifs_per_topic=50)
    with pytest.raises(ValueError, match="leave some training items"):
        generate_synthetic(tmp_path, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="n_items is 0"):
        generate_synthetic(tmp_path, n_items=0)
    with pytest.raises(ValueError, match="image format"):
        generate_synthetic(tmp_path, image_format="gif")


def test_cli_reuses_a_matching_build(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--items", "30", "--image-size", "16"]
    m = build_synthetic_dataset.main(args)
    first = capsys.readouterr().out
    assert "generated 30 items" in first and first.strip().endswith(str(m))
    stamp = m.stat().st_mtime_ns
    assert build_synthetic_dataset.main(args) == m
    assert "reusing" in capsys.readouterr().out and m.stat().st_mtime_ns == stamp
    build_synthetic_dataset.main(args + ["--seed", "7"])
    assert "generated" in capsys.readouterr().out and m.stat().st_mtime_ns != stamp

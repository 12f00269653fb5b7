"""Text preprocessing, the document view of items, and Doc2Vec training/inference."""
import random
from argparse import Namespace

import numpy as np
import pytest
from gensim.models.doc2vec import Doc2Vec

from common.errors import InputError
from data.datasets.items import Item, documents
from data.text.corpus import drop_empty, tokenized_documents
from data.text.doc2vec import infer_vectors, train_doc2vec
from data.text.preprocess import first_sentences, preprocess, preprocess_all
from fixtures import TOPICS, topic_text

THREE = "Rockets launched today. Astronauts waved goodbye. Telescopes watched closely."


@pytest.mark.parametrize("limit, expected", [
    (1, ["rockets", "launched", "today"]),
    (2, ["rockets", "launched", "today", "astronauts", "waved", "goodbye"]),
    (3, ["rockets", "launched", "today", "astronauts", "waved", "goodbye", "telescopes", "watched",
         "closely"]),
    (0, ["rockets", "launched", "today", "astronauts", "waved", "goodbye", "telescopes", "watched",
         "closely"]),
    (None, ["rockets", "launched", "today", "astronauts", "waved", "goodbye", "telescopes", "watched",
            "closely"]),
])
def test_sentence_limit(limit, expected):
    assert preprocess(THREE, limit) == expected


def test_zero_sentences_means_the_whole_text():
    assert first_sentences(THREE, 0) == THREE
    assert first_sentences(THREE, None) == THREE
    assert first_sentences(THREE, 2) == "Rockets launched today. Astronauts waved goodbye."


@pytest.mark.parametrize("text, expected", [
    ("Mr. Smith visited the U.S. Senate yesterday. Crowds cheered loudly.",
     ["smith", "visited", "senate", "yesterday"]),
    ("Dr. Jones met Gov. Brown at 5 p.m. on Friday. Voters waited outside.",
     ["jones", "met", "gov", "brown", "friday"]),
    ("Exports, e.g. grain, rose in the U.K. and the U.S.A. during Jan. and Feb. this year. Then fell.",
     ["exports", "grain", "rose", "jan", "feb", "year"]),
])
def test_abbreviations_do_not_end_a_sentence(text, expected):
    assert preprocess(text, 1) == expected


def test_question_and_exclamation_marks_end_sentences():
    assert preprocess("Who won the derby? Fans cheered! Rain fell.", 2) == ["won", "derby", "fans", "cheered"]


def test_html_tags_are_stripped_and_still_end_paragraphs():
    text = '<div class="headline">Bakers sold <b>fresh</b> bread.</div><p>Markets closed early.</p>'
    assert preprocess(text, 1) == ["bakers", "sold", "fresh", "bread"]
    assert preprocess(text, 2) == ["bakers", "sold", "fresh", "bread", "markets", "closed", "early"]
    assert preprocess(text, 0) == preprocess(text, 2)


def test_non_ascii_is_replaced_after_the_sentence_split():
    # Replaced first (the authors' order), "Caf? owners" would end the sentence at the '?'.
    assert first_sentences("Caf? owners met the mayor. Prices rose.", 1) == "Caf?"
    assert preprocess("Café owners met the mayor. Prices rose.", 1) == ["caf", "owners", "met", "mayor"]
    assert preprocess("Prices rose. Café owners met the mayor.", 1) == ["prices", "rose"]


def test_non_ascii_tokens_match_the_authors_replacement():
    # 'naïve résumé' -> 'na?ve r?sum?' -> 'na ve r sum', of which only 'sum' is 3+ characters.
    assert preprocess("naïve résumé writers", None) == ["sum", "writers"]
    assert preprocess("日本 Tokyo", None) == ["tokyo"]


def test_stop_words_short_tokens_case_punctuation_and_digits():
    assert preprocess("The cat is on a mat by me and it was so", None) == ["cat", "mat"]
    assert preprocess("COVID-19 cases rose 20% in Ohio!!! Wow", None) == ["covid", "cases", "rose", "ohio",
                                                                         "wow"]
    assert preprocess("", 2) == []
    assert preprocess("   \n\t ", 2) == []
    assert preprocess("It is as it was.", 2) == []


def test_max_chars_cuts_the_raw_text():
    text = "alpha " * 10 + "omega"
    assert preprocess(text, None, max_chars=20) == ["alpha"] * 3
    assert preprocess(text, None, max_chars=None)[-1] == "omega"
    assert preprocess(text, None, max_chars=0)[-1] == "omega"


def test_parallel_preprocessing_equals_serial():
    rng = random.Random(3)
    extras = ["Mr. Smith <b>met</b> Café owners. Then left.", "", "the of and", THREE]
    texts = [topic_text(rng, t, sentences=3) for t in sorted(TOPICS) for _ in range(500)]
    texts += extras * 10
    assert len(texts) > 2000  # the pool path
    serial = preprocess_all(texts, 2, 10_000, workers=1)
    assert preprocess_all(texts, 2, 10_000, workers=2) == serial
    assert serial[-4:] == [preprocess(t, 2) for t in extras]
    assert len(preprocess_all(texts, None, 10_000, workers=2)[0]) > len(serial[0])


def _items():
    return [Item("a", "/i/a.png", ("Rockets launched today.",), "train", "space"),
            Item("b", "/i/b.png", ("Bakers sold bread.", "It is as it was.", "Fresh bread."), "train"),
            Item("c", "/i/c.png", ("Guitar concert tonight.",), "test"),
            Item("d", "/i/d.png", ("Storm forecast.", "Thunder tonight."), "val")]


def test_documents_one_per_text_with_item_and_text_indices():
    docs = documents(_items())
    assert [d.id for d in docs] == ["a", "b#0", "b#1", "b#2"]
    assert [(d.item, d.text) for d in docs] == [(0, 0), (1, 0), (1, 1), (1, 2)]
    assert [d.id for d in documents(_items(), ["val", "test"])] == ["c", "d#0", "d#1"]


def test_documents_with_no_tokens_are_dropped_and_counted(capsys):
    args = Namespace(max_sentences=0, max_chars=10_000, workers=1)
    docs, tokens = drop_empty(*tokenized_documents(_items(), ["train"], args), "training")
    assert [d.id for d in docs] == ["a", "b#0", "b#2"]
    assert tokens == [["rockets", "launched", "today"], ["bakers", "sold", "bread"], ["fresh", "bread"]]
    assert "dropped 1 training documents with no tokens" in capsys.readouterr().out


def _topic_corpus(n: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    names = sorted(TOPICS)
    return [preprocess(topic_text(rng, names[i % 5])) for i in range(n)]


def test_doc2vec_empty_vocabulary_is_a_clear_error():
    tokens = _topic_corpus(20)
    with pytest.raises(InputError, match="vocabulary is empty.*smaller --min-count"):
        train_doc2vec(tokens, 10, 5, 10_000, 1, 1, 0)
    with pytest.raises(InputError, match="no training documents"):
        train_doc2vec([], 10, 5, 1, 1, 1, 0)


def test_inferred_vectors_do_not_depend_on_workers_or_order(tmp_path):
    tokens = _topic_corpus(1100)  # >= 1000: the pool path
    model = train_doc2vec(tokens[:300], 16, 5, 2, 3, 1, 0)
    path = str(tmp_path / "m.gensim")
    model.save(path, separately=[])
    serial = infer_vectors(path, tokens, workers=1)
    assert serial.dtype == np.float32 and serial.shape == (1100, 16)
    np.testing.assert_array_equal(infer_vectors(path, tokens, workers=2), serial)
    np.testing.assert_array_equal(infer_vectors(path, tokens[::-1], workers=1)[::-1], serial)
    assert infer_vectors(path, [], workers=1).shape == (0, 16)
    # A loaded model is shared with the forked workers, none of which loads it again (a worker
    # calling the patched load would fail the pool).
    loaded = Doc2Vec.load(path)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(Doc2Vec, "load", classmethod(lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded again"))))
        np.testing.assert_array_equal(infer_vectors(loaded, tokens, workers=2), serial)

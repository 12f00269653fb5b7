"""Records read back are checked against their schema (one line naming the file and the field),
every input is opened without blocking (a FIFO is one line, never a wait), and whatever the
system reports at a script's top is one line."""
import copy
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from common import records as R
from common.errors import InputError
from conftest import Alarm, cli, error_line, input_error
from data.datasets import provenance
from models.exported import CONFIG_FILE, IMAGE_FILE, TEXT_FILE, VOCAB_FILE, load_encoders, write_encoders
from models.image import ImageEncoder
from models.text import TextEncoder
from models.vocab import Vocabulary


def test_a_schema_names_the_first_wrong_field_and_what_is_wrong():
    schema = {"n": R.whole(1), "name": R.of(str), "inner": {"x": R.list_of(R.of(float), length=2)},
              "maybe": R.optional(R.of(bool))}
    good = {"n": 3, "name": "a", "inner": {"x": [1, 2.5]}, "maybe": None}
    assert R.problem(good, schema) is None
    for change, said in [
            (lambda r: r.pop("n"), "field 'n' is missing"),
            (lambda r: r.update(n=True), "field 'n' is true or false, not a whole number"),
            (lambda r: r.update(n=0), "field 'n' is 0, not a whole number of at least 1"),
            (lambda r: r.update(name=None), "field 'name' is null, not a string"),
            (lambda r: r.update(inner=[]), "field 'inner' is a list, not an object"),
            (lambda r: r["inner"].pop("x"), "field 'inner.x' is missing"),
            (lambda r: r["inner"].update(x=[1]), "field 'inner.x' has 1 entries, not 2"),
            (lambda r: r["inner"].update(x=[1, "2"]), "field 'inner.x' entry 1 is a string"),
            (lambda r: r["inner"].update(x=[1, float("nan")]), "entry 1 is nan, not a finite"),
            (lambda r: r.update(maybe=1), "field 'maybe' is a whole number, not true or false")]:
        record = copy.deepcopy(good)
        change(record)
        assert said in R.problem(record, schema)
    assert "the record is a list" in R.problem([], schema)
    assert input_error(R.check, {}, schema, "f.json", "remake it") == \
        "f.json: field 'n' is missing: remake it"


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    out = tmp_path_factory.mktemp("enc") / "enc"
    torch.manual_seed(0)
    vocab = Vocabulary(["a", "b", "c"])
    text = TextEncoder(len(vocab), word_dim=4, hidden=5, embed_dim=6)
    image = ImageEncoder("resnet18", embed_dim=6, pretrained=False)
    write_encoders(out, image, text, vocab, {"image_size": 8, "max_tokens": 5, "max_sentences": 2,
                                              "max_chars": 100, "keep_unicode": False}, {})
    load_encoders(out)   # as written, it loads
    return out


def damaged_copy(folder: Path, tmp_path: Path, name: str, change, as_record: bool = True) -> Path:
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in folder.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    if as_record:
        record = json.loads((bad / name).read_text())
        change(record)
        (bad / name).write_text(json.dumps(record))
    else:
        change(bad / name)
    return bad


CONFIG_CASES = [
    ("embed_dim", lambda c: c.pop("embed_dim"), "field 'embed_dim' is missing"),
    ("embed_dim", lambda c: c.update(embed_dim="128"), "field 'embed_dim' is a string"),
    ("embed_dim", lambda c: c.update(embed_dim=128), "does not fit config.json"),
    ("vocab_size", lambda c: c.update(vocab_size=1), "field 'vocab_size' is 1"),
    ("image_size", lambda c: c.update(image_size=0), "field 'image_size' is 0"),
    ("image_std", lambda c: c.update(image_std=[1, 0, 1]), "field 'image_std' entry 1 is 0"),
    ("image_mean", lambda c: c.update(image_mean=[0.5]), "field 'image_mean' has 1 entries"),
    ("keep_unicode", lambda c: c.update(keep_unicode="no"), "field 'keep_unicode' is a string"),
    ("arch", lambda c: c.update(arch="resnet9"), "unknown image arch 'resnet9'"),
    ("format", lambda c: c.update(format=2), "field 'format' is 2, not one of 1"),
    ("whole", lambda c: c.clear(), "field 'format' is missing"),
]


@pytest.mark.parametrize("field,change,said", CONFIG_CASES, ids=[c[2][:30] for c in CONFIG_CASES])
def test_an_edited_exported_config_is_one_line_naming_the_field(encoders, tmp_path, field, change, said):
    bad = damaged_copy(encoders, tmp_path, CONFIG_FILE, change)
    msg = input_error(load_encoders, bad)
    assert said in msg and str(bad) in msg and "export_encoders.py" in msg


def nan_weights(path: Path) -> None:
    from safetensors.torch import load_file, save_file
    state = load_file(path)
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][0] = float("nan")
    save_file(state, path)


@pytest.mark.parametrize("name,change,said", [
    (IMAGE_FILE, nan_weights, "holds NaN or infinite values"),
    (TEXT_FILE, lambda p: p.write_bytes(p.read_bytes()[:100]), "not a readable safetensors file"),
    (VOCAB_FILE, lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "unreadable"),
    (VOCAB_FILE, lambda p: p.write_text('[["a"], "b", "c"]'), "every word must be a non-empty"),
    (VOCAB_FILE, lambda p: p.write_text('["a", "b"]'), "2 words but config.json says 3"),
])
def test_damaged_exported_files_are_one_line(encoders, tmp_path, name, change, said):
    bad = damaged_copy(encoders, tmp_path, name, change, as_record=False)
    msg = input_error(load_encoders, bad)
    assert said in msg and name in msg


def knn_record() -> dict:
    return provenance.new_record({"items": 3, "hash": "h"}, "knn", {"k": 2},
                                 provenance.new_record({"items": 3, "hash": "h"}, "doc2vec", {}))


@pytest.mark.parametrize("change,said", [
    (lambda r: r.update(data=[3]), "field 'data' is a list"),
    (lambda r: r.pop("steps"), "field 'steps' is missing"),
    (lambda r: r["steps"].update(knn=[1]), "field 'steps' is"),
])
def test_a_damaged_provenance_record_is_one_line(change, said):
    record = knn_record()
    provenance.require_record(record, "k.pickle", "knn")
    change(record)
    msg = input_error(provenance.check_data, record, {"items": 3, "hash": "h"}, "k.pickle", "knn")
    assert said in msg and msg.startswith("k.pickle: its provenance record: ")
    assert "rerun knn_document_features.py" in msg


def fifo_readers(tmp: Path):
    """(what, a call that reads `path`) for every kind of input file the project reads."""
    from common.files import read_npz
    from common.workdir import read_pickle
    from data.datasets.readers import load_dataset
    from data.images.cache import load_cache
    from models.checkpoint import load_checkpoint
    from models.backbones import load_backbone_weights
    from tuning.sweep import Run, Settings, finished
    enc = tmp / "enc"

    def exported(name):
        def call(path):
            enc.mkdir(exist_ok=True)
            for f in (CONFIG_FILE, VOCAB_FILE, IMAGE_FILE, TEXT_FILE):
                (enc / f).unlink(missing_ok=True)
                (enc / f).write_text("{}")
            (enc / name).unlink()
            os.mkfifo(enc / name)
            return load_encoders(enc)
        return call

    def cache_index(path):
        folder = tmp / "work" / "image_cache" / "8"
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "images.npy", np.zeros((1, 3, 8, 8), np.uint8))
        os.mkfifo(folder / "index.json")
        cache, why = load_cache(tmp / "work", 8)
        assert cache is None   # not a cache: rebuilt, never waited on
        raise InputError(why)

    def sweep_marker(path):
        folder = tmp / "run"
        folder.mkdir()
        os.mkfifo(folder / "done_val.json")
        assert finished(Run("release", (1, 0, 0), 0, folder), "val",
                        Settings([], True)) is None
        raise InputError("refused")

    return [
        ("dataset", lambda p: load_dataset(p, "jsonl")),
        ("json record", lambda p: R.read_json(p, "remake it")),
        ("pickle", lambda p: read_pickle(p, "remake it")),
        ("checkpoint", load_checkpoint),
        ("image weights", lambda p: load_backbone_weights(torch.nn.Linear(1, 1), p, "resnet18")),
        ("npz", read_npz),
        ("exported config", exported(CONFIG_FILE)),
        ("exported vocabulary", exported(VOCAB_FILE)),
        ("exported weights", exported(IMAGE_FILE)),
        ("image cache index", cache_index),
        ("sweep marker", sweep_marker),
    ]


def test_no_reader_waits_on_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for what, read in fifo_readers(tmp_path):
        with Alarm(10):
            with pytest.raises((InputError, OSError, ValueError)) as e:
                read(fifo)
        assert "\n" not in str(e.value), what


def test_what_the_system_reports_at_a_script_top_is_one_line(tmp_path):
    long_name = tmp_path / ("x" * 300) / "data.jsonl"
    for script, args in [
            ("train_doc2vec.py", ["--dataset", long_name, "--work-dir", tmp_path / "w"]),
            ("evaluate_retrieval.py", ["--checkpoint", long_name]),
            ("knn_document_features.py", ["--dataset", tmp_path / "d.jsonl", "--work-dir",
                                          long_name.parent]),
            ("prepare_image_cache.py", ["--dataset", tmp_path / "d.jsonl", "--work-dir",
                                        long_name.parent]),
            ("export_encoders.py", ["--checkpoint", tmp_path / "best.pt", "--out", long_name])]:
        line = error_line(cli(script, *args, check=False), "x" * 10)
        assert "too long" in line or "File name too long" in line, line


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_one_is_the_same_line_everywhere():
    from common.devices import pick_device
    from data.neighbors.knn import exact_knn
    msg = input_error(pick_device, "cuda")
    assert msg == ("--device cuda was asked for but no CUDA device is available: pass "
                   "--device cpu")
    assert input_error(exact_knn, np.zeros((3, 2), np.float32), 1, "l2", "cuda") == msg


def tiny_checkpoint(path: Path) -> dict:
    from models import ModelConfig, build_model
    from models.checkpoint import save_checkpoint
    torch.manual_seed(0)
    words = ["alpha", "beta", "gamma"]
    model = build_model(ModelConfig("resnet18", 8, 4, 5, len(words) + 3))
    state = {"model": model.state_dict(), "model_config": model.config().to_dict(),
             "vocab": words, "vocab_fingerprint": Vocabulary(words).fingerprint(),
             "optimizer": {}, "scheduler": {}, "epoch": 0, "step": 1, "config": {}}
    save_checkpoint(state, path)
    return state


def edit(state: dict, change) -> dict:
    state = {**state, "model": dict(state["model"]), "model_config": dict(state["model_config"])}
    change(state)
    return state


CHECKPOINT_CASES = [
    (lambda s: s["model"].pop("text.gru.weight_hh_l0"), "tensor 'text.gru.weight_hh_l0' is missing"),
    (lambda s: s["model"].update(extra=torch.zeros(1)), "tensor 'extra' is not one of the model's"),
    (lambda s: s["model_config"].update(embed_dim=128), "tensor 'image.head.weight' has shape [8, 512]"),
    (lambda s: s["model_config"].update(embed_dim="128"), "field 'model_config.embed_dim' is a string"),
    (lambda s: s["model_config"].pop("hidden"), "field 'model_config.hidden' is missing"),
    (lambda s: s["model_config"].update(arch="vgg"), "unknown image arch 'vgg'"),
    (lambda s: s.update(model=[1]), "field 'model' is a list"),
    (lambda s: s.update(vocab=["a", "a"]), "appears twice"),
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> dict:
    from models.checkpoint import load_checkpoint, rebuild
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    state = tiny_checkpoint(path)
    rebuild(load_checkpoint(path))    # as written, it rebuilds
    return state


@pytest.mark.parametrize("change,said", CHECKPOINT_CASES, ids=[c[1][:32] for c in CHECKPOINT_CASES])
def test_a_damaged_checkpoint_is_one_line_in_every_script_that_rebuilds_it(checkpoint, tmp_path,
                                                                            change, said):
    from models.checkpoint import save_checkpoint
    bad = tmp_path / "bad.pt"
    save_checkpoint(edit(checkpoint, change), bad)
    line = error_line(cli("export_encoders.py", "--checkpoint", bad, "--out", tmp_path / "o",
                          check=False), str(bad), said)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.safetensors")), line
    error_line(cli("evaluate_retrieval.py", "--checkpoint", bad, "--workers", "0", check=False),
               str(bad), said)


@pytest.mark.parametrize("change,said", [
    (lambda s: s.pop("optimizer"), "field 'optimizer' is missing"),
    (lambda s: s.update(epoch="3"), "field 'epoch' is a string"),
    (lambda s: s.update(step=-1), "field 'step' is -1"),
])
def test_a_damaged_last_checkpoint_is_one_line_on_resume(checkpoint, tmp_path, change, said):
    from models.checkpoint import check_resumable, load_resume, save_checkpoint
    save_checkpoint(edit(checkpoint, change), tmp_path / "last.pt")
    msg = input_error(check_resumable, load_resume(tmp_path / "last.pt"), tmp_path / "last.pt")
    assert said in msg and "without --resume" in msg

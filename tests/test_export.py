"""export_encoders.py: the encoders on their own give the embeddings evaluate_retrieval.py gives."""
import json

import numpy as np
import pytest
import torch

from conftest import cli, input_error, one_line_error, train_tiny
from data.datasets.items import documents
from data.datasets.readers import load_dataset
from models.exported import FILES, IMAGE_FILE, load_encoders


@pytest.fixture(scope="module")
def exported(module_tmp):
    root = module_tmp("export")
    manifest, work, best = train_tiny(root, texts_per_item=2)
    out = root / "encoders"
    printed = cli("export_encoders.py", "--checkpoint", best, "--out", out).out.split()
    assert printed == [str(out / name) for name in FILES]
    return manifest, best, out


def test_exported_encoders_embed_as_evaluation_does(exported, tmp_path):
    manifest, best, out = exported
    cli("evaluate_retrieval.py", "--checkpoint", best, "--save-embeddings", tmp_path / "emb",
        "--out", tmp_path / "m.json", "--device", "cpu", "--workers", "0")
    ids = json.loads((tmp_path / "emb" / "ids.json").read_text())
    enc = load_encoders(out)
    assert enc.config["image_size"] == 32 and enc.config["arch"] == "resnet18"
    images = enc.embed_images(ids["image_paths"], batch_size=5)   # several batches
    assert torch.allclose(images, torch.from_numpy(np.load(tmp_path / "emb" / "images.npy")), atol=1e-5)
    items = load_dataset(manifest)
    raw = {d.id: items[d.item].texts[d.text] for d in documents(items, ["test"])}
    texts = enc.embed_texts([raw[i] for i in ids["texts"]])
    assert torch.allclose(texts, torch.from_numpy(np.load(tmp_path / "emb" / "texts.npy")), atol=1e-5)
    # No trainer state travels: the files are the two plain state dicts and two JSON files.
    from safetensors.torch import load_file
    assert set(load_file(out / IMAGE_FILE)) == set(enc.image.state_dict())
    assert json.loads((out / "vocab.json").read_text()) == enc.vocab.words


def test_bad_exports_and_inputs_are_one_line(exported, tmp_path):
    _, best, out = exported
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in FILES:
        (bad / name).write_bytes((out / name).read_bytes())
    (bad / IMAGE_FILE).write_bytes(b"not safetensors")
    assert IMAGE_FILE in input_error(load_encoders, bad)
    (bad / "config.json").write_text("{")
    assert "config.json" in input_error(load_encoders, bad)
    assert "not found" in input_error(load_encoders, tmp_path / "nowhere")
    enc = load_encoders(out)
    assert "no word of the vocabulary" in input_error(enc.embed_texts, ["zzqx qqzz"])
    (tmp_path / "file").write_text("")
    assert cli("export_encoders.py", "--checkpoint", best, "--out", tmp_path / "file",
               check=False).code == 2
    one_line_error(cli("export_encoders.py", "--checkpoint", tmp_path / "none.pt", "--out",
                       tmp_path / "o", check=False), "none.pt")

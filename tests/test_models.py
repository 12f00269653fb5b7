import math
import time

import numpy as np
import pytest
import torch
from torchvision import models as tvm

import models.backbones as image_module
from models import (END, PAD, START, ImageEncoder, ModelConfig, TextEncoder, Vocabulary,
                    build_model, imagenet_cache_path, pad_batch)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty torch hub cache whose downloads fail at once, as on a machine without internet."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    real = image_module.download_weights

    def refused(url, dest):
        # Port 9 on localhost: nothing listens, so the real download code fails immediately.
        real("http://127.0.0.1:9/" + dest.name, dest)

    monkeypatch.setattr(image_module, "download_weights", refused)
    return tmp_path


def small_text(vocab_size=10, word_vectors=None):
    return TextEncoder(vocab_size, word_dim=6, hidden=8, embed_dim=5, word_vectors=word_vectors)


# --- Vocabulary ------------------------------------------------------------------------------

def test_vocab_layout_and_encode():
    vocab = Vocabulary(["cat", "dog", "bird"])
    assert (PAD, START, END) == (0, 1, 2)
    assert len(vocab) == 6
    assert vocab.words == ["cat", "dog", "bird"]
    assert vocab.encode(["dog", "zebra", "cat", "cat", "moon"], max_tokens=10) == [1, 4, 3, 3, 2]
    assert vocab.encode(["dog", "zebra", "cat", "bird"], max_tokens=2) == [1, 4, 3, 2]
    assert vocab.encode(["zebra"], max_tokens=5) == [1, 2]
    with pytest.raises(ValueError, match="max_tokens"):
        vocab.encode(["cat"], max_tokens=0)


def test_vocab_rejects_duplicates_and_non_words():
    with pytest.raises(ValueError, match="'dog' appears twice"):
        Vocabulary(["cat", "dog", "bird", "dog"])
    with pytest.raises(ValueError, match="word 1"):
        Vocabulary(["cat", ""])


def test_vocab_state_round_trip_and_fingerprint():
    vocab = Vocabulary(["cat", "dog", "bird"])
    state = vocab.to_state()
    assert type(state) is list and state == ["cat", "dog", "bird"]
    again = Vocabulary.from_state(state)
    assert again.words == vocab.words
    assert again.fingerprint() == vocab.fingerprint()
    assert again.encode(["bird", "cat"], 5) == vocab.encode(["bird", "cat"], 5)
    assert Vocabulary(["dog", "cat", "bird"]).fingerprint() != vocab.fingerprint()
    assert Vocabulary(["cat", "dog", "birds"]).fingerprint() != vocab.fingerprint()
    with pytest.raises(ValueError, match="list of words"):
        Vocabulary.from_state({"words": state})


def test_pad_batch():
    tokens, lengths = pad_batch([[1, 5, 2], [1, 2], [1, 3, 4, 6, 2]])
    assert tokens.dtype == torch.long and lengths.dtype == torch.long
    assert tokens.tolist() == [[1, 5, 2, 0, 0], [1, 2, 0, 0, 0], [1, 3, 4, 6, 2]]
    assert lengths.tolist() == [3, 2, 5]
    with pytest.raises(ValueError, match="no sequences"):
        pad_batch([])
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        pad_batch([[1, 2], []])


# --- Image encoder ---------------------------------------------------------------------------

def test_image_encoder_shapes_unit_norm_and_head():
    enc = ImageEncoder("resnet18", embed_dim=16, pretrained=False)
    assert enc.feat_dim == 512
    assert isinstance(enc.backbone.fc, torch.nn.Identity)
    assert not any(k.startswith("backbone.fc.") for k in enc.state_dict())
    assert tuple(enc.head.weight.shape) == (16, 512)
    assert torch.all(enc.head.bias == 0.1)
    out = enc(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 16) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_image_head_weight_is_xavier_normal():
    enc = ImageEncoder("resnet18", embed_dim=256, pretrained=False)
    expected_std = math.sqrt(2.0 / (512 + 256))
    w = enc.head.weight.detach().double()
    assert abs(w.mean().item()) < 0.02 * expected_std
    assert abs(w.std().item() / expected_std - 1) < 0.02


def test_unknown_arch_lists_choices():
    with pytest.raises(ValueError, match="resnet18, resnet34, resnet50, resnet101, resnet152"):
        ImageEncoder("vgg16", pretrained=False)


def test_weights_file_is_loaded_and_fc_ignored(tmp_path):
    source = tvm.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)     # fc.weight / fc.bias included, as torchvision's
    enc = ImageEncoder("resnet18", embed_dim=8, pretrained=True, weights_file=path)
    torch.testing.assert_close(enc.backbone.conv1.weight, source.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(enc.backbone.layer4[1].bn2.running_var,
                               source.layer4[1].bn2.running_var, rtol=0, atol=0)


def test_weights_file_missing_is_one_line_error(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(ValueError) as info:
        ImageEncoder("resnet18", weights_file=path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "not found" in message


def test_weights_file_of_another_arch_is_one_line_error(tmp_path):
    path = tmp_path / "r34.pth"
    torch.save(tvm.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError) as info:
        ImageEncoder("resnet18", weights_file=path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "resnet18" in message
    assert "unexpected" in message


def test_weights_file_that_is_not_a_state_dict(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not be read") as info:
        ImageEncoder("resnet18", weights_file=garbage)
    assert "\n" not in str(info.value)
    a_list = tmp_path / "list.pth"
    torch.save([1, 2], a_list)
    with pytest.raises(ValueError, match="not a state dict"):
        ImageEncoder("resnet18", weights_file=a_list)


def test_pretrained_unavailable_offline_is_fast_one_line_error(offline_hub):
    start = time.monotonic()
    with pytest.raises(ValueError) as info:
        ImageEncoder("resnet18", pretrained=True)
    assert time.monotonic() - start < 10
    message = str(info.value)
    cache = imagenet_cache_path("resnet18")
    assert cache.is_relative_to(offline_hub) and cache.name == "resnet18-f37072fd.pth"
    assert "\n" not in message
    assert str(cache) in message and "--image-weights" in message and "--no-pretrained" in message
    assert not cache.exists()


def test_pretrained_weights_found_in_hub_cache_without_download(offline_hub, monkeypatch):
    def no_download(url, dest):
        raise AssertionError("the cached file should have been used")

    monkeypatch.setattr(image_module, "download_weights", no_download)
    source = tvm.resnet18(weights=None)
    cache = imagenet_cache_path("resnet18")
    cache.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cache)
    enc = ImageEncoder("resnet18", embed_dim=8, pretrained=True)
    assert isinstance(enc.backbone.fc, torch.nn.Identity)
    torch.testing.assert_close(enc.backbone.layer1[0].conv1.weight, source.layer1[0].conv1.weight,
                               rtol=0, atol=0)


def test_channels_last_input_gives_same_embeddings():
    enc = ImageEncoder("resnet18", embed_dim=8, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        plain = enc(x)
        enc = enc.to(memory_format=torch.channels_last)
        fast = enc(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


# --- Text encoder ----------------------------------------------------------------------------

def test_embedding_rows_are_the_word_vectors():
    vectors = np.random.default_rng(0).normal(size=(7, 6)).astype(np.float64)
    enc = small_text(10, vectors)
    weight = enc.embedding.weight.detach()
    assert enc.embedding.padding_idx == PAD
    torch.testing.assert_close(weight[3:], torch.tensor(vectors, dtype=torch.float32))
    assert torch.all(weight[PAD] == 0)
    assert weight[START].abs().max() > 0 and weight[END].abs().max() > 0
    assert weight[START:END + 1].abs().max() < 1.0
    assert enc.embedding.weight.requires_grad


def test_text_head_is_initialised_as_the_image_head():
    enc = TextEncoder(10, word_dim=6, hidden=512, embed_dim=256)
    expected_std = math.sqrt(2.0 / (512 + 256))
    w = enc.head.weight.detach().double()
    assert torch.all(enc.head.bias == 0.1)
    assert abs(w.mean().item()) < 0.02 * expected_std
    assert abs(w.std().item() / expected_std - 1) < 0.02


def test_word_vectors_of_wrong_shape_are_refused():
    with pytest.raises(ValueError, match=r"shape \(8, 6\), expected \(7, 6\)"):
        small_text(10, np.zeros((8, 6)))
    with pytest.raises(ValueError, match="no words"):
        TextEncoder(3)


def test_text_encoder_shape_and_unit_norm():
    enc = small_text()
    tokens, lengths = pad_batch([[1, 3, 4, 2], [1, 9, 2], [1, 2]])
    out = enc(tokens, lengths)
    assert out.shape == (3, 5) and out.dtype == torch.float32
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_padding_does_not_change_the_text_embedding():
    enc = small_text().eval()
    seq = [1, 3, 7, 4, 2]
    short, short_len = pad_batch([seq, [1, 5, 2]])
    long = torch.zeros(2, 12, dtype=torch.long)
    long[0, :5] = torch.tensor(seq)
    long[1, :3] = torch.tensor([1, 5, 2])
    long[0, 5:] = 9                       # what lies past the length must not matter either
    long_len = torch.tensor([5, 3])
    alone, alone_len = pad_batch([seq])
    with torch.no_grad():
        a = enc(short, short_len)
        b = enc(long, long_len)
        c = enc(alone, alone_len)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    torch.testing.assert_close(c[0], a[0], rtol=0, atol=1e-6)


def test_text_encoder_rejects_bad_lengths():
    enc = small_text()
    tokens = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="lengths must lie in"):
        enc(tokens, torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="lengths \\[B\\]"):
        enc(tokens, torch.tensor([4]))


# --- Joint model -----------------------------------------------------------------------------

def tiny_config():
    return ModelConfig(arch="resnet18", embed_dim=8, word_dim=6, hidden=8, vocab_size=10)


def test_build_model_from_config_reproduces_outputs_exactly():
    vectors = np.random.default_rng(1).normal(size=(7, 6))
    model = build_model(tiny_config(), word_vectors=vectors).eval()
    assert model.config() == tiny_config()
    images = torch.randn(2, 3, 32, 32)
    tokens, lengths = pad_batch([[1, 3, 4, 2], [1, 8, 2]])
    with torch.no_grad():
        img, txt = model(images, tokens, lengths)
    assert img.shape == (2, 8) and txt.shape == (2, 8)

    rebuilt = build_model(model.config()).eval()
    with torch.no_grad():
        assert not torch.equal(rebuilt.embed_images(images), img)
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.embed_images(images), img)
        assert torch.equal(rebuilt.embed_texts(tokens, lengths), txt)


def test_build_model_rejects_incomplete_config():
    config = tiny_config().to_dict()
    del config["hidden"]
    with pytest.raises(ValueError, match="lacks hidden"):
        ModelConfig.from_dict(config)
    with pytest.raises(ValueError, match="needs a ModelConfig"):
        build_model(tiny_config().to_dict())


def test_model_config_round_trips_as_plain_builtins(tmp_path):
    config = ModelConfig("resnet18", np.int64(8), 6, 8, 10)   # a shape read off numpy stays int
    stored = config.to_dict()
    assert stored == {"arch": "resnet18", "embed_dim": 8, "word_dim": 6, "hidden": 8,
                      "vocab_size": 10, "image_head": "linear"}
    assert all(type(v) in (str, int) for v in stored.values())
    torch.save({"model_config": stored}, tmp_path / "c.pt")
    loaded = torch.load(tmp_path / "c.pt", weights_only=True)["model_config"]
    assert ModelConfig.from_dict(loaded) == config
    # The dict the first checkpoints wrote, with the same five keys, still reads.
    old = {"arch": "resnet18", "embed_dim": 8, "word_dim": 6, "hidden": 8, "vocab_size": 10}
    assert build_model(ModelConfig.from_dict(old)).config() == config


def test_gradients_reach_both_branches_but_not_the_pad_row():
    model = build_model(tiny_config()).train()
    tokens, lengths = pad_batch([[1, 3, 4, 2], [1, 8, 2]])
    img, txt = model(torch.randn(2, 3, 32, 32), tokens, lengths)
    (img * txt).sum().backward()
    assert model.image.backbone.conv1.weight.grad.abs().sum() > 0
    assert model.text.embedding.weight.grad[3].abs().sum() > 0
    assert torch.all(model.text.embedding.weight.grad[PAD] == 0)


def test_bf16_autocast_on_cpu_gives_float32_unit_vectors():
    model = build_model(tiny_config())
    tokens, lengths = pad_batch([[1, 3, 4, 2], [1, 8, 2], [1, 2]])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img, txt = model(torch.randn(3, 3, 32, 32), tokens, lengths)
    for out in (img, txt):
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        torch.testing.assert_close(out.norm(dim=1), torch.ones(3), rtol=0, atol=1e-5)


def test_resnet_entries_are_torchvisions_without_importing_it_first():
    """The table names torchvision's ImageNet files and builds its ResNets, draw for draw; the
    module itself does not import torchvision (the sweep and the demo's driver never build one)."""
    import subprocess
    import sys
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"):
        entry = image_module.BACKBONES[name]
        weights = getattr(tvm, f"ResNet{name[6:]}_Weights").IMAGENET1K_V1
        assert entry.weights.url == weights.url
    torch.manual_seed(3)
    ours = image_module.backbone("resnet18").build()
    torch.manual_seed(3)
    theirs = tvm.resnet18(weights=None)
    theirs.fc = torch.nn.Identity()
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    probe = "import sys, models.backbones, tune_weights; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=image_module.__file__.rsplit("/models/", 1)[0],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

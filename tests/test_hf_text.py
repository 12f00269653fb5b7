"""The transformer text branch (--text-encoder hf) on a tiny random BERT built by the tests: its
tokenizer behind the vocabulary's interface, pooling, freezing, the checkpoint's rebuild, the
optimizer's groups; end to end (slow): training, resume, evaluation, retrieval and export."""
from __future__ import annotations

import copy
import sys
from argparse import Namespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli, error_line
from data.text import transformer
from models import ModelConfig, Vocabulary, build_model, pad_batch
from models.hf_text import HFTextEncoder, HFTokenizer, stored_config, vocabulary_from_state
from test_transformer_vectors import tiny_bert
from training.text_branch import param_groups


@pytest.fixture(scope="module")
def bert(module_tmp):
    folder = tiny_bert(module_tmp("bert") / "tiny-bert")
    tokenizer, body = transformer.load(transformer.resolve(str(folder)))
    return Namespace(folder=folder, json=tokenizer.backend_tokenizer.to_str(), body=body)


def test_tokenizer_behind_the_vocabulary_interface(bert):
    tok = HFTokenizer(bert.json, 16)
    assert tok.limit == 14    # [CLS] and [SEP] take two of the 16 positions
    ids = tok.encode(["the", "red", "cat"], 200)
    assert len(ids) == 5 and ids[0] != ids[-1] and "cat" in tok and len(tok) == len(tok.words)
    assert len(tok.encode("the red cat sits on the road under a tree".split() * 3, 200)) == 16
    assert len(tok.encode("the red cat sits".split(), 2)) == 4
    assert tok.encode([], 5) == [ids[0], ids[-1]]
    again = vocabulary_from_state(tok.to_state())
    assert isinstance(again, HFTokenizer) and again.fingerprint() == tok.fingerprint()
    assert again.encode(["the", "red", "cat"], 200) == ids
    assert HFTokenizer(bert.json, 20).fingerprint() != tok.fingerprint()
    assert isinstance(vocabulary_from_state(["red", "cat"]), Vocabulary)
    with pytest.raises(ValueError, match="no room"):
        HFTokenizer(bert.json, 2)


def test_encoder_pools_padded_batches_alike_and_freezes(bert):
    tok = HFTokenizer(bert.json, 16)
    torch.manual_seed(0)
    enc = HFTextEncoder(stored_config(bert.body.config), 8, body=bert.body).eval()
    texts = [tok.encode(["red", "cat"], 200), tok.encode("the dog runs on the old road".split(), 200)]
    both = enc(*pad_batch(texts))
    alone = enc(*pad_batch(texts[:1]))
    assert torch.allclose(both.norm(dim=1), torch.ones(2)) and both.shape == (2, 8)
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=0)
    assert enc.body.pooler is None   # unused by the pooling: no parameter without a gradient
    cls = HFTextEncoder(stored_config(bert.body.config), 8, pooling="cls", body=bert.body).eval()
    assert not torch.allclose(cls(*pad_batch(texts)), both)
    frozen = HFTextEncoder(stored_config(bert.body.config), 8, frozen=True)
    frozen.train()
    assert not frozen.body.training and frozen.head.training
    assert not any(p.requires_grad for p in frozen.body.parameters())
    with pytest.raises(ValueError, match="pooling"):
        HFTextEncoder(stored_config(bert.body.config), 8, pooling="max")


def test_checkpoint_config_rebuilds_the_branch(bert):
    tok = HFTokenizer(bert.json, 16)
    config = ModelConfig("resnet18", 16, 1, 1, len(tok), text_encoder="hf")
    torch.manual_seed(0)
    model = build_model(config, text_body=bert.body).eval()
    saved = model.config()
    assert saved.text_encoder == "hf" and saved.word_dim == 32 and saved.text_config["hidden_size"] == 32
    again = build_model(ModelConfig.from_dict(saved.to_dict())).eval()
    again.load_state_dict(model.state_dict())
    ids, lengths = pad_batch([tok.encode(["red", "cat"], 200)])
    torch.testing.assert_close(again.embed_texts(ids, lengths), model.embed_texts(ids, lengths))
    # The optimizer: the transformer at --text-lr, the rest at --lr; frozen, the head only.
    groups = param_groups(model, Namespace(text_lr=1e-5))
    assert len(groups) == 2 and groups[1]["lr"] == 1e-5
    assert len(groups[1]["params"]) == len([p for p in model.text.body.parameters()])
    frozen = build_model(ModelConfig("resnet18", 16, 1, 1, len(tok), text_encoder="hf",
                                     text_frozen=True), text_body=copy.deepcopy(bert.body))
    assert len(param_groups(frozen, Namespace(text_lr=1e-5))) == 1
    # The GRU's model config is unchanged by the new keys.
    assert ModelConfig.from_dict({"arch": "resnet18", "embed_dim": 8, "word_dim": 4, "hidden": 4,
                                  "vocab_size": 9}).text_encoder == "gru"


def test_freeze_text_needs_the_transformer_branch(tmp_path):
    result = cli("train_cross_modal_retrieval_model.py", "1", "0", "0", "--dataset",
                 tmp_path / "none.jsonl", "--work-dir", tmp_path, "--freeze-text", check=False)
    error_line(result, "--freeze-text", "--text-encoder hf")


@pytest.fixture(scope="module")
def e2e(module_tmp):
    """Synthetic data and its Doc2Vec text side, for the end-to-end tests."""
    from conftest import quick_text_side
    from demo.synthetic import generate_synthetic
    root = module_tmp("e2e")
    manifest = generate_synthetic(root / "data", n_items=80, image_size=16, seed=5)
    quick_text_side(manifest, root / "work")
    return root, manifest, root / "work"


@pytest.mark.slow
def test_train_resume_evaluate_retrieve_export(bert, e2e):
    from models.exported import load_encoders
    from pipeline import TINY_TRAIN
    root, manifest, work = e2e
    train = ["train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
             "--work-dir", work, *TINY_TRAIN, "--image-size", "16", "--text-encoder", "hf",
             "--text-model", bert.folder]
    cli(*train, "--run-name", "hf", "--text-lr", "1e-3", "--epochs", "1")
    cli(*train, "--run-name", "hf", "--text-lr", "1e-3", "--epochs", "2", "--resume")
    best = work / "models" / "hf" / "best.pt"
    out = cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0").out
    assert "rsum" in out and "text overlap@10" in out   # Doc2Vec neighbours, the run's space
    cli("retrieve.py", "--checkpoint", best, "--query", "rocket orbit", "--out", root / "page")
    assert (root / "page" / "index.html").is_file()
    cli("export_encoders.py", "--checkpoint", best, "--out", root / "export")
    enc = load_encoders(root / "export")
    assert isinstance(enc.text, HFTextEncoder) and isinstance(enc.vocab, HFTokenizer)
    assert torch.allclose(enc.embed_texts(["a rocket in orbit"]).norm(dim=1), torch.ones(1))
    # Frozen: the transformer's weights leave training as they came in.
    cli(*train, "--run-name", "frozen", "--freeze-text", "--epochs", "1")
    state = torch.load(work / "models" / "frozen" / "last.pt", weights_only=True)
    start = load_file(str(bert.folder / "model.safetensors"))
    word = "embeddings.word_embeddings.weight"
    key = next(k for k in state["model"] if k.endswith(word))
    torch.testing.assert_close(state["model"][key], start[next(k for k in start if k.endswith(word))])
    assert state["model_config"]["text_frozen"] is True


def test_autocast_bf16_gives_float32_unit_vectors(bert):
    """The dtype logic of a bf16 run (autocast, as on CUDA) checked on the CPU: the transformer's
    and the head's matrix products run in bf16 (the vectors move), the unit vectors come out
    float32 and near the fp32 ones."""
    enc = HFTextEncoder(stored_config(bert.body.config), embed_dim=8,
                        body=copy.deepcopy(bert.body)).eval()
    tokens = torch.randint(5, bert.body.config.vocab_size, (3, 7),
                           generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([7, 4, 2])
    with torch.no_grad():
        full = enc(tokens, lengths)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = enc(tokens, lengths)
            head = enc.head(torch.randn(2, enc.hidden))
    assert head.dtype == torch.bfloat16 and half.dtype == torch.float32
    torch.testing.assert_close(half.norm(dim=1), torch.ones(3))
    assert 0 < (full - half).abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("frozen", [False, True], ids=["fine-tuned", "frozen"])
def test_ddp_over_two_cpu_processes(bert, e2e, tmp_path, frozen):
    """torchrun, 2 processes (gloo): every trained parameter gets a gradient (the pooler the
    mean never reads is gone), each process takes half of the epoch, the ranks stay equal."""
    import shutil
    from models.checkpoint import load_checkpoint
    from pipeline import TINY_TRAIN, run
    _, manifest, work = e2e
    work = shutil.copytree(work, tmp_path / "w", ignore=shutil.ignore_patterns("models"))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", str(29541 + frozen)]
    proc = run("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
               "--work-dir", work, *TINY_TRAIN, "--image-size", "16", "--text-encoder", "hf",
               "--text-model", bert.folder, "--epochs", "1", "--device", "cpu", "--run-name", "ddp",
               *(["--freeze-text"] if frozen else ["--text-lr", "1e-3"]), launcher=launcher)
    state = load_checkpoint(work / "models" / "ddp" / "last.pt")
    n_train = sum(1 for line in manifest.read_text().splitlines() if '"train"' in line)
    assert 0 < state["step"] <= -(-n_train // 16) // 2 + 1
    assert proc.stdout.count("epoch 0:") == 1
    assert state["model_config"]["text_frozen"] is frozen


def test_a_frozen_branch_keeps_each_texts_pooled_states(bert):
    """--freeze-text's cache: each text's states computed once, on their own (the same whatever
    batch the text first came in), up to the limit; the outputs those of the transformer."""
    enc = HFTextEncoder(stored_config(bert.body.config), embed_dim=8, frozen=True,
                        body=copy.deepcopy(bert.body))
    with pytest.raises(ValueError, match="frozen"):
        HFTextEncoder(stored_config(bert.body.config), embed_dim=8,
                      body=copy.deepcopy(bert.body)).keep_pooled(10)
    calls = []
    enc.body.register_forward_hook(lambda *_: calls.append(1))
    words = bert.body.config.vocab_size
    tokens = torch.randint(5, words, (4, 7), generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([7, 4, 2, 4])
    tokens[3] = tokens[1]                          # one text twice in a batch
    with torch.no_grad():
        direct = enc(tokens, lengths)
        enc.keep_pooled(3)
        kept = enc(tokens, lengths)
        assert len(calls) == 1 + 3 and len(enc.memo) == 3   # three distinct texts, one each
        torch.testing.assert_close(kept, direct, atol=1e-5, rtol=0)
        # Another batch: the same text, padded otherwise, gives the kept states exactly.
        again = enc(torch.cat([tokens[2:3], tokens[0:1]]), torch.tensor([2, 7]))
        assert len(calls) == 4
        assert torch.equal(again[0], kept[2]) and torch.equal(again[1], kept[0])
        enc(torch.full((1, 5), 5), torch.tensor([5]))   # a fourth text: past the limit
        assert len(calls) == 5 and len(enc.memo) == 3
    assert "memo" not in "".join(enc.state_dict())

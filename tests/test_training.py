"""The training script end to end on the CPU: loss, TensorBoard, checkpoints, resume, DDP, bad images."""
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from demo.synthetic import generate_synthetic
from pipeline import TINY_TRAIN, run, text_side
from common.errors import InputError
from data.datasets.items import Document
from models import ModelConfig
from models.checkpoint import load_checkpoint, load_for_resume, rebuild, save_checkpoint
from training.distributed import Context
from training.neighbors import NeighborSampler
from training.prepare import drop_unknown

TAGS = {"data/train_loss", "data/l_i2t", "data/l_sym", "data/l_img", "data/l_text", "data/lr",
        "data/val_loss"}
RUN = "l_i2t_l_sym_1_l_img_0_3_l_text_0_2"


@pytest.fixture(scope="module")
def prepared(module_tmp):
    root = module_tmp("train")
    manifest = generate_synthetic(root / "data", n_items=120, image_size=32, seed=1)
    text_side(manifest, root / "work")
    return manifest, root / "work"


def train(manifest, work, *extra, weights=("1", "0.3", "0.2"), check=True):
    return run("train_cross_modal_retrieval_model.py", *weights, "--dataset", manifest,
               "--work-dir", work, *TINY_TRAIN, *extra, check=check)


def scalars(log_dir: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [e.value for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


@pytest.mark.slow
def test_training_lowers_loss_logs_every_tag_and_checkpoint_rebuilds(prepared, tmp_path):
    manifest, work = prepared
    work = shutil.copytree(work, tmp_path / "w")
    proc = train(manifest, work, "--epochs", "5", "--lr", "1e-3")
    best = work / "models" / RUN / "best.pt"
    assert proc.stdout.strip().splitlines()[-1] == str(best)
    logs = scalars(best.parent)
    assert TAGS <= set(logs)
    assert len(logs["data/val_loss"]) == 5
    loss = logs["data/train_loss"]
    per_epoch = len(loss) // 5
    # The authors' head bias (0.1) starts every embedding near one direction: a slow start.
    assert sum(loss[-per_epoch:]) / per_epoch < 0.97 * sum(loss[:per_epoch]) / per_epoch
    assert all(v > 0 for v in logs["data/l_img"]) and all(v > 0 for v in logs["data/l_text"])

    state = load_checkpoint(best)
    assert {"model", "model_config", "vocab", "optimizer", "scheduler", "epoch", "best_val",
            "config"} <= set(state)
    assert state["best_val"] == min(logs["data/val_loss"])
    model, vocab = rebuild(state)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name]), name
    tokens = torch.tensor([vocab.encode(vocab.words[:5], 10)])
    out = model.embed_texts(tokens, torch.tensor([tokens.shape[1]]))
    assert out.shape == (1, 32) and torch.allclose(out.norm(dim=1), torch.ones(1))


@pytest.mark.slow
def test_resume_after_interruption_matches_uninterrupted_run(prepared, tmp_path):
    manifest, work = prepared
    a = shutil.copytree(work, tmp_path / "a")
    b = shutil.copytree(work, tmp_path / "b")
    train(manifest, a, "--epochs", "3")
    train(manifest, b, "--epochs", "2")
    proc = train(manifest, b, "--epochs", "3", "--resume")
    assert "resuming" in proc.stdout
    sa = load_checkpoint(a / "models" / RUN / "last.pt")
    sb = load_checkpoint(b / "models" / RUN / "last.pt")
    assert sa["epoch"] == sb["epoch"] == 2 and sa["step"] == sb["step"]
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][name]), name
    assert sa["scheduler"] == sb["scheduler"] and sa["best_val"] == sb["best_val"]
    steps_b = scalars(b / "models" / RUN)["data/train_loss"]
    assert len(steps_b) == sa["step"]   # no duplicated or lost iterations in the log


@pytest.mark.slow
def test_baseline_weights_still_log_every_term(prepared, tmp_path):
    # As the release: all four terms at every step whatever their weights, so that the baseline's
    # l_img and l_text curves exist; a zero weight keeps its term out of the loss only.
    manifest, work = prepared
    work = shutil.copytree(work, tmp_path / "w")
    train(manifest, work, "--epochs", "1", weights=("1", "0", "0"))
    logs = scalars(work / "models" / "l_i2t_l_sym_1_l_img_0_l_text_0")
    for tag in ("data/l_i2t", "data/l_sym", "data/l_img", "data/l_text"):
        assert len(logs[tag]) == len(logs["data/train_loss"]) and all(v > 0 for v in logs[tag])
    for total, i2t, sym in zip(logs["data/train_loss"], logs["data/l_i2t"], logs["data/l_sym"]):
        assert total == pytest.approx(i2t + sym, rel=1e-5)


@pytest.mark.slow
def test_unknown_word_documents_are_dropped_and_clean_hinge_trains(tmp_path):
    """Documents without a Doc2Vec word are dropped and reported, never trained as [START, END]
    nor drawn as neighbours; --negatives clean and --loss angular-hinge train end to end."""
    manifest = generate_synthetic(tmp_path / "data", n_items=60, image_size=32, seed=2)
    lines = manifest.read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    odd = [r for r in rows if r["split"] == "train"][:2]
    for k, r in enumerate(odd):     # words of their own: below Doc2Vec's --min-count 2
        r["texts"] = [f"Quixotic{k} zephyrs{k} waltzing{k}."]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    text_side(manifest, tmp_path / "work")
    proc = train(manifest, tmp_path / "work", "--epochs", "1", "--negatives", "clean",
                 "--loss", "angular-hinge")
    line = next(x for x in proc.stdout.splitlines() if "no word in the Doc2Vec vocabulary" in x)
    assert line.startswith("dropped 2 ") and all(r["id"] in line for r in odd)
    logs = scalars(tmp_path / "work" / "models" / RUN)
    assert TAGS <= set(logs) and all(v >= 0 for v in logs["data/train_loss"])
    state = load_checkpoint(tmp_path / "work" / "models" / RUN / "last.pt")
    assert state["config"]["negatives"] == "clean" and state["config"]["loss"] == "angular-hinge"


@pytest.mark.slow
def test_ddp_over_two_cpu_processes_trains(prepared, tmp_path):
    manifest, work = prepared
    work = shutil.copytree(work, tmp_path / "w")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29517"]
    proc = run("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
               "--work-dir", work, *TINY_TRAIN, "--epochs", "1", "--device", "cpu", launcher=launcher)
    state = load_checkpoint(work / "models" / RUN / "last.pt")
    train(manifest, shutil.copytree(prepared[1], tmp_path / "s"), "--epochs", "1")
    single_state = load_checkpoint(tmp_path / "s" / "models" / RUN / "last.pt")
    # Each of the two processes takes half of every epoch: half the optimizer steps.
    assert 0 < state["step"] <= (single_state["step"] + 1) // 2 + 1
    assert proc.stdout.count("epoch 0:") == 1   # only rank 0 reports


@pytest.mark.slow
def test_bad_images_are_reported_and_left_out_or_stop_the_run(prepared, tmp_path):
    manifest, work = prepared
    data = shutil.copytree(manifest.parent, tmp_path / "data")
    work = shutil.copytree(work, tmp_path / "w")
    images = sorted((data / "images").iterdir())
    images[0].write_bytes(b"not an image")
    images[1].unlink()
    proc = train(data / manifest.name, work, "--epochs", "1", "--max-bad-images", "0.05")
    assert "left out 2 of" in proc.stdout and str(images[1]) in proc.stdout
    proc = train(data / manifest.name, work, "--epochs", "1", "--max-bad-images", "0.001",
                 "--overwrite", check=False)
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "--max-bad-images" in err[0]


def test_missing_work_files_name_the_script_to_run(prepared, tmp_path):
    manifest, _ = prepared
    proc = train(manifest, tmp_path / "empty", "--epochs", "1", check=False)
    assert proc.returncode == 2 and "run train_doc2vec.py" in proc.stderr


def test_resume_refuses_another_model_or_vocabulary(tmp_path):
    config = ModelConfig("resnet18", embed_dim=32, word_dim=8, hidden=16, vocab_size=10)
    last = tmp_path / "last.pt"
    with pytest.raises(InputError, match="no run to resume"):
        load_for_resume(last, config, "abc")
    save_checkpoint({"model": {}, "model_config": config.to_dict(), "vocab": [],
                     "vocab_fingerprint": "abc"}, last)
    assert load_for_resume(last, config, "abc")["vocab_fingerprint"] == "abc"
    with pytest.raises(InputError, match="embed_dim 32 -> 64"):
        load_for_resume(last, replace(config, embed_dim=64), "abc")
    with pytest.raises(InputError, match="Doc2Vec vocabulary"):
        load_for_resume(last, config, "other")


def test_documents_without_a_vocabulary_word_are_dropped_counted_and_never_neighbours(capsys):
    docs = [Document(f"d{i}", i, 0) for i in range(5)]
    encoded = [[1, 5, 2], [1, 2], [1, 6, 7, 2], [1, 2], [1, 8, 2]]
    kept, kept_encoded = drop_unknown(docs, encoded, Context())
    assert [d.id for d in kept] == ["d0", "d2", "d4"]
    assert kept_encoded == [[1, 5, 2], [1, 6, 7, 2], [1, 8, 2]]
    assert ("dropped 2 train/val documents with no word in the Doc2Vec vocabulary (first: d1, d3)"
            in capsys.readouterr().out)
    # The kNN file still lists them (it was built from the tokens, before the vocabulary).
    knn = {"ids": [d.id for d in docs],
           "neighbors": np.array([[i] + [j for j in range(5) if j != i] for i in range(5)]),
           "distances": np.array([[0, .1, .2, .3, .4]] * 5, dtype=np.float32)}
    sampler = NeighborSampler(knn, kept, pool=10)
    for row, others in enumerate(({1, 2}, {0, 2}, {0, 1})):
        start = sampler.offsets[row]
        assert set(sampler.candidates[start:start + sampler.counts[row]].tolist()) == others


def test_an_improved_epoch_writes_its_state_once_and_the_next_last_leaves_best_alone(tmp_path, monkeypatch):
    import os
    from training.loop import save_epoch
    from training.step import StepLog
    log = StepLog(None)
    save_epoch({"epoch": 0, "w": torch.zeros(3)}, tmp_path, True, log)
    best, last = tmp_path / "best.pt", tmp_path / "last.pt"
    assert os.path.samefile(best, last)          # one write, two names
    save_epoch({"epoch": 1, "w": torch.ones(3)}, tmp_path, False, log)
    assert not os.path.samefile(best, last)
    assert torch.load(best)["epoch"] == 0 and torch.load(last)["epoch"] == 1
    # Where the file system has no hard links, last.pt is written as a copy.
    monkeypatch.setattr(os, "link", lambda *a: (_ for _ in ()).throw(OSError(1, "no links")))
    save_epoch({"epoch": 2, "w": torch.full((3,), 2.0)}, tmp_path, True, log)
    assert torch.load(best)["epoch"] == torch.load(last)["epoch"] == 2
    assert not os.path.samefile(best, last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]   # no temporary left

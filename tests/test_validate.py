"""Validation recall every epoch and --select-by: what best.pt, early stopping and the plateau
scheduler follow."""
import json
import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import RUN, cli, input_error
from demo.synthetic import generate_synthetic
from models.checkpoint import load_checkpoint
from pipeline import TINY_TRAIN
from training.validate import RECALL_TAGS, Selection, recall_scalars


def test_selection_follows_the_loss_down_or_the_rsum_up():
    loss = Selection("loss")
    assert loss.mode == "min" and loss.best == math.inf
    assert [loss.update(v) for v in (3.0, 2.0, 2.5, 2.0, 1.0)] == [True, True, False, False, True]
    assert loss.best == 1.0 and loss.since_best == 0
    rsum = Selection("rsum")
    assert rsum.mode == "max" and rsum.best == -math.inf
    assert [rsum.update(v) for v in (10.0, 30.0, 20.0, 30.0)] == [True, True, False, False]
    assert rsum.best == 30.0 and rsum.since_best == 2
    recall = {"rsum": 42.0}
    assert loss.value(1.5, recall) == 1.5 and rsum.value(1.5, recall) == 42.0
    with pytest.raises(ValueError, match="select_by"):
        Selection("r1")


def test_resume_keeps_the_selection_and_refuses_another():
    state = {"best_val": 55.0, "since_best": 2, "select_by": "rsum"}
    s = Selection.resumed("rsum", state, "last.pt")
    assert (s.best, s.since_best, s.mode) == (55.0, 2, "max")
    msg = input_error(Selection.resumed, "loss", state, "last.pt")
    assert "last.pt" in msg and "--select-by rsum" in msg
    # Checkpoints from before the flag followed the loss.
    old = {"best_val": 1.2, "since_best": 0}
    assert Selection.resumed("loss", old, "last.pt").best == 1.2
    assert "--select-by loss" in input_error(Selection.resumed, "rsum", old, "last.pt")


def test_recall_scalars_are_the_six_recalls_and_rsum():
    metrics = {"i2t": {"r1": 1.0, "r5": 2.0, "r10": 3.0, "medr": 9.0},
               "t2i": {"r1": 4.0, "r5": 5.0, "r10": 6.0, "medr": 9.0}, "rsum": 21.0}
    assert recall_scalars(metrics) == dict(zip(RECALL_TAGS, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 21.0]))


@pytest.mark.slow
def test_recall_is_logged_at_the_global_step_selects_best_and_matches_evaluation(tmp_path):
    manifest = generate_synthetic(tmp_path / "data", n_items=120, image_size=32, seed=3,
                                  texts_per_item=2)
    work = tmp_path / "work"
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "1"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "20")
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "20")
    out = cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
              "--work-dir", work, *TINY_TRAIN, "--epochs", "3", "--lr", "1e-3",
              "--select-by", "rsum").out
    assert "val rsum" in out and "% of the epoch)" in out
    log_dir = work / "models" / RUN
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    steps = {t: [e.step for e in acc.Scalars(t)] for t in ("data/val_loss", *RECALL_TAGS)}
    values = {t: [e.value for e in acc.Scalars(t)] for t in ("data/val_loss", *RECALL_TAGS)}
    train_steps = [e.step for e in acc.Scalars("data/train_loss")]
    per_epoch = len(train_steps) // 3
    # Each epoch's validation sits at the step of the epoch's last training step.
    expected = [train_steps[per_epoch * (e + 1) - 1] for e in range(3)]
    assert all(s == expected for s in steps.values()), steps
    for k in range(3):
        six = sum(values[t][k] for t in RECALL_TAGS[:-1])
        assert values["data/val_rsum"][k] == pytest.approx(six, abs=1e-3)

    best, last = load_checkpoint(log_dir / "best.pt"), load_checkpoint(log_dir / "last.pt")
    assert best["select_by"] == "rsum" and best["best_val"] == pytest.approx(max(values["data/val_rsum"]), abs=1e-3)
    assert best["val_recall"]["rsum"] == best["best_val"]
    assert last["scheduler"]["mode"] == "max"
    # The same numbers as evaluate_retrieval.py gives on the validation split.
    target = tmp_path / "val.json"
    cli("evaluate_retrieval.py", "--checkpoint", log_dir / "last.pt", "--split", "val",
        "--out", target, "--device", "cpu", "--workers", "0")
    evaluated = json.loads(target.read_text())
    for d in ("i2t", "t2i"):
        for k in ("r1", "r5", "r10"):
            assert last["val_recall"][d][k] == pytest.approx(evaluated[d][k], abs=1e-6), (d, k)
    # Resuming under the other rule is refused with one line (every other setting as trained:
    # a changed one is refused on its own).
    resume = ["train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
              "--work-dir", work, *TINY_TRAIN, "--epochs", "4", "--lr", "1e-3", "--resume"]
    proc = cli(*resume, "--select-by", "loss", check=False)
    assert proc.code == 2 and "--select-by rsum" in proc.err
    assert torch.equal(load_checkpoint(log_dir / "last.pt")["model"]["text.head.bias"],
                       last["model"]["text.head.bias"])
    # Without --select-by the resumed run keeps its own rule.
    cli(*resume)
    again = load_checkpoint(log_dir / "last.pt")
    assert again["epoch"] == last["epoch"] + 1 and again["select_by"] == "rsum"
    assert again["scheduler"]["mode"] == "max"


def test_epoch_line_marks_the_followed_value_best():
    from training.loop import epoch_line
    recall = {"rsum": 111.5}
    by_loss = epoch_line(4, 14.8, 4.149, recall, True, 15.7, (60.0, 2.0, 1.0), "loss")
    assert "val loss 4.1490 (best), val rsum 111.5," in by_loss
    by_rsum = epoch_line(4, 14.8, 4.149, recall, True, 15.7, (60.0, 2.0, 1.0), "rsum")
    assert "val loss 4.1490, val rsum 111.5 (best)," in by_rsum
    assert "(best)" not in epoch_line(4, 14.8, 4.149, recall, False, 15.7, (60.0, 2.0, 1.0), "rsum")

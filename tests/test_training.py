"""The training script end to end on the CPU: loss, TensorBoard, checkpoints, resume, DDP, bad images."""
import shutil
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from demo.synthetic import generate_synthetic
from pipeline import TINY_TRAIN, run, text_side
from data.items import InputError
from models.checkpoint import load_checkpoint, load_for_resume, rebuild, save_checkpoint

TAGS = {"data/train_loss", "data/l_i2t", "data/l_sym", "data/l_img", "data/l_text", "data/lr",
        "data/val_loss"}
RUN = "l_i2t_l_sym_1_l_img_0_3_l_text_0_2"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
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


def test_baseline_weights_skip_the_neighbour_terms(prepared, tmp_path):
    manifest, work = prepared
    work = shutil.copytree(work, tmp_path / "w")
    train(manifest, work, "--epochs", "1", weights=("1", "0", "0"))
    logs = scalars(work / "models" / "l_i2t_l_sym_1_l_img_0_l_text_0")
    assert set(logs["data/l_img"]) == {0.0} and set(logs["data/l_text"]) == {0.0}
    assert all(v > 0 for v in logs["data/l_sym"])


def test_ddp_over_two_cpu_processes_trains(prepared, tmp_path):
    manifest, work = prepared
    work = shutil.copytree(work, tmp_path / "w")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_port", "29517"]
    proc = run("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
               "--work-dir", work, *TINY_TRAIN, "--epochs", "1", "--device", "cpu", launcher=launcher)
    state = load_checkpoint(work / "models" / RUN / "last.pt")
    single = train(manifest, shutil.copytree(prepared[1], tmp_path / "s"), "--epochs", "1")
    single_state = load_checkpoint(tmp_path / "s" / "models" / RUN / "last.pt")
    # Each of the two processes takes half of every epoch: half the optimizer steps.
    assert 0 < state["step"] <= (single_state["step"] + 1) // 2 + 1
    assert proc.stdout.count("epoch 0:") == 1   # only rank 0 reports


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
    config = {"arch": "resnet18", "embed_dim": 32, "word_dim": 8, "hidden": 16, "vocab_size": 10}
    last = tmp_path / "last.pt"
    with pytest.raises(InputError, match="no run to resume"):
        load_for_resume(last, config, "abc")
    save_checkpoint({"model": {}, "model_config": config, "vocab": [], "vocab_fingerprint": "abc"}, last)
    assert load_for_resume(last, config, "abc")["vocab_fingerprint"] == "abc"
    with pytest.raises(InputError, match="embed_dim 32 -> 64"):
        load_for_resume(last, {**config, "embed_dim": 64}, "abc")
    with pytest.raises(InputError, match="Doc2Vec vocabulary"):
        load_for_resume(last, config, "other")

"""What happens when things go wrong: stale intermediates, a used or locked log folder, a
diverging loss, crafted pickles and checkpoints, folders that cannot be written, a full disk
(faked, and a real small tmpfs), unusual image modes, bad Doc2Vec settings, text the
preprocessing drops, the text side's reproducibility, FIFOs where files should be, a resume with
other settings, a Doc2Vec model retrained after the checkpoint, sweep weights that %g would
merge, strings that cannot be UTF-8, and batches without negatives. Each case is the README's
"What happens when things go wrong"."""
from __future__ import annotations

import builtins
import errno
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from common.errors import InputError
from common.places import MARKER
from common.workdir import atomic_write, read_pickle
from data.datasets.readers import load_dataset
from data.images.read import read_image, to_rgb
from data.text.preprocess import preprocess
from demo.synthetic import generate_synthetic
from fixtures import write_topic_manifest
from conftest import RUN, Alarm, cli, error_line, input_error, quick_text_side, tmp_files
from pipeline import ROOT, TINY_TRAIN

TRAIN = "train_cross_modal_retrieval_model.py"
WEIGHTS = ("1", "0.3", "0.2")


@pytest.fixture(scope="module")
def pipeline(module_tmp):
    """A tiny dataset, its text side, and one trained epoch (run folder RUN)."""
    root = module_tmp("faults")
    # No item marked val: the validation slice then comes from --val-size and --seed.
    manifest = generate_synthetic(root / "data", n_items=48, image_size=32, seed=2, val_fraction=0)
    work = root / "work"
    common = quick_text_side(manifest, work)
    cli(TRAIN, *WEIGHTS, *common, *TINY_TRAIN, "--epochs", "1")
    return manifest, work


def copy_work(pipeline, tmp_path: Path, runs: bool = False) -> Path:
    """A copy of the work folder (without the trained run unless `runs`)."""
    ignore = None if runs else shutil.ignore_patterns("models")
    return shutil.copytree(pipeline[1], tmp_path / "work", ignore=ignore)


def train(manifest: Path, work: Path, *extra, check: bool = True):
    """The trainer on the tiny dataset, one epoch unless `extra` says otherwise (the last wins)."""
    return cli(TRAIN, *WEIGHTS, "--dataset", manifest, "--work-dir", work, *TINY_TRAIN,
               "--epochs", "1", *extra, check=check)


# --- 1. stale intermediates --------------------------------------------------------------------

def test_a_different_preprocessing_flag_names_the_setting_both_values_and_the_step(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path)
    result = cli("extract_doc2vec_vectors.py", "--dataset", manifest, "--work-dir", work,
                 "--max-sentences", "0", check=False)
    error_line(result, "doc2vec_model.gensim was made with --max-sentences 2",
               "this run has --max-sentences 0", "rerun train_doc2vec.py")


def test_a_different_split_is_refused_before_any_image_is_decoded(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path)
    result = train(manifest, work, "--val-size", "3", check=False)
    error_line(result, "--val-size (not given)", "--val-size 3", "train/val/test split",
               "rerun train_doc2vec.py, extract_doc2vec_vectors.py and knn_document_features.py")
    assert "images:" not in result.out       # neither the cache nor a file was read


def test_an_edited_dataset_is_refused(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path)
    data = shutil.copytree(manifest.parent, tmp_path / "data")
    records = [json.loads(line) for line in (data / manifest.name).read_text().splitlines()]
    records[0]["texts"] = ["An entirely different text about rockets and orbits."]
    (data / manifest.name).write_text("".join(json.dumps(r) + "\n" for r in records))
    result = train(data / manifest.name, work, check=False)
    error_line(result, "another version of the dataset", "rerun train_doc2vec.py")
    # The same dataset moved elsewhere, unchanged, is the same dataset.
    moved = shutil.copytree(manifest.parent, tmp_path / "moved")
    assert train(moved / manifest.name, work, "--epochs", "0").code == 0


def test_neighbours_of_an_earlier_doc2vec_model_are_refused(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path)
    cli("train_doc2vec.py", "--dataset", manifest, "--work-dir", work, "--workers", "0",
        "--min-count", "2", "--epochs", "5", "--window", "5")
    result = train(manifest, work, check=False)
    error_line(result, "document_feats_knn.pickle was made from a train_doc2vec.py output with "
               "--window 20", "--window 5",
               "rerun extract_doc2vec_vectors.py and knn_document_features.py")


def test_files_without_a_record_name_the_step_that_remakes_them(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path)
    knn = read_pickle(work / "document_feats_knn.pickle", "")
    del knn["provenance"]
    (work / "document_feats_knn.pickle").write_bytes(pickle.dumps(knn))
    result = train(manifest, work, check=False)
    error_line(result, "document_feats_knn.pickle: no provenance record",
               "rerun extract_doc2vec_vectors.py and knn_document_features.py")


def test_evaluation_refuses_a_dataset_changed_since_training(pipeline):
    manifest, work = pipeline
    best = work / "models" / RUN / "best.pt"
    original = manifest.read_text()
    try:
        lines = original.splitlines()
        manifest.write_text("\n".join(lines[1:]) + "\n")      # one item fewer
        result = cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0", check=False)
        error_line(result, "best.pt was made from another version of the dataset",
                   "48 items then, 47 now", "pass --dataset")
    finally:
        manifest.write_text(original)


# --- 2. the log folder -------------------------------------------------------------------------

def test_an_earlier_run_is_kept_unless_resume_or_overwrite(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path, runs=True)
    folder = work / "models" / RUN
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    assert {"best.pt", "last.pt"} <= set(before) and any(n.startswith("events") for n in before)
    result = train(manifest, work, check=False)
    error_line(result, "holds an earlier run", "--resume", "--overwrite", "--run-name")
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before

    # --overwrite removes that run first; --epochs 0 trains nothing and prints no best.pt.
    out = train(manifest, work, "--overwrite", "--epochs", "0").out
    assert "removed the earlier run's" in out and str(folder / "best.pt") not in out
    assert "no checkpoint written" in out.splitlines()[-1]
    gone = set(before) - {".lock"}     # the lock file stays: it is how the next run locks
    assert not list(folder.glob("*.pt")) and not gone & {p.name for p in folder.iterdir()}


def test_a_second_trainer_is_refused_and_a_killed_ones_lock_does_not_block(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path)
    folder = work / "models" / "mine"
    folder.mkdir(parents=True)
    # Another process holding the folder's lock, as a running trainer does.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(folder / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, f'{os.getpid()}\\n'.encode())\n"
         "print('locked', flush=True); time.sleep(120)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = train(manifest, work, "--run-name", "mine", check=False)
        error_line(result, "another training run", f"PID {holder.pid}", "--run-name")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    # Killed with -9, it left its lock file and PID behind; the kernel dropped the lock itself.
    assert (folder / ".lock").read_text().strip() == str(holder.pid)
    out = train(manifest, work, "--run-name", "mine", "--epochs", "0").out
    assert "no checkpoint written" in out
    assert (folder / ".lock").read_text().strip() == str(os.getpid())


def test_run_name_checks():
    for flags, phrase in ((["--run-name", "a/b"], "plain folder name"),
                          (["--run-name", "a\nb"], "plain folder name"),
                          (["--run-name", "a\x1b[2Jb"], "plain folder name"),
                          (["--run-name", "x", "--log-dir", "y"], "pass one"),
                          (["--resume", "--overwrite"], "pass one")):
        result = cli(TRAIN, *WEIGHTS, "--dataset", "missing.jsonl", *flags, check=False)
        assert result.code == 2 and phrase in result.err, result.err


# --- 3. divergence and bad numbers -------------------------------------------------------------

def test_a_diverging_loss_stops_at_once_with_a_nonzero_exit(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path)
    folder = work / "models" / RUN
    result = train(manifest, work, "--epochs", "5", "--lr", "1e9", check=False)
    line = error_line(result, "the loss is ", "learning rate 1e+09", "no checkpoint was written")
    assert "nan" in line or "inf" in line
    assert int(line.split("at step ")[1].split()[0]) <= 2      # at once: one step late at most
    assert not list(folder.glob("*.pt")) and "best.pt" not in result.out


def test_a_diverging_loss_keeps_the_last_finite_checkpoint(pipeline, tmp_path, monkeypatch):
    import training.step
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path, runs=True)
    folder = work / "models" / RUN
    last = (folder / "last.pt").read_bytes()
    real_step = training.step.train_step

    def diverging(*a, **k):   # the first step of the resumed epoch goes to NaN in L_sym
        loss, parts = real_step(*a, **k)
        return loss * float("nan"), {**parts, "l_sym": parts["l_sym"] * float("nan")}
    monkeypatch.setattr(training.step, "train_step", diverging)
    first = torch.load(folder / "last.pt", weights_only=True)["step"] + 1
    result = train(manifest, work, "--resume", "--epochs", "5", check=False)
    error_line(result, f"the loss is nan at step {first} (term l_sym, learning rate 0.0001)",
               f"the last checkpoint, {folder / 'last.pt'} (epoch 0), is from before it")
    assert (folder / "last.pt").read_bytes() == last            # no NaN checkpoint written
    assert "epoch 1:" not in result.out and str(folder / "best.pt") not in result.out
    assert not tmp_files(folder)


@pytest.mark.parametrize("flags, phrase", [
    (["nan", "0.3", "0.2"], "argument w_sym"),
    (["1", "inf", "0.2"], "argument w_img"),
    (["1", "0.3", "-0.2"], "argument w_text"),
    ([*WEIGHTS, "--lr", "nan"], "argument --lr"),
    ([*WEIGHTS, "--lr", "0"], "argument --lr"),
    ([*WEIGHTS, "--weight-decay", "-0.5"], "argument --weight-decay"),
    ([*WEIGHTS, "--workers", "-2"], "argument --workers"),
    ([*WEIGHTS, "--max-bad-images", "1.5"], "argument --max-bad-images"),
    ([*WEIGHTS, "--epochs", "-1"], "argument --epochs"),
    ([*WEIGHTS, "--val-size", "-3"], "argument --val-size"),
])
def test_bad_numbers_are_usage_errors_before_any_data_is_read(flags, phrase):
    result = cli(TRAIN, *flags, "--dataset", "no/such/manifest.jsonl", check=False)
    assert result.code == 2 and phrase in result.err and "not found" not in result.err, result.err


# --- 4. loading runs no code -------------------------------------------------------------------

class Payload:
    """Unpickling this touches a marker file: proof that loading ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_politics_pickle_is_refused(tmp_path):
    marker = tmp_path / "ran"
    (tmp_path / "db.pickle").write_bytes(pickle.dumps([("a.jpg", Payload(marker))]))
    (tmp_path / "train_test_paths.pickle").write_bytes(pickle.dumps({"train": ["a.jpg"], "test": []}))
    with pytest.raises(InputError) as e:
        load_dataset(tmp_path)
    assert "db.pickle" in str(e.value) and "pathlib" in str(e.value) and "\n" not in str(e.value)
    assert not marker.exists()


def test_a_crafted_checkpoint_and_intermediate_pickle_are_refused(pipeline, tmp_path):
    manifest, _ = pipeline
    marker = tmp_path / "ran"
    work = copy_work(pipeline, tmp_path, runs=True)
    state = torch.load(work / "models" / RUN / "best.pt", weights_only=True)
    state["extra"] = Payload(marker)
    torch.save(state, tmp_path / "evil.pt")
    result = cli("evaluate_retrieval.py", "--checkpoint", tmp_path / "evil.pt", check=False)
    error_line(result, "evil.pt: refused", "could run code")
    feats = read_pickle(work / "doc2vec_features.pickle", "")
    feats["ids"] = [Payload(marker)]
    (work / "doc2vec_features.pickle").write_bytes(pickle.dumps(feats))
    result = cli("knn_document_features.py", "--work-dir", work, "--k", "5", check=False)
    error_line(result, "doc2vec_features.pickle: unreadable pickle", "refused")
    assert not marker.exists()


# --- 5. folders that cannot be written, a full disk --------------------------------------------

@pytest.fixture
def read_only(monkeypatch):
    """make(folder): writing in `folder` fails with EACCES. chmod does that for a normal user;
    root writes anywhere, so there every way a file or folder is created is refused instead."""
    def make(folder: Path) -> None:
        folder = folder.resolve()
        if os.geteuid() != 0:
            folder.chmod(0o555)
            return
        def inside(path) -> bool:
            return isinstance(path, (str, bytes, os.PathLike)) and \
                Path(os.path.abspath(os.fsdecode(path))).is_relative_to(folder)

        def deny(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))
        real = {"open": builtins.open, "os_open": os.open, "mkdir": os.mkdir,
                "replace": os.replace, "rename": os.rename}

        def fake_open(file, mode="r", *a, **k):
            if any(c in mode for c in "wax+") and inside(file):
                deny(file)
            return real["open"](file, mode, *a, **k)

        def fake_os_open(path, flags, *a, **k):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
                deny(path)
            return real["os_open"](path, flags, *a, **k)

        def fake_mkdir(path, *a, **k):
            if inside(path):
                deny(path)
            return real["mkdir"](path, *a, **k)

        def fake_move(src, dst, *a, **k):
            if inside(dst):
                deny(dst)
            return real["replace"](src, dst, *a, **k)
        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "replace", fake_move)
        monkeypatch.setattr(os, "rename", fake_move)
    yield make


def test_evaluation_with_a_read_only_checkpoint_folder_stops_before_the_work(pipeline, tmp_path,
                                                                            read_only):
    work = copy_work(pipeline, tmp_path, runs=True)
    best = work / "models" / RUN / "best.pt"
    read_only(best.parent)
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0", check=False)
    error_line(result, "metrics.json: cannot write (permission denied)", "--out")
    assert "images:" not in result.out     # stopped before embedding anything


def test_doc2vec_stops_before_training_when_its_folder_is_read_only(pipeline, tmp_path, read_only):
    manifest, _ = pipeline
    work = tmp_path / "work"
    work.mkdir()
    read_only(work)
    result = cli("train_doc2vec.py", "--dataset", manifest, "--work-dir", work, check=False)
    error_line(result, "doc2vec_model.gensim: cannot write (permission denied)")
    assert "training corpus" not in result.out


def test_a_full_disk_while_saving_doc2vec_is_one_line_and_leaves_no_tmp(pipeline, tmp_path,
                                                                       monkeypatch):
    from gensim.models.doc2vec import Doc2Vec

    def full(self, path, *a, **k):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(Doc2Vec, "save", full)
    manifest, _ = pipeline
    work = tmp_path / "work"
    result = cli("train_doc2vec.py", "--dataset", manifest, "--work-dir", work, "--workers", "0",
                 "--min-count", "2", "--epochs", "2", check=False)
    error_line(result, "doc2vec_model.gensim: cannot write (no space left on the device)",
               "free some space")
    assert not tmp_files(work) and not (work / "doc2vec_model.gensim").exists()


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(pipeline, tmp_path,
                                                                     monkeypatch):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path, runs=True)
    folder = work / "models" / RUN
    last = (folder / "last.pt").read_bytes()

    def full(obj, f, *a, **k):
        # What torch.save does on a full disk: the write's OSError, reported as RuntimeError.
        f.write(b"half a checkpoint")
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 "
                               "vs 534") from None
    monkeypatch.setattr(torch, "save", full)
    result = train(manifest, work, "--resume", "--epochs", "2", check=False)
    error_line(result, "last.pt: cannot write (no space left on the device)")
    assert (folder / "last.pt").read_bytes() == last and not tmp_files(folder)


def test_evaluation_prints_its_table_before_a_failed_write(pipeline, tmp_path, monkeypatch):
    work = copy_work(pipeline, tmp_path, runs=True)
    best = work / "models" / RUN / "best.pt"
    real_dump = json.dump

    def full(obj, f, *a, **k):
        if "metric" in getattr(f, "name", ""):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_dump(obj, f, *a, **k)
    monkeypatch.setattr(json, "dump", full)
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0", check=False)
    error_line(result, "metrics.json: cannot write (no space left on the device)")
    assert any(line.startswith("metric ") for line in result.out.splitlines())
    assert "i2t R@10" in result.out and not tmp_files(best.parent)


def test_atomic_writes_follow_the_umask_as_a_plain_open_does(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a", lambda tmp: Path(tmp).write_text("x"))
        (tmp_path / "b").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == (tmp_path / "b").stat().st_mode & 0o777 == 0o640


# --- 6. the smaller ones -----------------------------------------------------------------------

def png(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    buf.seek(0)
    return Image.open(buf)


def test_every_image_mode_becomes_the_right_8_bit_rgb(tmp_path):
    grey16 = np.full((8, 8), 32383, dtype=np.uint16)            # mid grey: 32383 / 257 = 126
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    assert read_image(str(tmp_path / "grey16.png"), 8).float().mean().item() == 126
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([255, 0, 0, 0, 0, 0])
    palette.info["transparency"] = 1                              # index 1 (black) transparent
    cases = {
        "I;16": (png(Image.fromarray(grey16)), (126, 126, 126)),
        "I": (Image.fromarray(np.full((4, 4), 65535, dtype=np.int32)), (255, 255, 255)),
        "F": (Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)), (128, 128, 128)),
        "LA": (Image.new("LA", (4, 4), (0, 0)), (255, 255, 255)),     # transparent: white
        "P": (png(palette), (255, 255, 255)),
        "CMYK": (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        "RGBA": (Image.new("RGBA", (4, 4), (0, 0, 255, 128)), (127, 127, 255)),
        "L": (Image.new("L", (4, 4), 77), (77, 77, 77)),
        "1": (Image.new("1", (4, 4), 1), (255, 255, 255)),
    }
    for mode, (img, rgb) in cases.items():
        assert img.mode == mode
        out = to_rgb(img)
        assert out.mode == "RGB", mode
        got = np.asarray(out)
        assert np.abs(got.astype(int) - rgb).max() <= 1, (mode, got[0, 0], rgb)


def test_doc2vec_settings_are_checked_before_gensim_can_hang(tmp_path):
    manifest = write_topic_manifest(tmp_path / "data", n=60)
    proc = subprocess.run([sys.executable, "train_doc2vec.py", "--dataset", manifest,
                           "--work-dir", tmp_path / "w", "--window", "-1"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "argument --window" in proc.stderr
    for flag in ("--vector-size", "--min-count", "--epochs"):
        result = cli("train_doc2vec.py", "--dataset", manifest, flag, "0", check=False)
        assert result.code == 2 and f"argument {flag}" in result.err


def test_empty_text_lists_null_karpathy_images_and_a_negative_val_size(tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "image": "a.jpg", "texts": ["Rockets launched."]}\n'
                        '{"id": "b", "image": "b.jpg", "texts": []}\n')
    items = load_dataset(manifest)
    assert [it.id for it in items] == ["a"]
    assert "dropped 1 empty texts" in capsys.readouterr().out
    karpathy = tmp_path / "k.json"
    karpathy.write_text('{"images": null}')
    with pytest.raises(InputError, match="not a Karpathy split file"):
        load_dataset(karpathy)
    result = cli("train_doc2vec.py", "--dataset", manifest, "--val-size", "-3", check=False)
    assert result.code == 2 and "argument --val-size" in result.err


def test_a_dataset_in_another_script_is_told_about_keep_unicode(tmp_path):
    # Segmented (spaces between words), words of three or more characters: gensim's filters
    # drop shorter ones.
    words = ["东京都 天气预报 晴朗温暖", "北京市 火箭发射 圆满成功", "音乐会 吉他独奏 优美旋律"]
    records = [{"id": str(i), "image": f"{i}.jpg", "texts": [words[i % 3] + "。"]} for i in range(30)]
    records += [{"id": f"{split}{i}", "image": f"{split}{i}.jpg", "texts": [words[i] + "。"],
                 "split": split} for split in ("test", "val") for i in range(3)]
    manifest = tmp_path / "zh.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    common = ["--dataset", manifest, "--work-dir", tmp_path / "w", "--workers", "0"]
    result = cli("train_doc2vec.py", *common, check=False)
    error_line(result, "none of the 30 training texts leaves a word",
               "keeps ASCII words only", "--keep-unicode")
    out = cli("train_doc2vec.py", *common, "--keep-unicode", "--min-count", "1",
              "--max-sentences", "0").out
    assert "vocabulary:" in out
    assert preprocess("Café crème brûlée.", keep_unicode=True) == ["café", "crème", "brûlée"]
    assert preprocess("Café crème brûlée.") == ["caf"]     # the release's ASCII replacement


# --- 7. reproducibility ------------------------------------------------------------------------

def text_side_files(manifest: Path, work: Path, workers: int, hash_seed: str) -> dict[str, bytes]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    common = ["--dataset", manifest, "--work-dir", work, "--workers", str(workers)]
    for script, extra in (("train_doc2vec.py", ["--min-count", "2", "--epochs", "10",
                                                "--vector-size", "32", "--deterministic"]),
                          ("extract_doc2vec_vectors.py", []),
                          ("knn_document_features.py", ["--k", "20", "--deterministic"])):
        proc = subprocess.run([sys.executable, script, *map(str, common + extra)], cwd=ROOT,
                              capture_output=True, text=True, timeout=600, env=env)
        assert proc.returncode == 0, proc.stderr
    return {p.name: p.read_bytes() for p in sorted(work.iterdir()) if p.is_file()}


@pytest.mark.slow
def test_the_text_side_is_the_same_file_for_file_whatever_the_workers(tmp_path):
    # Large enough that the preprocessing and the inference go through their process pools,
    # and a Doc2Vec epoch (about 40,000 words) fills several of gensim's jobs.
    manifest = write_topic_manifest(tmp_path / "data", n=1200, texts_per_item=2)
    one = text_side_files(manifest, tmp_path / "one", 1, "1")
    three = text_side_files(manifest, tmp_path / "three", 3, "2")
    assert set(one) == {"doc2vec_model.gensim", "doc2vec_features.pickle",
                        "document_feats_knn.pickle"}
    for name in one:
        assert one[name] == three[name], name


# --- 8. a full disk for real, odd files, changed settings, odd strings -------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """mount(size in bytes) -> a folder on a tmpfs of that size (root only; skipped with the
    reason elsewhere). A real full disk: torch and tensorboard report it in their own ways."""
    mounted = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"tmpfs{len(mounted)}"
        folder.mkdir()
        if os.geteuid() != 0 or shutil.which("mount") is None:
            pytest.skip("mounting a small tmpfs needs root (and mount)")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(folder)
        return folder
    yield mount
    for folder in mounted:
        subprocess.run(["umount", folder], check=False)


def test_a_really_full_disk_while_saving_a_checkpoint_is_one_line(pipeline, tmp_path, tmpfs):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path)
    size = (pipeline[1] / "models" / RUN / "last.pt").stat().st_size
    folder = tmpfs(size * 3 // 2) / "run"         # room for one checkpoint, not two
    # Epoch 0 improves: best.pt, and last.pt as a second name of it, fit. Epoch 1's checkpoint
    # (best.pt if it improves, else last.pt) needs a second file's room.
    result = train(manifest, work, "--log-dir", folder, "--epochs", "2", check=False)
    line = error_line(result, "cannot write (no space left on the device)")
    assert line.split(": cannot write")[0].endswith((f"{folder / 'best.pt'}", f"{folder / 'last.pt'}"))
    # Both are epoch 0's, whole; no temporary file is left to fill the disk.
    assert not tmp_files(folder)
    for name in ("best.pt", "last.pt"):
        assert torch.load(folder / name, weights_only=True)["epoch"] == 0


def test_a_really_full_disk_while_writing_the_projector_log_is_one_line(pipeline, tmp_path, tmpfs):
    best = copy_work(pipeline, tmp_path, runs=True) / "models" / RUN / "best.pt"
    out = tmpfs(40 * 1024) / "emb"                # the embeddings fit, the projector log does not
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--workers", "0", "--projector",
                 "--save-embeddings", out, check=False)
    line = error_line(result, "cannot write (no space left on the device)")
    assert f"{out / 'projector'}" in line                  # names the file being written
    assert "i2t R@10" in result.out and (out / "images.npy").is_file()
    assert not (out / "projector").exists() and not tmp_files(out)
    # Nothing hidden is left but the folder's ownership marker.
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [MARKER]


def dataset_with_a_fifo(manifest: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the dataset whose first training image is a FIFO; (manifest, the FIFO)."""
    data = shutil.copytree(manifest.parent, tmp_path / "data")
    record = next(json.loads(line) for line in manifest.read_text().splitlines()
                  if json.loads(line)["split"] == "train")
    fifo = data / record["image"]
    fifo.unlink()
    os.mkfifo(fifo)
    return data / manifest.name, fifo


def script(name: str, *args, timeout: int = 180) -> subprocess.CompletedProcess:
    """The script in its own process group, killed whole (loader and pool workers too) if it
    outlives `timeout`: a step blocked on a FIFO fails the test instead of hanging it."""
    proc = subprocess.Popen([sys.executable, name, *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"{name} still ran after {timeout}s (blocked on a FIFO?)") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_fifo_as_an_image_is_an_unreadable_image_in_every_step(pipeline, tmp_path):
    manifest, fifo = dataset_with_a_fifo(pipeline[0], tmp_path)
    work = copy_work(pipeline, tmp_path)
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "2"]
    proc = script("prepare_image_cache.py", *common, "--image-size", "32",
                  "--max-bad-images", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "left out 1 of 48 dataset images" in proc.stdout and "FIFO" in proc.stdout, proc.stdout
    # The trainer, from the cache and from the files (two loader workers).
    for cache in ("require", "off"):
        proc = script(TRAIN, *WEIGHTS, *TINY_TRAIN, *common, "--epochs", "1", "--overwrite",
                      "--image-cache", cache, "--max-bad-images", "0.5")
        assert proc.returncode == 0, proc.stderr
        assert "left out 1 of" in proc.stdout and "FIFO" in proc.stdout, proc.stdout
    proc = script(TRAIN, *WEIGHTS, *TINY_TRAIN, *common, "--epochs", "1", "--overwrite",
                  "--image-cache", "off")
    assert proc.returncode == 2 and "FIFO" in proc.stderr and "--max-bad-images" in proc.stderr


def test_a_fifo_where_any_input_file_should_be_is_refused_without_blocking(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path, runs=True)
    best = work / "models" / RUN / "best.pt"
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with Alarm(60):
        error_line(cli("evaluate_retrieval.py", "--checkpoint", fifo, check=False),
                   f"{fifo}: is a FIFO (named pipe), not a regular file")
        error_line(cli("retrieve.py", "--checkpoint", best, "--queries", fifo, "--workers", "0",
                       check=False), "FIFO")
        error_line(cli("retrieve.py", "--checkpoint", best, "--image", fifo, "--workers", "0",
                       check=False), "FIFO")
        error_line(cli(TRAIN, *WEIGHTS, "--dataset", fifo, "--dataset-format", "jsonl",
                       "--work-dir", work, *TINY_TRAIN, "--overwrite", check=False), "FIFO")
        for name in ("document_feats_knn.pickle", "doc2vec_model.gensim"):
            (work / name).unlink()
            os.mkfifo(work / name)
            result = train(manifest, work, "--overwrite", check=False)
            error_line(result, f"{work / name}", "FIFO")
        with pytest.raises(ValueError, match="FIFO"):
            from models.backbones import load_backbone_weights
            load_backbone_weights(torch.nn.Linear(1, 1), fifo, "resnet18")


def test_resume_with_other_settings_names_each_difference(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path, runs=True)
    folder = work / "models" / RUN
    last = (folder / "last.pt").read_bytes()
    result = cli(TRAIN, "1", "0", "0", "--dataset", manifest, "--work-dir", work, *TINY_TRAIN,
                 "--run-name", RUN, "--resume", "--epochs", "2", "--lr", "0.5",
                 "--batch-size", "8", "--negatives", "clean", "--loss", "triplet", check=False)
    line = error_line(result, "last.pt: the run was trained with other settings",
                      "--batch-size: 16 -> 8", "--loss: 'angular' -> 'triplet'",
                      "--lr: 0.0001 -> 0.5", "--negatives: 'release' -> 'clean'",
                      "w_img: 0.3 -> 0.0", "w_text: 0.2 -> 0.0",
                      "only --epochs, --patience, --device and --workers may change")
    assert "--epochs" not in line.split("(only")[0]          # the stopping rule may change
    assert (folder / "last.pt").read_bytes() == last and "images:" not in result.out
    # --epochs and --patience may change, and the new values are printed.
    out = train(manifest, work, "--resume", "--epochs", "2", "--patience", "7").out
    assert "resuming with new settings: --epochs: 1 -> 2; --patience: " in out
    assert "epoch 1:" in out
    assert torch.load(folder / "last.pt", weights_only=True)["config"]["patience"] == 7
    # A resumed run with nothing left to train and no best.pt says so, not "no epoch was trained".
    (folder / "best.pt").unlink()
    out = train(manifest, work, "--resume", "--epochs", "2", "--patience", "7").out
    assert "no best.pt in" in out and "after epoch 1" in out, out


def test_evaluation_refuses_a_doc2vec_model_retrained_after_the_checkpoint(pipeline, tmp_path):
    manifest, _ = pipeline
    work = copy_work(pipeline, tmp_path, runs=True)
    best = work / "models" / RUN / "best.pt"
    # The same vocabulary (same texts, same --min-count), another window.
    cli("train_doc2vec.py", "--dataset", manifest, "--work-dir", work, "--workers", "0",
        "--min-count", "2", "--epochs", "5", "--window", "3")
    result = cli("evaluate_retrieval.py", "--checkpoint", best, "--work-dir", work,
                 "--workers", "0", check=False)
    error_line(result, "best.pt was made from a train_doc2vec.py output with --window 20",
               "doc2vec_model.gensim comes from --window 3", "--work-dir of that run")
    # With the model it was trained beside, it evaluates.
    shutil.copy(pipeline[1] / "doc2vec_model.gensim", work / "doc2vec_model.gensim")
    cli("evaluate_retrieval.py", "--checkpoint", best, "--work-dir", work, "--workers", "0")


def test_sweep_folders_and_arguments_carry_each_weight_exactly(tmp_path):
    from losses.weights import Weights
    from tuning.grid import format_triple, parse_grid
    from tuning.sweep import Settings, plan
    triples = parse_grid("1 0 0; 1 0.3 0; 1 0.3000001 0; 1 0.30000000000000004 0")
    runs = plan(tmp_path, ["release"], triples, 1)
    assert len({r.folder for r in runs}) == 4
    assert len({format_triple(t) for t in triples}) == 4
    settings = Settings(trainer_args=[], negatives=True)
    for run in runs:
        weights = settings.train_command(run)[1:4]
        assert tuple(map(float, weights)) == run.weights          # what the folder is named after
    assert Weights(1, 0.3, 0.2).run_name() == RUN               # the authors' names are kept
    assert Weights(1, 0.3000001, 0).run_name() == "l_i2t_l_sym_1_l_img_0_3000001_l_text_0"


def test_projector_metadata_escapes_ids_as_it_does_texts(tmp_path):
    from evaluation.export import write_projector
    from evaluation.split import EvalSplit
    ids = ["a\tb", "c\nd", "e\rf", "g\u2028h", "plain"]
    split = EvalSplit("test", [str(tmp_path / f"{i}.png") for i in range(5)], ids,
                      [None, "x\ty", None, None, None], ids, [f"text\t{i}\nmore" for i in range(5)],
                      [["text"]] * 5, np.arange(5), [None] * 5)
    log = write_projector(tmp_path / "projector", split, torch.randn(5, 4), torch.randn(5, 4),
                          thumb=4)
    for tag in ("images", "texts"):
        rows = (log / "00000" / tag / "metadata.tsv").read_text(encoding="utf-8").split("\n")
        assert rows[-1] == "" and len(rows) == 1 + 5 + 1, rows
        assert all(len(r.split("\t")) == 3 for r in rows[:-1]), rows
        assert rows[1].startswith("a b\t") and rows[4].startswith("g h\t")


@pytest.mark.parametrize("script, flag, value", [
    ("evaluate_retrieval.py", "--image-size", "0"), ("evaluate_retrieval.py", "--image-size", "-4"),
    ("evaluate_retrieval.py", "--max-tokens", "0"), ("evaluate_retrieval.py", "--max-tokens", "-3"),
    ("retrieve.py", "--image-size", "0"), ("retrieve.py", "--max-tokens", "-3"),
])
def test_evaluation_and_retrieval_sizes_are_checked_at_parse_time(script, flag, value):
    extra = ["--query", "storm"] if script == "retrieve.py" else []
    result = cli(script, "--checkpoint", "no/such/best.pt", flag, value, *extra, check=False)
    assert result.code == 2 and f"argument {flag}" in result.err, result.err
    assert "not found" not in result.err and "Traceback" not in result.err


def test_a_query_that_is_not_utf8_is_refused_before_anything_is_written(pipeline, tmp_path):
    best = copy_work(pipeline, tmp_path, runs=True) / "models" / RUN / "best.pt"
    out = tmp_path / "page"
    query = os.fsdecode(b"storm \xff harbour")             # as Python reads such an argv
    result = cli("retrieve.py", "--checkpoint", best, "--query", query, "--out", out, check=False)
    assert result.code == 2 and "--query 1" in result.err and "not UTF-8" in result.err
    assert "\\udcff" in result.err and not out.exists()


def test_an_image_query_with_an_undecodable_name_gets_its_page(pipeline, tmp_path):
    manifest, _ = pipeline
    best = copy_work(pipeline, tmp_path, runs=True) / "models" / RUN / "best.pt"
    record = json.loads(manifest.read_text().splitlines()[0])
    query = tmp_path / os.fsdecode(b"photo\xff\x1b[2J.png")
    shutil.copy(manifest.parent / record["image"], query)
    out = tmp_path / "page"
    result = cli("retrieve.py", "--checkpoint", best, "--image", query, "--out", out,
                 "--workers", "0", "--k", "3")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "photo\\udcff\\x1b[2J.png" in page and "\x1b" not in result.out
    assert (out / "sheets" / "query_001.png").is_file()


def test_a_dataset_string_that_cannot_be_utf8_names_its_item(tmp_path):
    for field, fix in (("texts", "half of a UTF-16 pair"), ("id", "half of a UTF-16 pair"),
                       ("image", "half of a UTF-16 pair")):
        record = {"id": "a", "image": "a.jpg", "texts": ["Rockets launched."], "split": "train"}
        record[field] = ["Rock\ud800ets."] if field == "texts" else "a\udcff.jpg"
        manifest = tmp_path / f"{field}.jsonl"
        manifest.write_text(json.dumps(record) + "\n")       # the JSON escape \ud800 is valid JSON
        with pytest.raises(InputError) as e:
            load_dataset(manifest)
        assert fix in str(e.value) and "\n" not in str(e.value), str(e.value)
    # A NUL is text, but no file name can hold it (os.stat raised ValueError in the image cache).
    manifest.write_text(json.dumps({"id": "a", "image": "a\u0000.jpg", "texts": ["Rockets."],
                                    "split": "train"}) + "\n")
    assert "NUL" in input_error(load_dataset, manifest)
    # JSON nested deeper than Python's recursion limit is invalid input, not a RecursionError.
    manifest.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    assert "nested too deeply" in input_error(load_dataset, manifest)
    karpathy = tmp_path / "k.json"
    karpathy.write_text("[" * 100_000 + "]" * 100_000)
    assert "not a Karpathy split file" in input_error(load_dataset, karpathy)


@pytest.mark.parametrize("flags, phrase", [
    (["1", "0.3", "0.2", "--batch-size", "1", "--negatives", "clean"], "no term has a negative"),
    (["1", "0", "0", "--batch-size", "1"], "L_sym (w_sym) would have no negative"),
    (["0", "0.3", "0", "--batch-size", "1"], "L_img (w_img) would have no negative"),
])
def test_settings_under_which_a_term_has_no_negative_are_refused_at_parse_time(flags, phrase):
    result = cli(TRAIN, *flags, "--dataset", "no/such/manifest.jsonl", check=False)
    assert result.code == 2 and phrase in result.err and "not found" not in result.err, result.err


def test_a_split_too_small_for_a_negative_is_refused():
    from training.settings import data_problem
    assert data_problem(40, 8, 16, 1, "clean") is None
    assert data_problem(40, 8, 16, 1, "release") is None
    assert "validation" in data_problem(40, 1, 16, 1, "clean")
    assert "training" in data_problem(3, 8, 16, 2, "clean")

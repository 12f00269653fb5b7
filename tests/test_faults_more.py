"""More of what happens when things go wrong: a stop signal in the middle of a save or a sweep,
one same-image rule for training and evaluation, an image replaced under the cache, EXIF
orientation, unbounded settings, settings checked late, huge quoted input, non-finite vectors,
and adversarial Unicode and JSON through every later step. Each case is the README's "What
happens when things go wrong"."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import RUN, cli, error_line, quick_text_side, tmp_files
from demo.synthetic import generate_synthetic
from pipeline import ROOT, TINY_TRAIN

TRAIN = "train_cross_modal_retrieval_model.py"
WEIGHTS = ("1", "0.3", "0.2")


@pytest.fixture(scope="module")
def pipeline(module_tmp):
    """A tiny dataset and its text side (no run trained)."""
    root = module_tmp("faults_more")
    manifest = generate_synthetic(root / "data", n_items=48, image_size=32, seed=3, val_fraction=0)
    work = root / "work"
    quick_text_side(manifest, work)
    return manifest, work


def train_args(manifest: Path, work: Path, *extra) -> list[str]:
    return [*WEIGHTS, "--dataset", str(manifest), "--work-dir", str(work), *TINY_TRAIN,
            "--epochs", "1", *map(str, extra)]


def train(manifest: Path, work: Path, *extra, check: bool = True):
    return cli(TRAIN, *train_args(manifest, work, *extra), check=check)


def dead(pid: int, wait_s: float = 10.0) -> bool:
    """The process is gone (or a zombie nobody will run again) within wait_s seconds."""
    end = time.time() + wait_s
    while time.time() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


# --- 10. a stop signal leaves nothing behind ---------------------------------------------------

# The trainer with torch.save made to stop for a while once the temporary file is written, as a
# large checkpoint's save on a slow disk does: the moment a signal must not leave it behind.
SLOW_SAVE = """
import runpy, sys, time
sys.path.insert(0, {root!r})
import torch
save = torch.save
def slow(obj, f, *a, **k):
    save(obj, f, *a, **k)
    name = str(getattr(f, "name", f))   # checkpoints are saved through an open file
    if name.endswith(".tmp"):
        f.flush()
        print("SAVING", name, flush=True)
        time.sleep(60)
torch.save = slow
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
"""


def start_slow_save(manifest: Path, work: Path) -> subprocess.Popen:
    argv = [TRAIN, *train_args(manifest, work)]
    code = SLOW_SAVE.format(root=str(ROOT), argv=argv, script=str(ROOT / TRAIN))
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def wait_for_save(proc: subprocess.Popen) -> str:
    for line in proc.stdout:
        if line.startswith("SAVING"):
            return line.split(None, 1)[1].strip()
    raise AssertionError(f"the trainer ended before saving: {proc.wait()} {proc.stderr.read()}")


def test_sigterm_during_a_save_removes_the_temporary_file_and_exits_143(pipeline, tmp_path):
    manifest, work = pipeline
    work = Path(str(work))
    folder = work / "models" / RUN
    proc = start_slow_save(manifest, work)
    try:
        tmp = Path(wait_for_save(proc))
        assert tmp.exists() and tmp.parent == folder
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert code == 143, err
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err
    assert not tmp_files(folder)
    # A run stopped before its first checkpoint is refused neither by --resume's missing
    # last.pt (it names it) nor by its folder: --overwrite starts it again.
    train(manifest, work, "--overwrite", "--epochs", "0")
    shutil.rmtree(folder)


def test_a_save_killed_with_sigkill_leaves_a_temporary_file_the_next_run_removes(pipeline):
    manifest, work = pipeline
    folder = work / "models" / "killed"
    argv_extra = ("--run-name", "killed")
    argv = [TRAIN, *train_args(manifest, work, *argv_extra)]
    code = SLOW_SAVE.format(root=str(ROOT), argv=argv, script=str(ROOT / TRAIN))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        tmp = Path(wait_for_save(proc))
        proc.kill()          # nothing can clean up after kill -9
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert tmp.exists()
    out = train(manifest, work, *argv_extra, "--overwrite", "--epochs", "0").out
    assert not tmp_files(folder) and "temporary file" in out
    # --resume too: a finished epoch, then a leftover of a save of the next one.
    train(manifest, work, *argv_extra, "--overwrite")
    (folder / ".best.pt.x1y2z3.tmp").write_bytes(b"\0" * 1000)
    train(manifest, work, *argv_extra, "--resume")
    assert not tmp_files(folder)


def test_atomic_write_removes_what_a_killed_writer_left_but_not_a_live_ones(tmp_path):
    from common.workdir import atomic_write
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".x.pickle.pid{gone}-abcd.tmp"
    live = tmp_path / f".x.pickle.pid{os.getpid()}-abcd.tmp"
    other = tmp_path / f".y.pickle.pid{gone}-abcd.tmp"
    for p in (stale, live, other):
        p.write_bytes(b"half")
    atomic_write(tmp_path / "x.pickle", lambda tmp: Path(tmp).write_bytes(b"whole"))
    assert (tmp_path / "x.pickle").read_bytes() == b"whole"
    assert not stale.exists() and live.exists() and other.exists()


FAKE_TRAINER = """
import os, sys, time
from pathlib import Path
Path({pidfile!r}).write_text(str(os.getpid()))
time.sleep(120)
"""

# The sweep takes Ctrl-C as at a terminal even where the suite was started in the background by
# a non-interactive shell, which starts it ignoring SIGINT (as the sweep then rightly would).
SWEEP = """
import runpy, signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {root!r})
from tuning import sweep
sweep.TRAINER = Path({fake!r})
sys.argv = {argv!r}
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_sweep_stops_its_running_trainer(pipeline, tmp_path, sig, status):
    manifest, work = pipeline
    pidfile = tmp_path / "trainer.pid"
    fake = tmp_path / "fake_train.py"
    fake.write_text(FAKE_TRAINER.format(pidfile=str(pidfile)))
    argv = ["tune_weights.py", "--grid", "1 0 0", "--seeds", "1", "--devices", "cpu",
            "--out", str(tmp_path / "sweep"), "--", "--dataset", str(manifest),
            "--work-dir", str(work)]
    code = SWEEP.format(root=str(ROOT), fake=str(fake), argv=argv, script=str(ROOT / "tune_weights.py"))
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    child = None
    try:
        end = time.time() + 120
        while not pidfile.exists() or not pidfile.read_text():
            assert proc.poll() is None and time.time() < end, proc.communicate()
            time.sleep(0.1)
        child = int(pidfile.read_text())
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == status, out + err
        assert dead(child), "the trainer outlived its sweep"
        assert "Traceback" not in err, err
    finally:
        for pid in (proc.pid, child):
            if pid is not None and not dead(pid, 0.1):
                os.kill(pid, signal.SIGKILL)


# --- 11. one same-image rule, by the image's identity ------------------------------------------

def test_item_groups_join_items_by_image_identity_and_by_an_explicit_group(tmp_path):
    from data.datasets.items import Item, item_groups
    (tmp_path / "img").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / "img" / name).write_bytes(b"x")
    os.symlink(tmp_path / "img" / "a.png", tmp_path / "link.png")
    os.link(tmp_path / "img" / "a.png", tmp_path / "hard.png")
    img = lambda name: str(tmp_path / name)   # noqa: E731
    items = [Item("0", img("img/a.png"), ("t",), "train"),
             Item("1", img("img/../img/a.png"), ("t",), "train"),    # another spelling
             Item("2", img("link.png"), ("t",), "train"),            # a link to it
             Item("3", img("img/b.png"), ("t",), "train"),
             Item("4", img("img/c.png"), ("t",), "train", group="article 7"),
             Item("5", img("img/b.png"), ("t",), "test"),
             Item("6", img("missing.png"), ("t",), "train", group="article 7"),
             Item("8", img("hard.png"), ("t",), "val")]                # a hard link
    g = item_groups(items).tolist()
    assert g[0] == g[1] == g[2] == g[7] and g[3] == g[5] and g[4] == g[6]
    assert len({g[0], g[3], g[4]}) == 3
    # Joined through either key: b.png's group meets article 7 through the last item.
    g = item_groups(items + [Item("7", img("img/b.png"), ("t",), "train", group="article 7")])
    assert g[3] == g[4] == g[8] and g[0] != g[3]


@pytest.fixture(scope="module")
def shared_pictures(module_tmp):
    """One JSONL line per caption of a picture: two lines show each image, and a third line
    names one of them through a symbolic link."""
    root = module_tmp("shared")
    manifest = generate_synthetic(root / "data", n_items=40, image_size=32, seed=4, val_fraction=0)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    os.symlink(root / "data" / lines[0]["image"], root / "data" / "link.png")
    out = []
    for rec in lines:
        out.append(rec)
        out.append({**rec, "id": rec["id"] + "b", "texts": [rec["texts"][0] + " Again the same."]})
    out.append({**lines[0], "id": "via-link", "image": "link.png"})
    shared = root / "data" / "shared.jsonl"
    shared.write_text("".join(json.dumps(r) + "\n" for r in out))
    work = root / "work"
    quick_text_side(shared, work)
    return shared, work


def test_training_never_pairs_two_captions_of_one_picture(shared_pictures):
    import train_cross_modal_retrieval_model as trainer
    from training import distributed
    from training.data import PairDataset, collate
    from training.prepare import prepare
    shared, work = shared_pictures
    args = trainer.parse_args([*WEIGHTS, "--dataset", str(shared), "--work-dir", str(work),
                               *TINY_TRAIN, "--negatives", "clean"])
    data = prepare(args, distributed.setup("cpu"))
    image = lambda d: os.path.realpath(data.items[d.item].image)   # noqa: E731
    docs = data.train_docs
    # The neighbour table never holds a caption of the document's own picture ...
    s = data.sampler
    for i, d in enumerate(docs):
        for c in s.candidates[s.offsets[i]:s.offsets[i] + s.counts[i]]:
            assert image(docs[c]) != image(d), (d.id, docs[c].id)
    # ... and the batches the trainer builds mark both captions as one image, so that clean
    # negatives leave them out.
    ds = PairDataset([d.item for d in docs], data.train_tokens, data.read, data.groups)
    batch = collate([ds[i] for i in range(len(docs))])
    ids = batch["image_ids"].tolist()
    for i in range(len(docs)):
        for j in range(len(docs)):
            assert (ids[i] == ids[j]) == (image(docs[i]) == image(docs[j]))
    assert len(set(ids)) < len(ids)


def test_evaluation_ranks_a_picture_once_however_its_path_is_spelt(shared_pictures):
    import argparse
    from data.datasets.load import load_items
    from evaluation.split import load_split
    shared, work = shared_pictures
    args = argparse.Namespace(dataset=str(shared), dataset_format=None, image_root=None,
                              val_size=None, seed=0, politics_min_chars=500, max_sentences=0,
                              doc2vec_max_sentences=2, max_chars=0, keep_unicode=False, workers=0)
    items = load_items(args)
    for split in ("train", "val", "test"):
        if not any(it.split == split for it in items):
            continue
        ev = load_split(items, split, args)
        assert ev.n_images == len({os.path.realpath(p) for p in ev.image_paths})
    split = next(it.split for it in items if it.id == "via-link")
    ev = load_split(items, split, args)
    own = ev.text_image[ev.text_ids.index("via-link")]
    assert (ev.text_image == own).sum() >= 2    # its picture's other captions are its texts too


# --- 12. the image cache and a file replaced under it ------------------------------------------

def test_an_image_rewritten_with_its_size_and_mtime_restored_is_decoded_again(tmp_path):
    import torch
    from PIL import Image
    from data.images.cache import ensure_cache, find_cache
    from data.images.read import read_image
    path = str(tmp_path / "a.bmp")          # uncompressed: new pixels, the same file size
    Image.new("RGB", (8, 8), (200, 10, 10)).save(path)
    others = []
    for i in range(3):
        others.append(str(tmp_path / f"o{i}.bmp"))
        Image.new("RGB", (8, 8), (i, i, i)).save(others[-1])
    paths = [path, *others]
    ensure_cache(tmp_path / "work", paths, 8, progress=False)
    before = os.stat(path)
    time.sleep(0.05)                        # past the file system's clock tick
    Image.new("RGB", (8, 8), (10, 10, 200)).save(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))   # as touch -r does
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    cache, why = find_cache(tmp_path / "work", paths, 8)
    assert cache is None and "out of date" in why
    cache, line = ensure_cache(tmp_path / "work", paths, 8, progress=False)
    assert "wrote" in line
    assert torch.equal(cache.reader(paths)(0), read_image(path, 8))
    assert cache.reader(paths)(0)[2].float().mean() > 150      # the new, blue picture


# --- 13. EXIF orientation and the premultiplied grey mode --------------------------------------

def sideways(tmp_path: Path) -> tuple[str, "Image.Image"]:
    """A PNG stored on its side with EXIF orientation 6 (shown turned 90 degrees clockwise),
    and the picture a viewer shows."""
    from PIL import Image
    stored = Image.new("RGB", (16, 8), (255, 0, 0))
    stored.paste((0, 0, 255), (0, 0, 8, 8))           # left half blue, right half red
    exif = Image.Exif()
    exif[0x0112] = 6
    path = str(tmp_path / "phone.png")
    stored.save(path, exif=exif)
    return path, stored.transpose(Image.Transpose.ROTATE_270)   # 90 degrees clockwise


def test_exif_orientation_is_applied_on_the_fly_in_the_cache_and_in_thumbnails(tmp_path):
    import torch
    from PIL import Image
    from data.images.cache import ensure_cache
    from data.images.read import read_image
    from evaluation.page import fit
    path, shown = sideways(tmp_path)
    upright = str(tmp_path / "upright.png")
    shown.save(upright)
    want = read_image(upright, 8)
    assert torch.equal(read_image(path, 8), want)
    cache, _ = ensure_cache(tmp_path / "work", [path], 8, progress=False)
    assert torch.equal(cache.reader([path])(0), want)
    thumb = fit(path, 16)
    assert thumb.size == (8, 16)            # taller than wide, as shown
    assert thumb.getpixel((4, 2))[2] > 200 and thumb.getpixel((4, 13))[0] > 200   # blue above red
    assert Image.open(path).size == (16, 8)   # the file itself is left as it is


def test_premultiplied_grey_with_alpha_is_laid_over_white(tmp_path):
    from PIL import Image
    from data.images.read import to_rgb
    img = Image.new("LA", (4, 4), (100, 128)).convert("La")
    assert img.mode == "La"
    r, g, b = to_rgb(img).getpixel((0, 0))
    assert r == g == b and abs(r - (100 * 128 + 255 * 127) / 255) <= 2


# --- 14. unbounded settings --------------------------------------------------------------------

def test_a_doc2vec_too_large_for_memory_stops_before_allocating(pipeline, tmp_path, monkeypatch):
    import data.text.doc2vec as doc2vec
    manifest, _ = pipeline
    monkeypatch.setattr(doc2vec, "available_memory", lambda: 50 * 2**20)    # 50 MiB free
    common = ["--dataset", manifest, "--work-dir", tmp_path / "work", "--workers", "0",
              "--min-count", "2", "--epochs", "1"]
    line = error_line(cli("train_doc2vec.py", *common, "--vector-size", "200000", check=False),
                      "--vector-size 200000", "GiB", "smaller --vector-size")
    assert len(line) < 300
    assert not (tmp_path / "work" / "doc2vec_model.gensim").exists()
    cli("train_doc2vec.py", *common, "--vector-size", "20")     # small enough: trains


@pytest.mark.parametrize("script", ["train_doc2vec.py", "extract_doc2vec_vectors.py",
                                    "knn_document_features.py", "prepare_image_cache.py", TRAIN,
                                    "evaluate_retrieval.py"])
def test_a_worker_count_beyond_the_machine_is_a_usage_error(script):
    from cli import max_workers
    extra = [*WEIGHTS] if script == TRAIN else ["--checkpoint", "x.pt"] if "evaluate" in script else []
    result = cli(script, *extra, "--dataset", "missing.jsonl", "--workers", "100000", check=False)
    assert result.code == 2 and "--workers" in result.err and f"0 to {max_workers()}" in result.err
    assert "Traceback" not in result.err


# --- 15. settings checked before the work, not during it -------------------------------------

@pytest.mark.parametrize("flags, phrase", [
    (["--epochs", "-1"], "--epochs"), (["--epochs", "0"], "--epochs"),
    (["--items", "5"], "--items"), (["--image-size", "0"], "--image-size"),
    (["--batch-size", "1"], "--batch-size"), (["--lr", "nan"], "--lr"),
    (["--workers", "100000"], "--workers")])
def test_the_demo_checks_every_flag_before_its_first_step(tmp_path, flags, phrase):
    from pipeline import run
    result = run("-m", "demo", "--data", "synthetic", "--run-dir", tmp_path / "demo", *flags,
                 check=False)
    assert result.returncode == 2 and phrase in result.stderr, result.stdout + result.stderr
    assert "==" not in result.stdout and not (tmp_path / "demo" / "data").exists()


def test_the_demo_refuses_a_run_folder_it_cannot_write(tmp_path):
    from pipeline import run
    (tmp_path / "file").write_text("x")
    result = run("-m", "demo", "--data", "synthetic", "--run-dir", tmp_path / "file" / "demo",
                 check=False)
    assert result.returncode == 2 and "is a file" in result.stderr and "==" not in result.stdout


@pytest.mark.slow   # the whole demo on 40 items (a minute or two)
def test_the_demo_runs_on_fewer_items_than_its_k(tmp_path):
    from pipeline import run
    result = run("-m", "demo", "--data", "synthetic", "--run-dir", tmp_path / "demo", "--items",
                 "40", "--image-size", "32", "--epochs", "1", "--batch-size", "8", "--workers", "0")
    k = [line for line in result.stdout.splitlines() if "knn_document_features.py" in line][0]
    n = len(json.loads((tmp_path / "demo" / "data" / "manifest.jsonl").read_text().splitlines()[0]))
    assert "--k 50" not in k and n
    assert "demo finished" in result.stdout


def test_a_sweep_whose_out_cannot_be_written_stops_before_any_run(pipeline, tmp_path, monkeypatch):
    from tuning import sweep
    manifest, work = pipeline
    calls = tmp_path / "calls"
    fake = tmp_path / "fake_train.py"
    fake.write_text(f"open({str(calls)!r}, 'a').write('called\\n')\n")
    monkeypatch.setattr(sweep, "TRAINER", fake)
    monkeypatch.setattr(sweep, "EVALUATOR", fake)
    (tmp_path / "file").write_text("x")
    result = cli("tune_weights.py", "--grid", "1 0 0", "--seeds", "1", "--devices", "cpu",
                 "--out", tmp_path / "file" / "sweep", "--", "--dataset", manifest,
                 "--work-dir", work, check=False)
    error_line(result, str(tmp_path / "file"))
    assert not calls.exists()


def test_a_run_of_zero_epochs_leaves_its_folder_usable(pipeline, tmp_path):
    manifest, work = pipeline
    out = train(manifest, work, "--run-name", "zero", "--epochs", "0").out
    assert "no checkpoint written" in out
    folder = work / "models" / "zero"
    assert not list(folder.glob("events.out.tfevents.*"))
    train(manifest, work, "--run-name", "zero")        # not refused as an earlier run
    assert (folder / "best.pt").is_file() and list(folder.glob("events.out.tfevents.*"))
    shutil.rmtree(folder)


# --- 16. quoted input is cut and escaped -------------------------------------------------------

def test_a_huge_query_with_no_known_word_gives_a_short_error_line():
    from common.errors import InputError
    from evaluation.page import query_tokens
    from models import Vocabulary
    vocab = Vocabulary(["rocket", "orbit", "guitar"])
    query = ("zebra " * 20_000).strip()      # 119,999 characters, no word of the vocabulary
    with pytest.raises(InputError) as e:
        query_tokens([query], vocab, None, None)
    msg = str(e.value)
    assert len(msg) < 400 and "119999 characters" in msg and "\n" not in msg
    with pytest.raises(InputError) as e:
        query_tokens(["a\x1b[2J" + "b" * 100_000], vocab, None, None)   # no token at all
    assert len(str(e.value)) < 400 and "\x1b" not in str(e.value)


def test_retrieval_results_cannot_break_or_take_over_the_terminal(capsys):
    from evaluation.page import Hit, QueryResult
    from retrieve import print_results
    hit = Hit(rank=1, score=0.5, image="img\n.png", label="caption\x1b[2J\nsecond line \u202eevil",
              correct=False)
    print_results([QueryResult("text", "q\x1b]0;title\x07" + "x" * 5000, "truth\rback", [hit])])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\u202e" not in out and "\x07" not in out
    assert len(out) < 1000 and out.count("\n") == 4


def test_a_huge_or_odd_id_is_cut_and_escaped_in_the_error(tmp_path):
    from common.errors import InputError
    from data.datasets.readers import load_dataset
    (tmp_path / "a.png").write_bytes(b"x")
    huge = "\u202e\x1b[31m" + "i" * 100_000
    rec = {"id": huge, "image": "a.png", "texts": ["A caption."], "split": "train"}
    (tmp_path / "m.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(InputError) as e:
        load_dataset(str(tmp_path / "m.jsonl"), None, None, None, 0, 500)
    msg = str(e.value)
    assert "duplicate id" in msg and len(msg) < 400
    assert "\x1b" not in msg and "\u202e" not in msg and "100006 characters" in msg


# --- 17. non-finite Doc2Vec vectors ------------------------------------------------------------

@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_the_knn_step_refuses_non_finite_vectors(pipeline, tmp_path, value):
    from common.workdir import DOC2VEC_FEATURES, load_pickle, save_pickle
    _, work = pipeline
    copy = tmp_path / "work"
    copy.mkdir()
    feats = load_pickle(work, DOC2VEC_FEATURES)
    feats["vectors"] = np.array(feats["vectors"])
    feats["vectors"][5, 3] = value
    save_pickle(feats, copy / DOC2VEC_FEATURES)
    result = cli("knn_document_features.py", "--work-dir", copy, "--k", "5", "--backend", "exact",
                 "--dataset", "unused.jsonl", check=False)
    error_line(result, str(copy / DOC2VEC_FEATURES), "NaN or infinite", "row 5",
               "extract_doc2vec_vectors.py")
    assert not (copy / "document_feats_knn.pickle").exists()


# --- beyond the list: adversarial strings and JSON through every later step -------------------

ODD = ["a/b", "..", "x\ny", "t\tab", "<script>alert(1)</script>", "\u202eevil", "\U0001f600\U0001f389",
       "zero\u200bwidth", "i" * 5000, "\x1b[31mred", "quote\"'", "amp&lt;", "NUL\x00in",
       "line\u2028sep", "-rf", "%s%n", "a\\b", "e\u0301\u0301", "\ufeffbom", "\r\rback"]


def test_unwritable_strings_and_deep_json_are_one_line_when_the_dataset_is_read(tmp_path):
    from common.errors import InputError
    from data.datasets.readers import load_dataset
    (tmp_path / "a.png").write_bytes(b"x")
    good = {"id": "1", "image": "a.png", "texts": ["A caption."], "split": "train"}
    cases = [({**good, "texts": ["half \ud800 a pair"]}, "half of a UTF-16 pair"),
             ({**good, "id": "\udfff"}, "half of a UTF-16 pair"),
             ({**good, "label": "x\ud83d"}, "half of a UTF-16 pair"),
             ({**good, "image": "a\u0000.png"}, "NUL character")]
    for rec, phrase in cases:
        path = tmp_path / "m.jsonl"
        path.write_text(json.dumps(rec) + "\n")       # json.dumps writes "\ud800" as escapes
        with pytest.raises(InputError) as e:
            load_dataset(str(path), None, None, None, 0, 500)
        assert phrase in str(e.value) and "\n" not in str(e.value) and len(str(e.value)) < 400
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(InputError, match="nested too deeply"):
        load_dataset(str(tmp_path / "deep.jsonl"), None, None, None, 0, 500)
    (tmp_path / "deep.json").write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(InputError, match="not a Karpathy split file"):
        load_dataset(str(tmp_path / "deep.json"), None, None, None, 0, 500)


@pytest.mark.slow   # every script on a manifest of odd ids, labels and texts (a minute or two)
def test_odd_ids_labels_and_texts_survive_every_step(tmp_path):
    manifest = generate_synthetic(tmp_path / "data", n_items=48, image_size=32, seed=5, val_fraction=0)
    recs = [json.loads(line) for line in manifest.read_text().splitlines()]
    for k, rec in enumerate(recs[:len(ODD)]):
        rec["id"] = f"{ODD[k]}_{k}"
        rec["label"] = ODD[(k + 3) % len(ODD)]
        rec["texts"] = [rec["texts"][0] + " " + ODD[(k + 5) % len(ODD)]]
        rec["split"] = "train"        # all of them on the page of the train split
    odd = tmp_path / "data" / "odd.jsonl"
    odd.write_text("".join(json.dumps(r) + "\n" for r in recs))
    work = tmp_path / "work"
    common = ["--dataset", odd, "--work-dir", work, "--workers", "0"]
    outs = [cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "5"),
            cli("extract_doc2vec_vectors.py", *common),
            cli("knn_document_features.py", *common, "--k", "10", "--backend", "exact"),
            cli(TRAIN, *WEIGHTS, *common, *TINY_TRAIN, "--epochs", "1")]
    best = work / "models" / RUN / "best.pt"
    outs.append(cli("evaluate_retrieval.py", "--checkpoint", best, "--split", "train",
                    "--save-ranks", "--save-embeddings", "--workers", "0"))
    outs.append(cli("retrieve.py", "--checkpoint", best, "--split", "train", "--k", "48",
                    "--query", recs[0]["texts"][0], "--out", tmp_path / "page"))
    for result in outs:
        for stream in (result.out, result.err):
            # Progress bars move the cursor with \r and ESC [A; nothing else may.
            rest = stream.replace("\x1b[A", "").replace("\r", "")
            assert "\x1b" not in rest and "\u202e" not in rest and "\x00" not in rest
    page = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert not any(c in page for c in "\x00\x1b")
    assert [p.name for p in (tmp_path / "page").iterdir()] and \
        all("/" not in p.name and "\n" not in p.name for p in (tmp_path / "page").rglob("*"))
    saved = list((work / "models" / RUN).glob("metrics*.json"))
    assert saved and all(json.loads(p.read_text(encoding="utf-8")) for p in saved)


def test_a_script_run_inside_another_program_leaves_its_signal_handlers_as_they_were():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    cli("train_doc2vec.py", "--dataset", "missing.jsonl", check=False)
    assert {s: signal.getsignal(s) for s in before} == before


def test_the_pictures_of_one_article_are_one_group_with_the_items_sharing_their_files(tmp_path):
    from data.datasets.items import item_groups
    from data.datasets.readers import load_dataset
    for name in ("a.png", "b.png", "c.png"):
        (tmp_path / name).write_bytes(b"x")
    recs = [{"id": "art", "images": ["a.png", "b.png"], "text": "The article.", "split": "train"},
            {"id": "cap", "image": "b.png", "text": "A caption of b.", "split": "train"},
            {"id": "other", "image": "c.png", "text": "Another.", "split": "train"},
            {"id": "t", "image": "c.png", "text": "Test.", "split": "test"}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    items = load_dataset(str(tmp_path / "m.jsonl"), None, None, 0, 0, 500)
    g = dict(zip((it.id for it in items), item_groups(items).tolist()))
    assert g["art@0"] == g["art@1"] == g["cap"] and g["other"] == g["t"] != g["cap"]

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

from conftest import RUN, cli
from demo.synthetic import generate_synthetic
from pipeline import ROOT, TINY_TRAIN

TRAIN = "train_cross_modal_retrieval_model.py"
WEIGHTS = ("1", "0.3", "0.2")


def error_line(result, *phrases: str) -> str:
    """Exit status 2 and one error line holding every phrase; no traceback."""
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if "error:" in line]
    assert len(lines) == 1, result.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """A tiny dataset and its text side (no run trained)."""
    root = tmp_path_factory.mktemp("faults_more")
    manifest = generate_synthetic(root / "data", n_items=48, image_size=32, seed=3, val_fraction=0)
    work = root / "work"
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "0"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "5")
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "10", "--backend", "exact")
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
    if str(f).endswith(".tmp"):
        print("SAVING", f, flush=True)
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
    from data.workdir import atomic_write
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

SWEEP = """
import runpy, sys
from pathlib import Path
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

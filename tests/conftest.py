"""Shared by every test: the repository on sys.path, one way to run a script in-process (`cli`),
one check of a script's one-line error (`one_line_error`) and of a function's (`input_error`),
a tiny trained checkpoint (`train_tiny`), a guard against a reader blocking on a FIFO (`Alarm`), and a module's scratch folders (`module_tmp`). Tests
import them with `from conftest import ...`."""
from __future__ import annotations

import io
import runpy
import shlex
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.errors import InputError  # noqa: E402  (needs ROOT on sys.path)
from demo.synthetic import generate_synthetic  # noqa: E402
from pipeline import TINY_TRAIN  # noqa: E402

RUN = "l_i2t_l_sym_1_l_img_0_3_l_text_0_2"


DISK_NEEDED_GB = 3.0   # the suite's scratch at its peak was 2.4 GB (a clean clone's `make test`)
FAILURES = [0]   # tests failed so far (any phase)


# The files that take longest, longest first (a whole test file is one unit of `make test`'s
# --dist loadfile): started first, they leave the short files to fill the end of the run
# instead of one worker finishing a long file alone while the other waits.
LONGEST = ("test_demo.py", "test_tune_weights.py", "test_slurm.py", "test_faults_more.py",
           "test_training.py", "test_text_scale.py", "test_faults.py", "test_hf_text.py",
           "test_frozen_image.py", "test_benchmarks.py")


def pytest_runtest_logreport(report) -> None:
    FAILURES[0] += report.failed


def pytest_collection_modifyitems(items: list) -> None:
    rank = {name: i for i, name in enumerate(LONGEST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST)))   # stable: files keep their order


@pytest.hookimpl(trylast=True)   # after pytest's own tmp_path set-up
def pytest_configure(config) -> None:
    """Stop before the first test where the scratch folder's disk cannot hold the suite: a full
    disk halfway through fails dozens of tests at set-up with errors that do not say why."""
    base = config._tmp_path_factory.getbasetemp()
    free = shutil.disk_usage(base).free / 1e9
    if free < DISK_NEEDED_GB:
        pytest.exit(f"{base}: {free:.1f} GB free, the tests need about {DISK_NEEDED_GB:.0f} GB: "
                    "free some disk or pass --basetemp a folder on a disk with room", returncode=3)


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory, request) -> Iterator[Callable[[str], Path]]:
    """mktemp(name) for a module's shared fixtures, all removed when the module ends if its tests
    passed: each trained checkpoint holds a ResNet and its optimizer (about 135 MB), and kept to
    the end of the suite they add up to more than 10 GB of disk."""
    base = tmp_path_factory.mktemp(Path(str(request.fspath)).stem)
    failed_before = FAILURES[0]

    def mktemp(name: str) -> Path:
        folder = base / name
        folder.mkdir()
        return folder

    yield mktemp
    if FAILURES[0] == failed_before:
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(script: str, *args, check: bool = True) -> Result:
    """`python script args` in this process, exiting as run_main would: code 0, or SystemExit's.
    A script that leaves torch's global grad mode changed fails here, not in a later test's
    backward."""
    import torch
    argv, out, err = sys.argv, io.StringIO(), io.StringIO()
    grad = torch.is_grad_enabled()
    sys.argv = [script, *map(str, args)]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        leaked = torch.is_grad_enabled() != grad
        torch.set_grad_enabled(grad)
    assert not leaked, f"{script} left torch's grad mode changed"
    result = Result(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} exited {code}:\n"
                             f"{result.out}\n{result.err}")
    return result


def input_error(fn, *args, **kw) -> str:
    """fn(*args, **kw) raises InputError with a one-line message; returns the message."""
    with pytest.raises(InputError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.strip() == msg
    return msg


def error_line(result: Result, *phrases: str) -> str:
    """Exit status 2 and one error line holding every phrase; no traceback (progress bars may
    share stderr)."""
    assert result.code == 2, result.out + result.err
    assert "Traceback" not in result.err, result.err
    lines = [line for line in result.err.splitlines() if "error:" in line]
    assert len(lines) == 1, result.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def tmp_files(folder: Path) -> list[Path]:
    """What an interrupted atomic write left behind."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def one_line_error(result: Result, *phrases: str) -> None:
    """The script stopped with exit status 2 and one line on stderr holding every phrase."""
    assert result.code == 2, result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


class Alarm:
    """Fails the test instead of hanging it when a step blocks on a FIFO."""

    def __init__(self, seconds: int):
        self.seconds = seconds

    def __enter__(self):
        def hung(*_):
            raise AssertionError(f"blocked for {self.seconds}s (a FIFO was opened)")
        self.old = signal.signal(signal.SIGALRM, hung)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def quick_text_side(manifest: Path, work: Path) -> list[str]:
    """Doc2Vec (5 epochs), its vectors and exact k = 10 neighbours of a tiny dataset; returns
    the flags every later script of the tests shares (--dataset, --work-dir, --workers 0)."""
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "0"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "5")
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "10", "--backend", "exact")
    return common


def train_tiny(root: Path, texts_per_item: int = 1, seed: int = 0, then: list[str] | None = None
               ) -> tuple[Path, Path, Path]:
    """(manifest, work folder, best.pt) of a one-epoch run on 120 generated items; `then`: the
    trainer's --then-evaluate flags."""
    manifest = generate_synthetic(root / "data", n_items=120, image_size=32, seed=seed,
                                  texts_per_item=texts_per_item)
    work = root / "work"
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "1"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "20")
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "20")
    cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
        "--work-dir", work, *TINY_TRAIN, "--epochs", "1", "--seed", str(seed),
        *([f"--then-evaluate={shlex.join(map(str, then))}"] if then else []))
    return manifest, work, work / "models" / RUN / "best.pt"

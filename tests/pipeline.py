"""Run the pipeline's scripts as a user would, on tiny generated data (shared by several tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY_TRAIN = ["--arch", "resnet18", "--no-pretrained", "--image-size", "32", "--batch-size", "16",
              "--embed-dim", "32", "--gru-hidden", "64", "--workers", "0"]


def run(script: str, *args: str, check: bool = True, env: dict | None = None,
        launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    target = [script] if script == "-m" else [str(ROOT / script)]   # "-m", "pkg.mod": a module
    cmd = (launcher or [sys.executable]) + target + [*map(str, args)]
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=full_env, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def text_side(dataset: Path, work: Path, k: int = 20) -> None:
    """Doc2Vec, its vectors and the kNN file, each script run in this process (the files are
    what the tests read; a process each would only add its start, seconds each)."""
    from conftest import cli   # conftest imports this module
    common = ["--dataset", dataset, "--work-dir", work, "--workers", "1"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "20")
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", str(k))


def frozen_side(dataset: Path, work: Path) -> None:
    """The text side, then the frozen features of a random-weight ResNet-18 at 32 px."""
    from conftest import cli
    text_side(dataset, work)
    cli("prepare_image_features.py", "--dataset", dataset, "--work-dir", work, "--arch",
        "resnet18", "--no-pretrained", "--image-size", "32", "--workers", "1", "--batch-size", "50")

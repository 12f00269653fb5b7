"""Run the scripts inside the test process (no interpreter start-up per call), and train a tiny
checkpoint with them: what the evaluation and retrieval tests share."""
from __future__ import annotations

import io
import runpy
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from demo.synthetic import generate_synthetic
from pipeline import ROOT, TINY_TRAIN

RUN = "l_i2t_l_sym_1_l_img_0_3_l_text_0_2"


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(script: str, *args, check: bool = True) -> Result:
    """`python script args` as run_main would exit: code 0, or SystemExit's code."""
    argv, out, err = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = [script, *map(str, args)]
    code = 0
    try:
        with redirect_stdout(out), redirect_stderr(err):
            runpy.run_path(str(ROOT / script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    result = Result(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{script} {' '.join(map(str, args))} exited {code}:\n"
                             f"{result.out}\n{result.err}")
    return result


def one_line_error(result: Result, *phrases: str) -> None:
    """The script stopped with exit status 2 and one line on stderr holding every phrase."""
    assert result.code == 2, result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def train_tiny(root: Path, texts_per_item: int = 1, seed: int = 0) -> tuple[Path, Path, Path]:
    """(manifest, work folder, best.pt) of a one-epoch run on 120 generated items."""
    manifest = generate_synthetic(root / "data", n_items=120, image_size=32, seed=seed,
                                  texts_per_item=texts_per_item)
    work = root / "work"
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "1"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "20")
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "20")
    cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
        "--work-dir", work, *TINY_TRAIN, "--epochs", "1", "--seed", str(seed))
    return manifest, work, work / "models" / RUN / "best.pt"

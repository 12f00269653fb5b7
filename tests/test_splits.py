"""A dataset without test or validation items stops every script at its first step, in one line."""
import json

import pytest

from fixtures import write_topic_manifest
from pipeline import run


def _manifest(tmp_path, split_of):
    path = write_topic_manifest(tmp_path / "d", n=60)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    with open(path, "w") as f:
        for i, row in enumerate(rows):
            split = split_of(i)
            if split is None:
                row.pop("split")
            else:
                row["split"] = split
            f.write(json.dumps(row) + "\n")
    return path


@pytest.mark.parametrize("script", ["train_doc2vec.py", "prepare_image_cache.py"])
def test_no_test_items_is_one_line_before_anything_is_done(tmp_path, script):
    manifest = _manifest(tmp_path, lambda i: None)      # "split" absent: every item is train
    work = tmp_path / "work"
    proc = run(script, "--dataset", manifest, "--work-dir", work, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no test items" in lines[0] and str(manifest) in lines[0]
    assert '"split": "test"' in lines[0]
    assert not [p for p in work.rglob("*") if p.is_file()]   # nothing written, no image decoded


def test_no_validation_items_is_one_line(tmp_path):
    manifest = _manifest(tmp_path, lambda i: "test" if i % 5 == 0 else "train")
    proc = run("train_doc2vec.py", "--dataset", manifest, "--work-dir", tmp_path / "w",
               "--val-size", "0", check=False)
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert "no validation items" in line and "--val-size" in line


def test_test_items_alone_are_enough_the_validation_slice_comes_from_train(tmp_path):
    manifest = _manifest(tmp_path, lambda i: "test" if i % 5 == 0 else None)
    proc = run("train_doc2vec.py", "--dataset", manifest, "--work-dir", tmp_path / "w",
               "--min-count", "1", "--epochs", "2", "--workers", "1")
    assert "wrote" in proc.stdout

"""Every folder a script writes into is new, empty, or one it made before; any other is refused
with one line and left as it was. A sweep's folder is locked for the whole sweep, and a sweep
killed with kill -9 leaves no trainer running."""
import json
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, cli, error_line
from common.errors import InputError
from demo.synthetic import generate_synthetic
from test_tune_weights import TESTS, fakes, read_calls, sweep_args  # noqa: F401  (fakes: a fixture)


@pytest.fixture(scope="module")
def tiny(module_tmp):
    return generate_synthetic(module_tmp("places") / "data", n_items=12, image_size=16, seed=1)


def image_step(script, *extra):
    return lambda tiny, work: [script, "--dataset", tiny, "--work-dir", work, "--workers", "0",
                               "--image-size", "16", *extra]


# (case, the folder under the scratch folder, the user's file in it, the command)
CASES = [
    ("export_encoders.py --out", "export", "config.json",
     lambda tiny, work: ["export_encoders.py", "--checkpoint", work / "best.pt", "--out",
                         work.parent / "export"]),
    ("retrieve.py --out", "pages", "notes.txt",
     lambda tiny, work: ["retrieve.py", "--checkpoint", work / "best.pt", "--query", "a cat",
                         "--out", work.parent / "pages"]),
    ("evaluate_retrieval.py --save-embeddings", "emb", "images.npy",
     lambda tiny, work: ["evaluate_retrieval.py", "--checkpoint", work / "best.pt",
                         "--save-embeddings", work.parent / "emb"]),
    ("prepare_image_cache.py: WORK/image_cache/16", "work/image_cache/16", "mine.txt",
     image_step("prepare_image_cache.py")),
    ("prepare_image_features.py: WORK/image_features/resnet18_16",
     "work/image_features/resnet18_16", "mine.txt",
     image_step("prepare_image_features.py", "--arch", "resnet18", "--no-pretrained")),
    ("tune_weights.py --out", "sweep", "notes.txt", None),   # with stand-in scripts, below
    ("demo/build_synthetic.py --out", "mydata", "manifest.jsonl",
     lambda tiny, work: ["demo/build_synthetic.py", "--out", work.parent / "mydata", "--items", "12"]),
    ("demo/build_openclipart.py --out", "clipart", "notes.txt",
     lambda tiny, work: ["demo/build_openclipart.py", "--out", work.parent / "clipart", "--root",
                         work.parent / "clipart-root"]),
]


@pytest.mark.parametrize("case, where, name, command", CASES, ids=[c[0] for c in CASES])
def test_a_folder_holding_the_users_files_is_refused_and_left_alone(case, where, name, command,
                                                                     tiny, tmp_path, request):
    folder = tmp_path / where
    folder.mkdir(parents=True)
    (folder / name).write_text("the user's own\n")
    if command is None:
        manifest, calls = request.getfixturevalue("fakes")
        result = cli(*sweep_args(manifest, folder), check=False)
        assert not read_calls(calls)    # not one run started
    else:
        result = cli(*command(tiny, tmp_path / "work"), check=False)
    error_line(result, str(folder), "did not write", name)
    assert sorted(p.name for p in folder.iterdir()) == [name]
    assert (folder / name).read_text() == "the user's own\n"


def test_own_folder_takes_new_empty_marked_and_earlier_outputs_only(tmp_path):
    from common.places import MARKER, own_folder
    made = own_folder(tmp_path / "a" / "b", "x.py", "--out")
    assert (made / MARKER).read_text() == "x.py\n"
    (made / "result.json").write_text("{}")
    assert own_folder(made, "x.py", "--out") == made           # its own, again
    with pytest.raises(InputError, match="a folder x.py made, not y.py"):
        own_folder(made, "y.py", "--out")
    (tmp_path / "empty").mkdir()
    own_folder(tmp_path / "empty", "x.py", "--out")
    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text("{}")                     # written before the marker
    own_folder(old, "x.py", "--out", earlier=("summary.json",))
    assert (old / MARKER).is_file()
    checked = tmp_path / "checked"
    own_folder(checked, "x.py", "--out", make=False)
    assert not checked.exists()
    (tmp_path / "file").write_text("")
    with pytest.raises(InputError, match="is a file"):
        own_folder(tmp_path / "file", "x.py", "--out")


LAUNCH = """import sys
sys.path[:0] = [{root!r}, {tests!r}]
import runpy
import tuning.sweep as sweep
from pathlib import Path
sweep.TRAINER, sweep.EVALUATOR = Path({train!r}), Path({evaluate!r})
sys.argv = ["tune_weights.py", *sys.argv[1:]]
runpy.run_path({script!r}, run_name="__main__")
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(check, seconds: float = 20.0) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def test_a_second_sweep_is_refused_at_once_and_kill_9_leaves_no_trainer(fakes, tmp_path,  # noqa: F811
                                                                        monkeypatch):
    manifest, calls = fakes
    out = tmp_path / "sweep"
    started = tmp_path / "started.txt"
    launch = tmp_path / "launch.py"
    launch.write_text(LAUNCH.format(root=str(ROOT), tests=str(TESTS), script=str(ROOT / "tune_weights.py"),
                                    train=str(tmp_path / "fake_train.py"),
                                    evaluate=str(tmp_path / "fake_evaluate.py")))
    args = [str(a) for a in sweep_args(manifest, out)[1:]]
    env = {**os.environ, "FAKE_STARTED": str(started), "FAKE_SLEEP": "60"}
    first = subprocess.Popen([sys.executable, str(launch), *args], env=env, cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: started.exists() and len(started.read_text().split()) == 2, 60)
        trainers = [int(p) for p in started.read_text().split()]
        # The same sweep again: refused at once, nothing trained or removed.
        t = time.time()
        second = cli(*sweep_args(manifest, out), check=False)
        assert time.time() - t < 10
        error_line(second, str(out), "another tune_weights.py", f"PID {first.pid}")
        assert not read_calls(calls)
        first.kill()                 # kill -9: no handler of the sweep runs
        first.wait()
        assert wait_for(lambda: not any(map(alive, trainers)), 10), "a trainer outlived its sweep"
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        for pid in [int(p) for p in started.read_text().split()] if started.exists() else []:
            if alive(pid):
                os.kill(pid, 9)
    # The folder is free again: a new sweep runs every run once.
    monkeypatch.delenv("FAKE_SLEEP", raising=False)
    cli(*sweep_args(manifest, out))
    trains = [c for c in read_calls(calls) if c["script"] == "train"]
    assert len(trains) == 3 * 2 and len({(tuple(c["weights"]), c["seed"]) for c in trains}) == 6
    assert json.loads((out / "summary.json").read_text())["chosen"]

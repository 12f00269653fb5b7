"""tune_weights.py --launcher slurm on a real single-node SLURM (tools/local_slurm.sh), started
for this module and stopped after it: the sweep's logic with the stand-in scripts (the same
numbers as the local launcher, a rerun submits nothing, --no-wait and collecting, a failed run,
bad input), then the real trainer (a frozen sweep's numbers, a run requeued mid-training, a
2-rank DDP job against torchrun). Skipped, with the reason, where the cluster cannot run (not
root, no apt)."""
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import cli, one_line_error
from pipeline import ROOT, TINY_TRAIN, frozen_side, run
from test_output_places import LAUNCH, wait_for
from test_tune_weights import TESTS, fakes, read_calls  # noqa: F401 - fakes is a fixture

SCRIPT = ROOT / "tools" / "local_slurm.sh"


def _daemons(folder: Path) -> list[int]:
    pids = []
    for name in ("run/slurmctld.pid", "run/slurmd.pid", "munge/munged.pid"):
        try:
            pid = int((folder / name).read_text())
        except (OSError, ValueError):
            continue
        if Path(f"/proc/{pid}").exists():
            pids.append(pid)
    return pids


@pytest.fixture(scope="module")
def cluster():
    # Outside pytest's deep temporary folders: munge's socket path must stay under 108 bytes.
    folder = Path(tempfile.mkdtemp(prefix="slurm-"))
    proc = subprocess.run([str(SCRIPT), "start", str(folder)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode == 3:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    conf = proc.stdout.strip().splitlines()[-1].split("=", 1)[1]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", conf)
        yield folder
    stop = subprocess.run([str(SCRIPT), "stop", str(folder)], capture_output=True, text=True,
                          timeout=120)
    left = _daemons(folder)
    shutil.rmtree(folder, ignore_errors=True)
    assert stop.returncode == 0 and not left, f"daemons left: {left}; {stop.stderr}"


def slurm_args(manifest, out, *extra, grid="1 0 0; 1 0.3 0.2", seeds=1, trainer=()):
    if "slurm" in extra and "--time" not in extra:
        extra = (*extra, "--time", "30")
    return ["tune_weights.py", "--grid", grid, "--seeds", str(seeds), "--out", out,
            "--bootstrap", "200", *extra, "--", "--dataset", manifest, "--work-dir",
            out.parent / "work", "--workers", "0", *trainer]


def metric_rows(out: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k != "folder"}
            for row in csv.DictReader((out / "sweep.csv").open())]


# --- the sweep's logic, with the stand-in scripts -----------------------------------------------

def test_a_slurm_sweep_equals_the_local_one_and_a_rerun_submits_nothing(cluster, fakes, tmp_path):
    manifest, calls = fakes
    local, remote = tmp_path / "local", tmp_path / "slurm"
    cli(*slurm_args(manifest, local, "--devices", "cpu"))
    n = len(read_calls(calls))
    result = cli(*slurm_args(manifest, remote, "--launcher", "slurm", "--cpus-per-run", "1"))
    assert "submitted 2 runs (val) to SLURM" in result.out
    assert "submitted 2 runs (test) to SLURM" in result.out
    assert len([c for c in read_calls(calls)[n:] if c["script"] == "train"]) == 2
    assert metric_rows(remote) == metric_rows(local)
    summary = [json.loads((o / "summary.json").read_text()) for o in (local, remote)]
    assert summary[0]["test"] == summary[1]["test"] and summary[0]["chosen"] == summary[1]["chosen"]
    # The job's own log beside the run's logs.
    run = remote / "release" / "l_i2t_l_sym_1_l_img_0_3_l_text_0_2" / "seed_0"
    assert (run / "slurm_val.out").resolve().is_file() and (run / "train.log").is_file()

    n = len(read_calls(calls))
    again = cli(*slurm_args(manifest, remote, "--launcher", "slurm"))
    assert "submitted" not in again.out and len(read_calls(calls)) == n
    assert again.out.count(": reused, val rsum") == 2


def test_a_failed_run_is_reported_with_its_logs_last_line(cluster, fakes, tmp_path, monkeypatch):
    manifest, calls = fakes
    monkeypatch.setenv("FAKE_FAIL", "0.3 0")
    result = cli(*slurm_args(manifest, tmp_path / "sweep", "--launcher", "slurm"), check=False)
    assert result.code == 1, result.out + result.err
    assert "error: 1 of 2 runs failed (val); the first, release 1 0.3 0.2 seed 0" in result.err
    assert "train.log: RuntimeError: out of memory (fake)" in result.err
    assert not (tmp_path / "sweep" / "summary.json").exists()


def test_no_wait_then_collect_and_a_second_sweep_into_the_folder_is_refused(cluster, fakes,
                                                                           tmp_path, monkeypatch):
    manifest, calls = fakes
    out = tmp_path / "sweep"
    monkeypatch.setenv("FAKE_SLEEP", "2")
    args = slurm_args(manifest, out, "--launcher", "slurm")
    first = cli(*slurm_args(manifest, out, "--launcher", "slurm", "--no-wait"))
    assert "submitted 2 runs (val)" in first.out and "run the same command again" in first.out
    assert not (out / "summary.json").exists()

    launch = tmp_path / "launch.py"
    launch.write_text(LAUNCH.format(root=str(ROOT), tests=str(TESTS),
                                    script=str(ROOT / "tune_weights.py"),
                                    train=str(tmp_path / "fake_train.py"),
                                    evaluate=str(tmp_path / "fake_evaluate.py")))
    collect = subprocess.Popen([sys.executable, str(launch), *map(str, args[1:])],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (out / ".sweep.lock").is_file() and
                        (out / ".sweep.lock").read_text().strip() == str(collect.pid), 30)
        second = cli(*args, check=False)
        one_line_error(second, "another tune_weights.py", str(collect.pid))
        stdout, stderr = collect.communicate(timeout=180)
    finally:
        if collect.poll() is None:
            collect.kill()
    assert collect.returncode == 0, stdout + stderr
    # The collecting call submitted none of the runs still on SLURM, only the test phase.
    assert "submitted 2 runs (val)" not in stdout and "submitted 2 runs (test)" in stdout
    assert len([c for c in read_calls(calls) if c["script"] == "train"]) == 2
    assert (out / "summary.json").is_file()


@pytest.mark.parametrize("flags, message", [
    (["--partition", "nope"], "invalid partition specified: nope"),
    (["--time", "1:2:3:4"], "Invalid --time specification"),
    (["--slurm-extra", "qos"], "--slurm-extra qos: give KEY=VALUE"),
    (["--nodes", "0"], "--nodes must be at least 1"),
    (["--time", ""], "--launcher slurm needs --time"),
])
def test_bad_slurm_settings_are_one_line_before_any_job(cluster, fakes, tmp_path, flags, message):
    manifest, calls = fakes
    result = cli(*slurm_args(manifest, tmp_path / "sweep", "--launcher", "slurm", *flags),
                 check=False)
    one_line_error(result, message)
    assert not calls.exists()


def test_no_sbatch_or_an_unwritable_folder_is_one_line(fakes, tmp_path, monkeypatch):
    manifest, calls = fakes
    (tmp_path / "file").write_text("")
    result = cli(*slurm_args(manifest, tmp_path / "s1", "--launcher", "slurm", "--slurm-folder",
                             tmp_path / "file" / "slurm"), check=False)
    if shutil.which("sbatch"):
        one_line_error(result, "part of this path is a file", "--slurm-folder")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli(*slurm_args(manifest, tmp_path / "s2", "--launcher", "slurm"), check=False)
    one_line_error(result, "sbatch is not on the PATH", "--launcher local")
    assert not calls.exists()


# --- the real trainer ---------------------------------------------------------------------------

FROZEN = [*TINY_TRAIN, "--frozen-image", "--epochs", "3"]


@pytest.fixture(scope="module")
def frozen_data(module_tmp):
    from demo.synthetic import generate_synthetic
    root = module_tmp("slurm")
    manifest = generate_synthetic(root / "data", n_items=120, image_size=32, seed=4)
    frozen_side(manifest, root / "work")
    local = root / "local"
    # Two runs at a time, one thread each (OMP_NUM_THREADS=1), as SLURM runs them with
    # --cpus-per-run 1 on this 2-core node: the same threads give the same numbers.
    run(*map(str, slurm_args(manifest, local, "--devices", "cpu,cpu", seeds=2, trainer=FROZEN)))
    return manifest, root / "work", local


def script(*args, timeout=300) -> subprocess.CompletedProcess:
    """A script in its own process, as a user runs it (the trainer's jobs need the real one)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_a_frozen_sweep_through_slurm_gives_the_local_numbers(cluster, frozen_data, tmp_path):
    manifest, work, local = frozen_data
    out = work.parent / "slurm-sweep"
    proc = script(ROOT / "tune_weights.py", *slurm_args(manifest, out, "--launcher", "slurm",
                                                        "--cpus-per-run", "1", seeds=2,
                                                        trainer=FROZEN)[1:])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert metric_rows(out) == metric_rows(local)


@pytest.mark.slow
def test_a_run_requeued_mid_training_ends_as_an_uninterrupted_one(cluster, frozen_data, tmp_path):
    manifest, work, local = frozen_data
    out = work.parent / "requeued"
    args = slurm_args(manifest, out, "--launcher", "slurm", "--cpus-per-run", "1", grid="1 0 0",
                      trainer=FROZEN)[1:]
    proc = script(ROOT / "tune_weights.py", "--no-wait", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = out / "release" / "l_i2t_l_sym_1_l_img_0_l_text_0" / "seed_0"
    job = json.loads((folder / "slurm_val.json").read_text())["job"]
    # After the first epoch's last.pt, before the last epoch's: requeued as an admin would.
    assert wait_for(lambda: (folder / "last.pt").is_file(), 120), "the run never saved last.pt"
    subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
    proc = script(ROOT / "tune_weights.py", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    starts = (folder / "train.log").read_text().split("\n== ")
    assert len(starts) == 2 and "--resume" in starts[1], "the requeued job did not resume"
    ours = json.loads((folder / "metrics_val.json").read_text())
    # The same run of the local sweep, never interrupted.
    theirs = json.loads((local / folder.relative_to(out) / "metrics_val.json").read_text())
    assert ours == theirs


@pytest.mark.slow
def test_a_two_rank_job_trains_as_torchrun_does(cluster, frozen_data, tmp_path):
    from models.checkpoint import load_checkpoint
    import torch
    manifest, work, _ = frozen_data
    out = work.parent / "ddp"
    flags = [*TINY_TRAIN, "--epochs", "1"]
    proc = script(ROOT / "tune_weights.py", *slurm_args(
        manifest, out, "--launcher", "slurm", "--tasks-per-node", "2", "--cpus-per-run", "1",
        "--keep-last", grid="1 0 0", seeds=1, trainer=flags)[1:])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    folder = out / "release" / "l_i2t_l_sym_1_l_img_0_l_text_0" / "seed_0"
    assert (folder / "train.log").read_text().count("epoch 0: train loss") == 1
    assert "epoch 0: train loss" not in (folder / "train_rank1.log").read_text()   # rank 0 reports
    # The same trainer command under torchrun, as the 2-process gloo test runs it.
    command = json.loads((folder / "started.json").read_text())["key"]["trainer_args"]
    torchrun = tmp_path / "torchrun"
    proc = script("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531",
                  ROOT / "train_cross_modal_retrieval_model.py", "1", "0", "0", *command,
                  "--negatives", "release", "--run-seed", "0", "--log-dir", torchrun,
                  "--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    a, b = load_checkpoint(folder / "last.pt"), load_checkpoint(torchrun / "last.pt")
    assert a["step"] == b["step"] > 0
    for name, tensor in a["model"].items():
        assert torch.equal(tensor, b["model"][name]), name


@pytest.mark.parametrize("flags, message", [
    (["--partition", "gpu"], "--partition is for --launcher slurm"),
    (["--no-wait"], "are for --launcher slurm"),
    (["--launcher", "slurm", "--devices", "cuda:0"], "--devices: the local launcher's"),
])
def test_each_launchers_flags_belong_to_it(fakes, tmp_path, flags, message):
    manifest, calls = fakes
    result = cli(*slurm_args(manifest, tmp_path / "sweep", *flags), check=False)
    assert result.code == 2 and message in result.err, result.err
    assert not calls.exists()


def test_sbatch_time_formats_in_minutes():
    from tuning.slurm import minutes
    assert [minutes(t) for t in ("90", "1:30", "2:00:00", "1-12", "1-0:0:1", "0:20")] == \
        [90, 2, 120, 2160, 1441, 1]
    for bad in ("x", "1:2:3:4", "1-a"):
        with pytest.raises(ValueError):
            minutes(bad)

"""tune_weights.py: its grid, devices and bad input, and the sweep's logic (scheduling, reuse,
continuing a killed run, a failed run, both objectives) with stand-in scripts."""
import csv
import json
import threading
import time
from pathlib import Path

import pytest

import train_cross_modal_retrieval_model as trainer
import tuning.sweep as sweep
from fixtures import write_topic_manifest
from conftest import cli, one_line_error
from tuning.grid import parse_grid, parse_values, product_grid
from tuning.sweep import Device, Outcome, parse_devices, run_all

TESTS = Path(__file__).resolve().parent


# --- the grid and the devices -----------------------------------------------------------------

def test_grid_lists_and_ranges():
    assert parse_grid("1 0 0; 1 0.3 0.2\n1,1,1") == [(1, 0, 0), (1, 0.3, 0.2), (1, 1, 1)]
    assert parse_values("0:0.4:0.1", "--w-img") == [0, 0.1, 0.2, 0.3, 0.4]
    assert parse_values("0, 0.3", "--w-img") == [0, 0.3]
    assert product_grid([1], [0, 0.3], [0, 0.2]) == [(1, 0, 0), (1, 0, 0.2), (1, 0.3, 0),
                                                     (1, 0.3, 0.2)]


@pytest.mark.parametrize("text, message", [
    ("", "holds no triple"), (" ; ", "holds no triple"), ("1 0", "has 2 numbers"),
    ("1 -0.3 0", "negative"), ("1 0 0; 1 0 0", "twice"), ("1 x 0", "not a number"),
    ("1 nan 0", "not a finite number")])
def test_bad_grids(text, message):
    with pytest.raises(ValueError, match=message):
        parse_grid(text)


def test_bad_ranges():
    for text, message in (("0:1", "START:STOP:STEP"), ("1:0:0.1", "STOP >= START"),
                          ("0:1:0", "STEP > 0"), ("-1:1:1", "negative"), ("0,0", "twice")):
        with pytest.raises(ValueError, match=message):
            parse_values(text, "--w-img")


def test_devices():
    assert parse_devices("auto", 0, 2) == [Device("cpu")]
    assert [d.name for d in parse_devices("auto", 2, 8)] == ["cuda:0", "cuda:1"]
    gpu = parse_devices("cuda:1", 2, 8)[0]
    assert gpu.flag == "cuda" and dict(gpu.env) == {"CUDA_VISIBLE_DEVICES": "1"}
    two = parse_devices("cpu,cpu", 0, 8)
    assert [dict(d.env) for d in two] == [{"OMP_NUM_THREADS": "4"}] * 2
    for text, message in (("cuda:2", "not there"), ("gpu", "not a device"),
                          ("cuda:0,cuda:0", "twice"), (",", "empty")):
        with pytest.raises(ValueError, match=message):
            parse_devices(text, 2, 8)


def test_one_job_per_device_at_a_time_and_every_device_used():
    busy, seen, lock = {}, [], threading.Lock()

    def work(job, device):
        with lock:
            assert not busy.get(device.name), f"{device.name} given two jobs at once"
            busy[device.name] = True
            seen.append(device.name)
        time.sleep(0.02)
        with lock:
            busy[device.name] = False
        if job == 5:
            raise RuntimeError("broken")
        return Outcome("done", metrics={"job": job})

    order = []
    devices = [Device("fake:0"), Device("fake:1"), Device("fake:2")]
    outcomes = run_all(list(range(12)), devices, work, lambda i, j, d, o: order.append(i))
    assert sorted(order) == list(range(12))
    assert set(seen) == {"fake:0", "fake:1", "fake:2"}
    assert [o.metrics["job"] for i, o in enumerate(outcomes) if i != 5] == \
        [i for i in range(12) if i != 5]
    assert outcomes[5].status == "failed" and "RuntimeError: broken" in outcomes[5].error


# --- the script, with stand-ins for the trainer and the evaluation ------------------------------

@pytest.fixture
def fakes(tmp_path, monkeypatch):
    """tuning.sweep runs stand-ins; the trainer's own parse takes --negatives (until the real
    trainer has it: the sweep only passes it on)."""
    for name, func in (("train", "train"), ("evaluate", "evaluate")):
        (tmp_path / f"fake_{name}.py").write_text(
            f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nfrom fake_scripts import {func}\n"
            f"{func}(sys.argv[1:])\n")
    monkeypatch.setattr(sweep, "TRAINER", tmp_path / "fake_train.py")
    monkeypatch.setattr(sweep, "EVALUATOR", tmp_path / "fake_evaluate.py")
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_FAIL", raising=False)
    real = trainer.parse_args
    if not _has_negatives(real):
        def with_negatives(argv):
            argv = list(argv)
            negatives = "release"
            if "--negatives" in argv:
                i = argv.index("--negatives")
                negatives = argv[i + 1]
                if negatives not in ("release", "clean"):
                    raise SystemExit(2)
                del argv[i:i + 2]
            parsed = real(argv)
            parsed.negatives = negatives
            return parsed
        monkeypatch.setattr(trainer, "parse_args", with_negatives)
    manifest = write_topic_manifest(tmp_path / "data", n=100)
    return manifest, calls


def _has_negatives(parse) -> bool:
    try:
        return hasattr(parse(["1", "0", "0"]), "negatives")
    except SystemExit:
        return False


def read_calls(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def sweep_args(manifest, out, *extra, trainer_flags=(), devices="cpu,cpu"):
    return ["tune_weights.py", "--grid", "1 0 0; 1 0.3 0.2; 1 0.6 0", "--seeds", "2",
            "--devices", devices, "--out", out, "--bootstrap", "200", *extra, "--",
            "--dataset", manifest, "--work-dir", out.parent / "work", "--workers", "0",
            *trainer_flags]


def test_sweep_chooses_on_validation_then_tests_the_choice_and_the_baseline(fakes, tmp_path):
    manifest, calls = fakes
    out = tmp_path / "sweep"
    result = cli(*sweep_args(manifest, out, "--objectives", "release,clean"))
    log = read_calls(calls)
    trains = [c for c in log if c["script"] == "train"]
    assert len(trains) == 3 * 2 * 2
    assert {c["negatives"] for c in trains} == {"release", "clean"}
    assert {c["seed"] for c in trains} == {0, 1} and all(c["device"] == "cpu" for c in trains)
    evals = [c for c in log if c["script"] == "evaluate"]
    val = [c for c in evals if c["split"] == "val"]
    test = [c for c in evals if c["split"] == "test"]
    assert len(val) == 12 and not any(c["save_ranks"] for c in val)
    # Each validation in its trainer's process (--then-evaluate); the 8 tests in one process per
    # device (of 2), each run's metrics and log in its folder.
    assert sorted(c["pid"] for c in val) == sorted(c["pid"] for c in trains)
    assert len({c["pid"] for c in test}) == 2
    assert not {c["pid"] for c in test} & {c["pid"] for c in trains}
    for folder in {f.parent for f in out.glob("*/*/seed_*/done_test.json")}:
        assert (folder / "evaluate_test.log").is_file() and (folder / "per_query_test.npz").is_file()
    assert not list(out.rglob("metrics_test_together.json"))
    # Test only after every validation, and only the chosen (rsum rises with w_img) and 1 0 0.
    assert log.index(test[0]) > max(log.index(c) for c in val)
    assert sorted(tuple(c["weights"]) for c in test) == sorted([(1, 0, 0), (1, 0.6, 0)] * 4)
    assert all(c["save_ranks"] for c in test)

    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 12
    assert {"objective", "w_sym", "w_img", "w_text", "seed", "rsum", "i2t_r1", "t2i_medr",
            "image_overlap"} <= set(rows[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chosen"] == {"release": [1, 0.6, 0], "clean": [1, 0.6, 0]}
    for objective in ("release", "clean"):
        means = {tuple(t["weights"]): t["rsum"]["mean"] for t in summary["validation"][objective]}
        chosen_rows = [float(r["rsum"]) for r in rows
                       if r["objective"] == objective and float(r["w_img"]) == 0.6]
        assert means[(1, 0.6, 0)] == pytest.approx(sum(chosen_rows) / 2)
        assert max(means.values()) == means[(1, 0.6, 0)]
        rsum = summary["test"][objective]["rsum"]
        assert rsum["difference"] == pytest.approx(rsum["chosen"] - rsum["baseline"])
        lo, hi = rsum["bootstrap_ci"]
        assert lo < rsum["difference"] < hi
        lo, hi = rsum["seed_ci"]
        assert lo <= rsum["difference"] <= hi and rsum["seeds"] == 2
    for png in ("validation.png", "test.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "* 1 0.6 0" in result.out and "95% CI seeds (t)" in result.out
    assert result.out.count("] release 1 0.3 0.2 seed 1 on cpu: ") == 1
    # A validated run keeps best.pt, which every later evaluation reads, and not last.pt.
    folders = [f.parent for f in out.glob("*/*/seed_*/done_val.json")]
    assert len(folders) == 12 and all((f / "best.pt").is_file() for f in folders)
    assert not list(out.rglob("last.pt"))

    # Run again: everything is reused, nothing is trained or evaluated.
    before = len(read_calls(calls))
    again = cli(*sweep_args(manifest, out, "--objectives", "release,clean"))
    assert len(read_calls(calls)) == before
    assert again.out.count(": reused, val rsum") == 12 and again.out.count(": reused, test rsum") == 8
    assert json.loads((out / "summary.json").read_text())["test"] == summary["test"]

    # Another evaluation setting: every run is evaluated again, none trained again.
    before = len(read_calls(calls))
    cli(*sweep_args(manifest, out, "--objectives", "release,clean", "--ties", "worst"))
    new = read_calls(calls)[before:]
    assert not [c for c in new if c["script"] == "train"]
    assert len([c for c in new if c["script"] == "evaluate" and c["split"] == "val"]) == 12
    assert not {c["pid"] for c in new} & {c["pid"] for c in trains}   # each in its own process


def test_also_test_compares_a_named_triple_with_the_baseline_whatever_the_choice(fakes, tmp_path):
    manifest, calls = fakes
    out = tmp_path / "sweep"
    result = cli(*sweep_args(manifest, out, "--also-test", "1 0.3 0.2"))
    test = [c for c in read_calls(calls) if c["script"] == "evaluate" and c["split"] == "test"]
    # The choice (1 0.6 0), the named triple and the baseline, two seeds each, once each.
    assert sorted(tuple(c["weights"]) for c in test) == sorted([(1, 0, 0), (1, 0.6, 0), (1, 0.3, 0.2)] * 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chosen"] == {"release": [1, 0.6, 0]}
    named = summary["also_test"]["1 0.3 0.2"]["release"]["rsum"]
    chosen = summary["test"]["release"]["rsum"]
    assert named["baseline"] == chosen["baseline"] and named["chosen"] != chosen["chosen"]
    assert named["difference"] == pytest.approx(named["chosen"] - named["baseline"])
    assert "1 0.3 0.2 (named by --also-test) against the baseline 1 0 0" in result.out
    assert (out / "test_1_0.3_0.2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_finetune_chosen_trains_the_frozen_choice_fine_tuned_and_compares_it(fakes, tmp_path, monkeypatch):
    import models.features
    monkeypatch.setattr(models.features, "training_features", lambda *a, **k: None)
    manifest, calls = fakes
    out = tmp_path / "sweep"
    result = cli(*sweep_args(manifest, out, "--finetune-chosen", "2", "--also-test", "1 0.3 0.2",
                             "--finetune-args=--epochs 7", trainer_flags=["--frozen-image"]))
    trains = [c for c in read_calls(calls) if c["script"] == "train"]
    assert len([c for c in trains if c["frozen"]]) == 3 * 2
    fine = [c for c in trains if not c["frozen"]]
    # --finetune-args reach the fine-tuned runs only, after the sweep's own flags.
    assert {str(c["epochs"]) for c in fine} == {"7"} and "7" not in {str(c["epochs"]) for c in trains if c["frozen"]}
    # The frozen choice (rsum rises with w_img: 1 0.6 0), the baseline and the named triple.
    assert sorted(tuple(c["weights"]) for c in fine) == sorted([(1, 0, 0), (1, 0.6, 0), (1, 0.3, 0.2)] * 2)
    fine_tests = [c for c in read_calls(calls) if c["script"] == "evaluate" and c["split"] == "test"]
    assert len(fine_tests) == 3 * 2 + 3 * 2    # the frozen comparison's, then the fine-tuned one's
    summary = json.loads((out / "summary.json").read_text())
    ft = summary["finetuned"]
    assert ft["seeds"] == 2 and "--frozen-image" not in ft["trainer_args"]
    assert ft["best_on_validation"] == {"release": [1, 0.6, 0]} and ft["agrees"] == {"release": True}
    rsum = ft["test"]["release"]["rsum"]
    assert rsum["seeds"] == 2 and rsum["difference"] == pytest.approx(rsum["chosen"] - rsum["baseline"])
    assert "1 0.3 0.2" in ft["also_test"]
    assert (out / "finetuned" / "release" / "l_i2t_l_sym_1_l_img_0_6_l_text_0" / "seed_1" / "best.pt").is_file()
    assert "fine-tuned agree" in result.out and "test, fine-tuned, objective release" in result.out

    refused = cli(*sweep_args(manifest, tmp_path / "s2", "--finetune-chosen", "2"), check=False)
    assert refused.code == 2 and "--frozen-image" in refused.err.strip().splitlines()[-1]
    before = len(read_calls(calls))
    refused = cli(*sweep_args(manifest, tmp_path / "s3", "--finetune-args=--epochs 2",
                              trainer_flags=["--frozen-image"]), check=False)
    assert refused.code == 2 and "add --finetune-chosen" in refused.err.strip().splitlines()[-1]
    refused = cli(*sweep_args(manifest, tmp_path / "s4", "--finetune-chosen", "1",
                              "--finetune-args=--image-size many", trainer_flags=["--frozen-image"]),
                  check=False)
    assert refused.code == 2 and "--image-size" in refused.err.strip().splitlines()[-1]
    assert len(read_calls(calls)) == before   # refused before any run


def test_a_killed_run_continues_and_changed_flags_retrain(fakes, tmp_path, monkeypatch):
    manifest, calls = fakes
    out = tmp_path / "sweep"
    cli(*sweep_args(manifest, out, "--keep-last"))
    assert len(list(out.rglob("last.pt"))) == 6
    killed = out / "release" / "l_i2t_l_sym_1_l_img_0_3_l_text_0_2" / "seed_1"
    # Killed in training: no marker, and started.json without the trainer's success.
    (killed / "done_val.json").unlink()
    started = json.loads((killed / "started.json").read_text())
    assert started.pop("trained") is True
    (killed / "started.json").write_text(json.dumps(started))
    n = len(read_calls(calls))
    result = cli(*sweep_args(manifest, out))
    new = read_calls(calls)[n:]
    assert [(c["script"], c["weights"], c["seed"], c.get("resume")) for c in new] == \
        [("train", [1, 0.3, 0.2], 1, True), ("evaluate", [1, 0.3, 0.2], 1, None)]
    assert result.out.count("reused") == 6 + 3   # 5 val runs and 4 test runs of 6 + 4 in all

    # Other trainer flags: a different model, so every run trains again, from scratch, and the
    # old checkpoints go first: a run stopped before it saves never resumes another's.
    n = len(read_calls(calls))
    monkeypatch.setenv("FAKE_FAIL", "0.3 1")
    cli(*sweep_args(manifest, out, trainer_flags=["--epochs", "3"]), check=False)
    assert not (killed / "last.pt").exists() and not (killed / "best.pt").exists()
    monkeypatch.delenv("FAKE_FAIL")
    cli(*sweep_args(manifest, out, trainer_flags=["--epochs", "3"]))
    trains = [c for c in read_calls(calls)[n:] if c["script"] == "train"]
    assert len(trains) == 7 and not any(c["resume"] for c in trains)
    assert all(c["overwrite"] for c in trains)
    assert {c["epochs"] for c in trains} == {"3"}


def test_a_failed_run_stops_the_sweep_after_the_others_with_its_log(fakes, tmp_path, monkeypatch):
    manifest, calls = fakes
    out = tmp_path / "sweep"
    monkeypatch.setenv("FAKE_FAIL", "0.3 1")
    result = cli(*sweep_args(manifest, out), check=False)
    assert result.code == 1
    assert "error: 1 of 6 runs failed (val); the first, release 1 0.3 0.2 seed 1" in result.err
    assert "train.log: RuntimeError: out of memory (fake)" in result.err
    assert len([c for c in read_calls(calls) if c["script"] == "train"]) == 6
    assert not (out / "summary.json").exists()
    monkeypatch.delenv("FAKE_FAIL")
    n = len(read_calls(calls))
    cli(*sweep_args(manifest, out))
    assert [c["script"] for c in read_calls(calls)[n:]][:2] == ["train", "evaluate"]
    assert (out / "summary.json").exists()


def test_a_run_failing_its_test_evaluation_fails_alone(fakes, tmp_path, monkeypatch):
    """The tests of a device share a process: when it fails, each run is evaluated on its own,
    so only the broken one fails, and a rerun evaluates only that one."""
    manifest, calls = fakes
    out = tmp_path / "sweep"
    monkeypatch.setenv("FAKE_EVAL_FAIL", "0 1")      # the baseline's seed 1
    result = cli(*sweep_args(manifest, out, devices="cpu"), check=False)
    assert result.code == 1, result.err
    assert "error: 1 of 4 runs failed (test); the first, release 1 0 0 seed 1" in result.err
    assert "unreadable (fake)" in result.err
    done = sorted(f.parent.parent.name + "/" + f.parent.name for f in out.glob("*/*/seed_*/done_test.json"))
    assert done == ["l_i2t_l_sym_1_l_img_0_6_l_text_0/seed_0", "l_i2t_l_sym_1_l_img_0_6_l_text_0/seed_1",
                    "l_i2t_l_sym_1_l_img_0_l_text_0/seed_0"]
    monkeypatch.delenv("FAKE_EVAL_FAIL")
    n = len(read_calls(calls))
    cli(*sweep_args(manifest, out, devices="cpu"))
    again = read_calls(calls)[n:]
    assert [(c["script"], c["split"], c["weights"][1], c["seed"]) for c in again] == \
        [("evaluate", "test", 0, 1)]


def test_without_objectives_the_trainers_default_is_passed_on(fakes, tmp_path):
    manifest, calls = fakes
    out = tmp_path / "sweep"
    cli("tune_weights.py", "--grid", "1 0.3 0.2", "--seeds", "1", "--devices", "cpu", "--out", out,
        "--bootstrap", "100", "--", "--dataset", manifest, "--work-dir", tmp_path / "work")
    trains = [c for c in read_calls(calls) if c["script"] == "train"]
    # The baseline joins the grid; the chosen triple is compared with it on test.
    assert sorted(c["weights"][1] for c in trains) == [0, 0.3]
    assert {c["negatives"] for c in trains} == {"release"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["release"]["rsum"]["seed_ci"] is None    # one seed: no t interval


# --- bad input: one line, before any training -------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--grid", ""], "holds no triple"),
    (["--grid", "1 -1 0"], "negative"),
    (["--grid", "1 0 0", "--seeds", "0"], "--seeds must be at least 1"),
    (["--grid", "1 0 0", "--w-img", "0"], "either --grid or"),
    (["--w-img", "0:1:0.5"], "all of --w-sym"),
    (["--grid", "1 0 0", "--devices", "cuda:3"], "cuda:3 is not there"),
    (["--grid", "1 0 0", "--objectives", "release,release"], "list each objective once"),
    (["--grid", "1 0 0", "--objectives", "tidy"], "the trainer's flags (after --)"),
    (["--grid", "1 0 0", "--bootstrap", "10"], "--bootstrap must be at least 100"),
    (["--grid", "1 0 0; 1 0.3 0.2", "--also-test", "1 1 1"], "--also-test 1 1 1: not in the grid"),
    (["--grid", "1 0 0", "--also-test", "1 x 0"], "--also-test: "),
])
def test_bad_flags_stop_before_any_training(fakes, tmp_path, flags, message):
    manifest, calls = fakes
    out = tmp_path / "sweep"
    result = cli("tune_weights.py", *flags, "--out", out, "--", "--dataset", manifest, check=False)
    assert result.code == 2 and message in result.err, result.err
    assert not out.exists() and not calls.exists()


@pytest.mark.parametrize("trainer_flags, message", [
    (["--epochz", "3"], "unrecognized arguments: --epochz"),
    (["--log-dir", "x"], "--log-dir after --: the sweep sets it"),
    (["--device", "cpu"], "--device after --"),
    (["--run-seed", "4"], "--run-seed after --"),
    (["--resume"], "--resume after --"),
    (["--overwrite"], "--overwrite after --"),
    (["--run-name", "x"], "--run-name after --"),
])
def test_bad_trainer_flags_stop_before_any_training(fakes, tmp_path, trainer_flags, message):
    manifest, calls = fakes
    result = cli("tune_weights.py", "--grid", "1 0 0", "--out", tmp_path / "sweep", "--",
                 "--dataset", manifest, *trainer_flags, check=False)
    assert result.code == 2 and message in result.err, result.err
    assert not calls.exists()


def test_a_metric_the_data_cannot_give_is_a_one_line_error(fakes, tmp_path):
    manifest, calls = fakes
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    next(r for r in records if r["split"] == "test")["label"] = None
    unlabeled = tmp_path / "data" / "unlabeled.jsonl"
    unlabeled.write_text("".join(json.dumps(r) + "\n" for r in records))
    base = ["tune_weights.py", "--grid", "1 0 0", "--out", tmp_path / "sweep"]
    result = cli(*base, "--select", "label_p10_t2i", "--", "--dataset", unlabeled,
                 "--val-size", "30", check=False)
    one_line_error(result, "error: --select label_p10_t2i needs a label on every validation",
                   "1 test items")
    result = cli(*base, "--select", "image_overlap", "--", "--dataset", manifest, "--work-dir",
                 tmp_path / "empty", check=False)
    one_line_error(result, "needs the Doc2Vec model")
    assert not calls.exists()


# --- for real, on tiny data -------------------------------------------------------------------

@pytest.mark.slow
def test_a_real_sweep_on_tiny_data(tmp_path):
    from demo.synthetic import generate_synthetic
    from pipeline import TINY_TRAIN
    from models.checkpoint import load_checkpoint

    # No item marked val: validation is the seeded slice of train, as large as test.
    manifest = generate_synthetic(tmp_path / "data", n_items=120, image_size=32, val_fraction=0)
    n_test = sum(json.loads(line)["split"] == "test" for line in manifest.read_text().splitlines())
    work, out = tmp_path / "work", tmp_path / "sweep"
    common = ["--dataset", manifest, "--work-dir", work, "--workers", "1"]
    cli("train_doc2vec.py", *common, "--min-count", "2", "--epochs", "20")
    cli("extract_doc2vec_vectors.py", *common)
    cli("knn_document_features.py", *common, "--k", "20")
    objectives = ["--objectives", "release,clean"] if _has_negatives(trainer.parse_args) else []
    result = cli("tune_weights.py", "--grid", "1 0 0; 1 0.3 0.2", "--seeds", "2", "--devices",
                 "cpu", "--out", out, "--bootstrap", "200", *objectives, "--",
                 "--dataset", manifest, "--work-dir", work, *TINY_TRAIN, "--epochs", "1")
    n_objectives = 2 if objectives else 1
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert len(rows) == 4 * n_objectives
    summary = json.loads((out / "summary.json").read_text())
    for row in rows:
        folder = out / row["folder"]
        config = load_checkpoint(folder / "best.pt")["config"]
        assert config["run_seed"] == int(row["seed"]) and config["seed"] == 0
        assert Path(config["log_dir"]).resolve() == folder.resolve()
        val = json.loads((folder / "metrics_val.json").read_text())
        assert val["n_images"] == n_test and float(row["rsum"]) == pytest.approx(val["rsum"])
        # Evaluated on validation by the trainer, in its process.
        assert "evaluating: evaluate_retrieval.py" in (folder / "train.log").read_text()
        assert not (folder / "evaluate_val.log").exists()
    # Two seeds of one triple are two different models.
    by_seed = {r["seed"]: r for r in rows
               if float(r["w_img"]) == 0.3 and r["objective"] == rows[0]["objective"]}
    assert (by_seed["0"]["rsum"], by_seed["0"]["text_overlap"]) != \
        (by_seed["1"]["rsum"], by_seed["1"]["text_overlap"])
    for objective, comparison in summary["test"].items():
        chosen = summary["chosen"][objective]
        assert chosen in ([1, 0, 0], [1, 0.3, 0.2])
        for name in ("rsum", "i2t_r1", "t2i_medr", "image_overlap", "label_p10_t2i"):
            c = comparison[name]
            lo, hi = c["bootstrap_ci"]
            assert lo <= c["difference"] <= hi
        base = out / objective / "l_i2t_l_sym_1_l_img_0_l_text_0" / "seed_1"
        test = json.loads((base / "metrics_test.json").read_text())
        assert test["n_images"] == n_test and (base / "per_query_test.npz").is_file()
    # The test runs shared one evaluation process: each run's numbers are those it gets alone.
    cli("evaluate_retrieval.py", "--checkpoint", base / "best.pt", "--out", tmp_path / "alone.json")
    assert json.loads((tmp_path / "alone.json").read_text()) == test
    assert "--checkpoint" in (base / "evaluate_test.log").read_text()
    assert "95% CI queries (bootstrap)" in result.out

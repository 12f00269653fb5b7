"""Stand-ins for the trainer and the evaluation, for tune_weights.py's tests of the sweep's
logic (scheduling, reuse, continuing a killed run, failures): they take the real scripts' flags
and write the real scripts' files in milliseconds, and log every call.

Fake metrics: validation rsum rises with w_img (so the sweep's choice is known in advance) and
varies with the seed; the per-query ranks are drawn from the weights and the seed, and every
metric in metrics_<split>.json is computed from them, as evaluate_retrieval.py does.
"""
import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from evaluation.names import run_names  # noqa: E402 (the project's root, added above)

CALLS = os.environ.get("FAKE_CALLS")      # a JSONL file every call is appended to
FAIL = os.environ.get("FAKE_FAIL")        # "W_IMG SEED": that run's training fails
EVAL_FAIL = os.environ.get("FAKE_EVAL_FAIL")   # "W_IMG SEED": evaluating that run on test fails
N_IMAGES, TEXTS = 30, 2


def log_call(**record) -> None:
    with open(CALLS, "a") as f:
        f.write(json.dumps({**record, "pid": os.getpid(),
                            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")


def train(argv) -> None:
    p = argparse.ArgumentParser()
    for w in ("w_sym", "w_img", "w_text"):
        p.add_argument(w, type=float)
    for flag in ("--log-dir", "--run-seed", "--negatives", "--device", "--dataset", "--work-dir",
                 "--epochs", "--workers", "--arch", "--sleep", "--then-evaluate"):
        p.add_argument(flag)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    a, _ = p.parse_known_args(argv)
    start = time.time()
    if os.environ.get("FAKE_STARTED"):     # the PID of every trainer, as it starts
        with open(os.environ["FAKE_STARTED"], "a") as f:
            f.write(f"{os.getpid()}\n")
    time.sleep(float(a.sleep or os.environ.get("FAKE_SLEEP") or 0))
    log_call(script="train", weights=[a.w_sym, a.w_img, a.w_text], seed=int(a.run_seed),
             negatives=a.negatives, resume=a.resume, overwrite=a.overwrite, device=a.device, epochs=a.epochs,
             frozen="--frozen-image" in argv, start=start, end=time.time())
    if FAIL == f"{a.w_img:g} {a.run_seed}":
        print("RuntimeError: out of memory (fake)")
        sys.exit(1)
    folder = Path(a.log_dir)
    state = {"weights": [a.w_sym, a.w_img, a.w_text], "seed": int(a.run_seed),
             "negatives": a.negatives}
    for name in ("last.pt", "best.pt"):
        (folder / name).write_text(json.dumps(state))
    if a.then_evaluate is not None:    # as the trainer does: in this process, after training
        evaluate(["--checkpoint", str(folder / "best.pt"), *shlex.split(a.then_evaluate),
                  "--device", a.device])


def evaluate(argv) -> None:
    """Several checkpoints and --out: a dict keyed by their run names, as the real script."""
    p = argparse.ArgumentParser()
    for flag in ("--split", "--out", "--ties", "--workers", "--device"):
        p.add_argument(flag)
    p.add_argument("--checkpoint", nargs="+")
    p.add_argument("--save-ranks", action="store_true")
    a = p.parse_args(argv)
    results = {name: evaluate_one(checkpoint, a)
               for name, checkpoint in zip(run_names(a.checkpoint), a.checkpoint)}
    Path(a.out).write_text(json.dumps(results if len(results) > 1 else next(iter(results.values()))))


def evaluate_one(checkpoint: str, a: argparse.Namespace) -> dict:
    state = json.loads(Path(checkpoint).read_text())
    if a.split == "test" and EVAL_FAIL == f"{state['weights'][1]:g} {state['seed']}":
        print(f"RuntimeError: {checkpoint} is unreadable (fake)")
        sys.exit(1)
    log_call(script="evaluate", split=a.split, weights=state["weights"], seed=state["seed"],
             negatives=state["negatives"], save_ranks=a.save_ranks, device=a.device)
    w_sym, w_img, w_text = state["weights"]
    rng = np.random.default_rng([int(100 * w_img), int(100 * w_text), state["seed"],
                                 a.split == "test"])
    spread = max(2, int(25 - 40 * w_img + 3 * state["seed"]))
    text_image = np.repeat(np.arange(N_IMAGES), TEXTS)
    per = {"rank_i2t": rng.integers(0, spread, N_IMAGES),
           "rank_t2i": rng.integers(0, spread, N_IMAGES * TEXTS), "text_image": text_image,
           "image_overlap_hits": rng.integers(0, 11, N_IMAGES),
           "text_overlap_hits": rng.integers(0, 11, N_IMAGES)}
    metrics = {"n_images": N_IMAGES, "n_texts": N_IMAGES * TEXTS}
    for d in ("i2t", "t2i"):
        r = per[f"rank_{d}"]
        metrics[d] = {"r1": 100 * np.mean(r < 1), "r5": 100 * np.mean(r < 5),
                      "r10": 100 * np.mean(r < 10), "medr": np.floor(np.median(r)) + 1,
                      "meanr": np.mean(r) + 1}
    metrics["rsum"] = sum(metrics[d][f"r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    metrics["neighborhood"] = {f"{n}_overlap@10": per[f"{n}_overlap_hits"].mean() / 10
                               for n in ("image", "text")}
    metrics = json.loads(json.dumps(metrics, default=float))
    if a.save_ranks:
        with open(Path(checkpoint).parent / f"per_query_{a.split}.npz", "wb") as f:
            np.savez(f, **per)
    return metrics


if __name__ == "__main__":
    {"train": train, "evaluate": evaluate}[sys.argv[1]](sys.argv[2:])

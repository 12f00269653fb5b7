"""The whole method on built-in data, on a CPU in minutes (`make demo`, `make demo DATA=synthetic`).

Builds the dataset, trains Doc2Vec, finds the neighbourhoods, trains the baseline (1 0 0) and the
paper's weights (1 0.3 0.2), evaluates both side by side and writes a retrieval page. Run again,
it reuses every step already done with the same settings, and says so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from cli import max_workers, real, whole
from common import signals
from common.workdir import DOC2VEC_FEATURES, check_writable, load_pickle
from common.records import read_json
from data.images.cache import cache_folder
from demo.fingerprint import checkpoint_fingerprint, knn_fingerprint, vectors_fingerprint
from losses import NEGATIVES
from losses.weights import Weights
from models.backbones import CHOICES as ARCH_CHOICES, arch_name, backbone
from models.features import features_folder

ROOT = Path(__file__).resolve().parent.parent
RUNS = {"baseline": ("1", "0", "0"), "paper": ("1", "0.3", "0.2")}
# Settings that fit a 2-core CPU; each is a flag of the script named. The image side: ImageNet
# EfficientNet-Lite0 (its weights install with pip) as frozen features at its own 224 px, or,
# with --no-pretrained, a random-weight ResNet-18 fine-tuned at 64 px (the earlier demo).
DEFAULTS = {
    "synthetic": dict(items=800, epochs=6, min_count=5, max_sentences=0),
    "openclipart": dict(items=1600, epochs=5, min_count=3, max_sentences=2),
}
IMAGE = {True: dict(arch="efficientnet_lite0", frozen_image=True),
         False: dict(arch="resnet18", frozen_image=False, image_size=64)}
MIN_ITEMS = 40   # fewer leave too few validation and test items for the evaluation's k = 10
K = 50           # the demo's kNN size, cut to the corpus when it has fewer training documents
QUERIES = {"synthetic": ["rocket orbit astronaut", "guitar concert melody"],
           "openclipart": ["cat", "red car", "christmas tree"]}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", choices=sorted(DEFAULTS), default="openclipart")
    p.add_argument("--run-dir", default=None, help="default: runs/demo/DATA")
    # Every value checked here, before the first step: a bad one would otherwise stop the
    # demo only when the step that takes it runs, after minutes of the earlier ones.
    p.add_argument("--items", type=whole(MIN_ITEMS), default=None,
                   help="synthetic items / Open Clip Art pictures")
    p.add_argument("--image-size", type=whole(16), default=None,
                   help="default: the backbone's own size pretrained (224), 64 from random weights")
    p.add_argument("--epochs", type=whole(1), default=None, help="training epochs of each run")
    p.add_argument("--batch-size", type=whole(2), default=32)
    p.add_argument("--lr", type=real(0, above=True), default=1e-3,
                   help="10x the paper's 1e-4: the demo trains only a few epochs")
    p.add_argument("--arch", type=arch_name, default=None, metavar="ARCH",
                   help=f"image backbone (default: efficientnet_lite0 pretrained, resnet18 with "
                        f"--no-pretrained): {ARCH_CHOICES}")
    p.add_argument("--workers", type=whole(0, max_workers()), default=2)
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="the backbone's ImageNet weights (efficientnet_lite0's install with pip; "
                        "a ResNet's come from torch's cache); --no-pretrained: random weights")
    p.add_argument("--frozen-image", action=argparse.BooleanOptionalAction, default=None,
                   help="train on the backbone's frozen features (prepare_image_features.py); "
                        "default: frozen when pretrained, fine-tuned from random weights")
    p.add_argument("--negatives", default="release",
                   help="the trainer's --negatives for both runs; 'release,clean' trains and "
                        "evaluates both objectives side by side (four columns)")
    args = p.parse_args()
    args.negatives = [n.strip() for n in args.negatives.split(",") if n.strip()]
    if not args.negatives or any(n not in NEGATIVES for n in args.negatives) \
            or len(set(args.negatives)) < len(args.negatives):
        p.error(f"--negatives {','.join(args.negatives)!r}: pass release, clean or release,clean")
    for key, value in {**DEFAULTS[args.data], **IMAGE[args.pretrained]}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.image_size is None:
        args.image_size = backbone(args.arch).input_size
    # A small corpus has fewer repeats of each word: with the default --min-count a few
    # dozen items leave the queries' words out of the vocabulary.
    args.min_count = max(2, min(args.min_count, args.items // 50))
    args.run_dir = Path(args.run_dir or ROOT / "runs" / "demo" / args.data)
    check_writable(args.run_dir, folder=True, fix="pass another --run-dir")
    return args


class Steps:
    """Runs each step's command unless it already ran with the same settings."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "demo_steps.json"
        self.done = read_json(self.path, "remove it: every step runs again") if self.path.exists() else {}
        self.changed = False   # once a step runs, every later step runs too: its inputs changed

    def run(self, name: str, cmd: list[str], output: Path | None = None, always: bool = False,
            inputs: str = "") -> None:
        key = " ".join(map(str, cmd)) + inputs
        if not (always or self.changed) and self.done.get(name) == key and (output is None or output.exists()):
            print(f"== {name}: already done with these settings, reusing it")
            return
        print(f"== {name}: {key}", flush=True)
        t = time.time()
        # Unbuffered, so the child's lines (one per training epoch) interleave with ours in a log.
        code = signals.run_child([sys.executable, *map(str, cmd)], cwd=ROOT,
                                 env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if code != 0:
            sys.exit(f"demo stopped: step {name} failed (exit {code})")
        print(f"   ({time.time() - t:.0f}s)")
        # An always-run step (the evaluation) changes nothing later steps read from disk.
        self.changed = self.changed or not always
        self.done[name] = key
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.done, indent=1) + "\n")


def build_data(args: argparse.Namespace, steps: Steps) -> Path:
    data_dir = args.run_dir / "data"
    manifest = data_dir / "manifest.jsonl"
    if args.data == "synthetic":
        steps.run("dataset", ["-m", "demo.build_synthetic", "--out", data_dir, "--items", args.items,
                              "--image-size", max(args.image_size, 32)], manifest)
        return manifest
    cmd = ["-m", "demo.build_openclipart", "--out", data_dir, "--cache", ROOT / "runs" / "openclipart-cache",
           "--limit", args.items, "--workers", args.workers]
    print(f"== dataset: {' '.join(map(str, cmd))}", flush=True)
    if signals.run_child([sys.executable, *map(str, cmd)], cwd=ROOT) != 0:
        sys.exit("demo stopped: the Open Clip Art packages could not be fetched or built; "
                 "run the demo on the built-in synthetic data instead: make demo DATA=synthetic")
    return manifest


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)   # our lines and the steps' stay in order in a log
    args = parse_args()
    t0 = time.time()
    steps = Steps(args.run_dir)
    manifest = build_data(args, steps)
    work = args.run_dir / "work"
    common = ["--dataset", manifest, "--work-dir", work, "--workers", args.workers,
              "--max-sentences", args.max_sentences]
    # --deterministic: one Doc2Vec thread and a one-thread HNSW build, so that a rerun on the same
    # machine gives the same table (gensim's threads race); another CPU may still round otherwise.
    steps.run("doc2vec", ["train_doc2vec.py", *common, "--min-count", args.min_count, "--deterministic"],
              work / "doc2vec_model.gensim", inputs=f" (data {manifest.stat().st_mtime_ns})")
    steps.run("vectors", ["extract_doc2vec_vectors.py", *common], work / "doc2vec_features.pickle")
    # k from the corpus's size: a small --items has fewer than K training documents.
    k = min(K, len(load_pickle(work, DOC2VEC_FEATURES)["ids"]))
    steps.run("neighbours", ["knn_document_features.py", *common, "--k", k, "--deterministic"],
              work / "document_feats_knn.pickle")
    image = ["--arch", args.arch, "--image-size", args.image_size,
             *([] if args.pretrained else ["--no-pretrained"])]
    steps.run("image cache", ["prepare_image_cache.py", *common, *image[:4]],
              cache_folder(work, args.image_size, backbone(args.arch).preprocessing.resize) / "index.json")
    if args.frozen_image:
        steps.run("image features", ["prepare_image_features.py", *common, *image],
                  features_folder(work, args.arch, args.image_size) / "record.json")
    fingerprints = {"doc2vec vectors": vectors_fingerprint(work / "doc2vec_features.pickle"),
                    "neighbour table": knn_fingerprint(work / "document_feats_knn.pickle")}
    for name in fingerprints:
        print(f"   fingerprint of the {name}: {fingerprints[name]}")
    # Stated, never inferred from what torch's cache happens to hold: the table depends on it.
    image_weights = (f"ImageNet weights ({backbone(args.arch).weights.where()})" if args.pretrained
                     else "random weights (--no-pretrained)") + \
        (f", frozen features at {args.image_size}px" if args.frozen_image else "")
    print(f"== image branch: {args.arch} from {image_weights}")
    checkpoints = []
    for negatives in args.negatives:
        for name, weights in RUNS.items():
            # release keeps the authors' folder name (and the step names of earlier demos).
            other = "" if negatives == "release" else negatives
            folder = Weights(*map(float, weights)).run_name() + (f"_{other}" if other else "")
            best = work / "models" / folder / "best.pt"
            label = f"train {name} ({' '.join(weights)})" + (f" {other}" if other else "")
            steps.run(label, ["train_cross_modal_retrieval_model.py", *weights, *common, *image,
                              "--epochs", args.epochs, "--batch-size", args.batch_size, "--lr", args.lr,
                              *(["--frozen-image"] if args.frozen_image else []),
                              "--negatives", negatives, "--run-name", folder,
                              "--overwrite"], best)   # a step that reruns replaces its earlier run
            checkpoints.append(best)
            fingerprints[f"{folder}/best.pt"] = checkpoint_fingerprint(best)
            print(f"   fingerprint of {folder}/best.pt: {fingerprints[folder + '/best.pt']}")
    steps.run("evaluate", ["evaluate_retrieval.py", *sum((["--checkpoint", c] for c in checkpoints), []),
                           "--workers", args.workers, "--out", args.run_dir / "metrics.json"], always=True)
    print("   (a single run of each, one seed: the difference between the columns includes the "
          "seed's noise; `make experiment` repeats them over seeds with error bars)")
    page = args.run_dir / "retrieval"
    # The paper's weights under the first objective.
    steps.run("retrieve", ["retrieve.py", "--checkpoint", checkpoints[1], "--out", page,
                           *sum((["--query", q] for q in QUERIES[args.data]), [])], page / "index.html")
    # Same machine and packages: the same fingerprints. Another CPU may round differently; the
    # first fingerprint that differs names the step where the two machines parted.
    print(f"fingerprints ({args.arch} from {image_weights}):")
    for name, value in fingerprints.items():
        print(f"  {value}  {name}")
    (args.run_dir / "fingerprints.json").write_text(json.dumps(fingerprints, indent=1) + "\n")
    print(f"demo finished in {time.time() - t0:.0f}s; retrieval page: {page / 'index.html'}")


if __name__ == "__main__":
    main()

"""The demo's comparison with error bars (`make experiment`, after `make demo`).

Tune cheap, train once, with tune_weights.py on the data and the neighbourhoods `make demo`
built (runs/demo/DATA/): the weight triples x 10 seeds x both objectives trained on frozen image
features (prepare_image_features.py, run first), the choice made on validation, then the chosen
triple, the baseline 1 0 0 and the paper's weights trained fine-tuned with 3 seeds, and both
compared with the baseline on test. Sized for a 2-core CPU: the frozen runs on ImageNet
EfficientNet-Lite0 features at its own 224 px for 5 epochs (its weights install with pip), the
fine-tuned ones at 64 px for 2 epochs (what keeps the whole within an hour), two runs at a time
with one thread each; --no-pretrained runs the earlier configuration, a random-weight ResNet-18
at 32 px for both. Run again, it reuses every finished run.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import signals

ROOT = Path(__file__).resolve().parent.parent
# The baseline, the paper's weights, and each constraint alone: which of them moves what.
GRID = "1 0 0; 1 0.3 0.2; 1 0.3 0; 1 0 0.2"
DEFAULTS = {
    "synthetic": dict(epochs=6, max_sentences=0),
    "openclipart": dict(epochs=6, max_sentences=2),
}
# The image side, pretrained or not. On one core EfficientNet-Lite0 takes 22 ms an image at 64 px
# and 250 at 224 to fine-tune (forward and backward), and a frozen run's evaluations embed every
# image through it at 224 (about as long as its training): 5 frozen epochs, and fine-tuning at
# 64 px for 2 epochs, are what fit the hour.
IMAGE = {True: dict(arch="efficientnet_lite0", image_size=224, epochs=5, finetune_size=64,
                    finetune_epochs=2),
         False: dict(arch="resnet18", image_size=32)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", choices=sorted(DEFAULTS), default="openclipart")
    p.add_argument("--run-dir", default=None, help="the demo's folder (default: runs/demo/DATA)")
    p.add_argument("--grid", default=GRID)
    p.add_argument("--seeds", type=int, default=10, help="of the frozen sweep")
    p.add_argument("--finetune-seeds", type=int, default=3,
                   help="tune_weights.py --finetune-chosen: seeds of the fine-tuned runs (0: none)")
    p.add_argument("--also-test", default="1 0.3 0.2",
                   help="tune_weights.py --also-test: the paper's weights are compared with the "
                        "baseline on test whichever triple validation chooses ('' for none)")
    p.add_argument("--objectives", default="release,clean",
                   help="--negatives values; 'none' for a trainer without the flag")
    p.add_argument("--fine-tuned-only", action="store_true",
                   help="every run fine-tuned, no frozen features (the earlier configuration)")
    p.add_argument("--arch", default=None,
                   help="default: efficientnet_lite0 pretrained, resnet18 with --no-pretrained")
    p.add_argument("--image-size", type=int, default=None,
                   help="of the frozen features (default: 224 pretrained, 32 from random weights)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--finetune-size", type=int, default=None,
                   help="image size of the fine-tuned runs (default: 64 pretrained, else --image-size)")
    p.add_argument("--finetune-epochs", type=int, default=None,
                   help="epochs of the fine-tuned runs (default: 2 pretrained, else --epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3, help="as the demo: only a few epochs")
    p.add_argument("--devices", default="cpu,cpu",
                   help="two CPU runs at a time, one thread each, use 2 cores better than one")
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="the backbone's ImageNet weights; --no-pretrained: random weights")
    args = p.parse_args(argv)
    for key, value in {**DEFAULTS[args.data], **IMAGE[args.pretrained]}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.finetune_size = args.finetune_size or args.image_size
    args.finetune_epochs = args.finetune_epochs or args.epochs
    if args.fine_tuned_only:
        args.finetune_seeds = 0
    args.run_dir = Path(args.run_dir or ROOT / "runs" / "demo" / args.data).resolve()
    return args


def commands(args: argparse.Namespace, manifest: Path, work: Path) -> list[list[str]]:
    """The scripts the experiment runs, in order: the image caches, the frozen features, the
    sweep (whose fine-tuned runs take --finetune-args)."""
    # Absolute paths: the image cache knows its images by the paths it was built with.
    common = ["--dataset", str(manifest), "--work-dir", str(work), "--max-sentences",
              str(args.max_sentences)]
    weights = [] if args.pretrained else ["--no-pretrained"]
    sizes = [args.finetune_size] if args.fine_tuned_only else \
        list(dict.fromkeys([args.image_size, args.finetune_size]))
    # One token: a value with spaces is never taken for a flag of tune_weights.py's own.
    finetune = [f"--finetune-args=--image-size {args.finetune_size} --epochs {args.finetune_epochs}"] \
        if (args.finetune_size, args.finetune_epochs) != (args.image_size, args.epochs) else []
    size, epochs = ((args.finetune_size, args.finetune_epochs) if args.fine_tuned_only
                    else (args.image_size, args.epochs))
    return [
        *(["prepare_image_cache.py", *common, "--arch", args.arch, "--image-size", str(side),
           "--workers", "2"] for side in sizes),
        *([] if args.fine_tuned_only else [[
            "prepare_image_features.py", *common, "--arch", args.arch, *weights,
            "--image-size", str(args.image_size), "--workers", "2"]]),
        ["tune_weights.py", "--grid", args.grid, "--seeds", str(args.seeds), "--devices",
         args.devices, "--out", str(args.run_dir / "experiment"), "--bootstrap", str(args.bootstrap),
         *(["--also-test", args.also_test] if args.also_test.strip() else []),
         *(["--finetune-chosen", str(args.finetune_seeds)] if args.finetune_seeds else []),
         *(finetune if args.finetune_seeds else []),
         *([] if args.objectives == "none" else ["--objectives", args.objectives]),
         "--eval-workers", "0", "--",
         *common, "--arch", args.arch, *weights,
         "--image-size", str(size), "--epochs", str(epochs), "--batch-size", str(args.batch_size),
         "--lr", str(args.lr),
         "--workers", "0", "--image-cache", "require",
         *([] if args.fine_tuned_only else ["--frozen-image"])],
    ]


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)
    args = parse_args()
    t0 = time.time()
    manifest = args.run_dir / "data" / "manifest.jsonl"
    work = args.run_dir / "work"
    if not manifest.is_file() or not (work / "document_feats_knn.pickle").is_file():
        sys.exit(f"error: {args.run_dir} lacks the demo's data or neighbourhoods: run "
                 f"make demo{'' if args.data == 'openclipart' else ' DATA=' + args.data} first")
    steps = commands(args, manifest, work)
    for cmd in steps:
        print(f"== {' '.join(cmd)}", flush=True)
        code = signals.run_child([sys.executable, *cmd], cwd=ROOT)
        if code != 0:
            sys.exit(f"experiment stopped: {cmd[0]} failed (exit {code})")
    print(f"experiment finished in {time.time() - t0:.0f}s; figures in {args.run_dir / 'experiment'}")


if __name__ == "__main__":
    from cli import run_main   # a stop (Ctrl-C, SIGTERM) stops the sweep and its runs too
    run_main(main)

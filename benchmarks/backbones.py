"""Image backbones side by side, in one run: feature extraction and training step time.

    python benchmarks/backbones.py [--archs resnet18,resnet50,efficientnet_lite0] [--image-size 224]
        [--images 256] [--steps 12] [--device cpu|cuda] [--out FILE.json]

For each arch, at the same image size, on the same data:
  extract     prepare_image_features.py's own loop (models.features.compute_features) over
              --images random images: images per second, each image and its mirror counted as
              one image, as the script counts them
  fine-tuned  the trainer's step on batches already on the device (benchmarks/train_throughput.py's
              "ceiling": the whole model, the loss and the optimizer)
  frozen      --frozen-image's step on the same batches' stored features (its "frozen")
On CUDA the steps run under bf16 autocast with channels_last, as the trainer (timm models too);
feature extraction runs as prepare_image_features.py does, in fp32. Random weights throughout:
speed does not depend on them. Nothing here is a test: it prints figures.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

from benchmarks import train_throughput  # noqa: E402
from cli import HelpFormatter  # noqa: E402
from common.devices import pick_device  # noqa: E402
from models.backbones import backbone  # noqa: E402
from models.features import compute_features  # noqa: E402


def extract_rate(arch: str, size: int, n: int, batch_size: int, device: torch.device) -> float:
    """Images (with their mirrors) per second through compute_features, after one warm-up batch
    through the same network."""
    entry = backbone(arch)
    net = entry.build().to(device).eval()
    images = np.random.default_rng(0).integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    # What compute_features reads of an image cache: its folder (images.npy), size and bad rows.
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        np.save(Path(tmp) / "images.npy", images)
        out = np.zeros((n, 2, entry.feature_dim), np.float16)
        warm = torch.from_numpy(images[:batch_size]).to(device)
        net(entry.preprocessing.normalize(warm))
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        compute_features(net, entry.preprocessing, SimpleNamespace(folder=Path(tmp), size=size, bad=(), row_of={}), out,
                         device, batch_size, progress=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--archs", default="resnet18,resnet50,efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--images", type=int, default=256, help="extracted, and generated for the steps")
    p.add_argument("--batch-size", type=int, default=32, help="of the steps and the extraction")
    p.add_argument("--steps", type=int, default=12, help="timed steps of each setup")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="None: cuda when present")
    p.add_argument("--data-dir", default="runs/bench/backbones_data", help="generated dataset (reused)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    results: dict = {"image_size": args.image_size, "device": str(device), "archs": {}}
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        print(f"== {arch} at {args.image_size}px on {device}", flush=True)
        rate = extract_rate(arch, args.image_size, args.images, args.batch_size, device)
        steps = train_throughput.main([
            "--arch", arch, "--image-size", str(args.image_size), "--images", str(args.images),
            "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup",
            str(args.warmup), "--rounds", "2", "--setups", "ceiling,frozen", "--embed-images", "0",
            "--data-dir", args.data_dir, "--work-dir", f"{args.data_dir}_work",
            *(["--device", args.device] if args.device else [])])
        s = steps["setups"]
        results["archs"][arch] = {
            "extract_images_per_s": rate, "finetuned_ms_per_step": s["ceiling"]["ms_per_step"],
            "frozen_ms_per_step": s["frozen"]["ms_per_step"], "batch_size": args.batch_size,
            "feature_dim": backbone(arch).feature_dim, "settings": steps["settings"]}
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return results


def table(results: dict) -> str:
    lines = [f"image size {results['image_size']}, {results['device']}",
             "| arch | features | extraction, images/s | fine-tuned step, ms | frozen step, ms | fine-tuned / frozen |",
             "|---|---|---|---|---|---|"]
    for arch, r in results["archs"].items():
        lines.append(f"| {arch} | {r['feature_dim']} | {r['extract_images_per_s']:,.1f} | "
                     f"{r['finetuned_ms_per_step']:,.0f} | {r['frozen_ms_per_step']:,.1f} | "
                     f"{r['finetuned_ms_per_step'] / r['frozen_ms_per_step']:,.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

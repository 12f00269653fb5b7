"""Generate the synthetic demo dataset (topics in the texts, unlike-looking motifs in the images)
-> OUT/manifest.jsonl and OUT/images/. Reuses an existing build made with the same flags."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import config
from common.errors import InputError
from common.places import own_folder
from common.records import read_json
from demo.synthetic import generate_synthetic

STAMP = "synthetic_params.json"


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(Path(config.DATASET).parent), help="output folder")
    p.add_argument("--items", type=int, default=600)
    p.add_argument("--topics", type=int, default=6)
    p.add_argument("--motifs", type=int, default=3, help="visually different image motifs per topic")
    p.add_argument("--image-size", type=int, default=64, help="side of the square images in pixels")
    p.add_argument("--texts-per-item", type=int, default=1)
    p.add_argument("--sentences", type=int, default=3, help="sentences per text")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--format", choices=("png", "jpg"), default="png", help="image file format")
    args = p.parse_args(argv)

    params = dict(n_items=args.items, n_topics=args.topics, motifs_per_topic=args.motifs,
                  image_size=args.image_size, texts_per_item=args.texts_per_item,
                  sentences_per_text=args.sentences, val_fraction=args.val_fraction,
                  test_fraction=args.test_fraction, seed=args.seed, image_format=args.format)
    out = Path(args.out)
    try:   # its manifest.jsonl and images/ would replace a user's own
        own_folder(out, "demo.build_synthetic", "--out", earlier=(STAMP,), make=False)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    manifest, stamp = out / "manifest.jsonl", out / STAMP
    if manifest.exists() and stamp.exists() and read_json(stamp, "remove it: the dataset is built again") == params:
        print("synthetic dataset already built with these settings: reusing it")
        print(manifest)
        return manifest
    stamp.unlink(missing_ok=True)   # an interrupted rebuild must not pass for a finished one
    t = time.time()
    try:
        manifest = generate_synthetic(out, **params)
    except ValueError as e:
        p.error(str(e))
    stamp.write_text(json.dumps(params, indent=1) + "\n")
    own_folder(out, "demo.build_synthetic", "--out", earlier=(STAMP,))   # the marker
    print(f"generated {args.items} items ({args.topics} topics x {args.motifs} motifs, "
          f"{args.image_size}px) in {time.time() - t:.1f}s")
    print(manifest)
    return manifest


if __name__ == "__main__":
    main()

"""Build the Open Clip Art dataset (public domain clip art; text = each drawing's title, keywords
and description) -> OUT/manifest.jsonl. Downloads the Debian packages openclipart-png and
openclipart-svg with apt-get (about 156 MB) unless --root points at them unpacked.
Reuses a finished build made with the same flags."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.errors import InputError
import config
from common.places import own_folder
from demo.openclipart import STAMP, build_openclipart


def main(argv: list[str] | None = None) -> Path:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default="runs/openclipart", help="output folder (manifest.jsonl)")
    p.add_argument("--cache", default=None,
                   help="downloaded packages and resized pictures (default: OUT/cache)")
    p.add_argument("--root", default=None,
                   help="an unpacked usr/share/openclipart folder to use instead of downloading")
    p.add_argument("--max-side", type=int, default=256, help="longest side of the resized pictures")
    p.add_argument("--max-pixels", type=int, default=40_000_000,
                   help="larger pictures are skipped (decoding needs ~12 bytes a pixel per worker)")
    p.add_argument("--max-shared-text", type=int, default=20,
                   help="a text shared verbatim by more pictures than this is left out as boilerplate")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--workers", type=int, default=config.WORKERS, help="processes resizing pictures")
    p.add_argument("--limit", type=int, default=None, help="take only N items (seeded), for quick runs")
    args = p.parse_args(argv)
    try:
        own_folder(args.out, "demo.build_openclipart", "--out", earlier=(STAMP,))
        report = build_openclipart(Path(args.out), Path(args.root) if args.root else None,
                                   Path(args.cache) if args.cache else None, args.max_side, args.seed,
                                   args.workers, args.limit, args.max_pixels, args.max_shared_text)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except ValueError as e:
        p.error(str(e))
    if report.reused:
        print("Open Clip Art dataset already built with these settings: reusing it")
    print("\n".join(report.lines()))
    print(report.manifest)
    return Path(report.manifest)


if __name__ == "__main__":
    main()

"""Step 4 (optional, before training): decode and resize every image of the dataset once.

    python prepare_image_cache.py --dataset DATA --work-dir WORK [--image-size 224] [--arch A]
        [--workers N]

Writes WORK/image_cache/<size>/ (images.npy, [N, 3, size, size] uint8, and index.json), which
train_cross_modal_retrieval_model.py and the evaluation then read instead of decoding the JPEGs
at every step: on a fast GPU, PIL decoding is what limits the training speed otherwise. It takes
3 * size * size bytes per image (150 KB at 224px). Every split is cached. Run it again after the
dataset changes: a cache whose images changed (size or mtime) is rebuilt, an up-to-date one is
reused. Missing or unreadable images are reported as the trainer reports them. Images are
resized by the rule of --arch's backbone (pass the trainer's --arch): the default squash for the
ResNets; a backbone that crops (timm's rule) gets its own folder, <size>-<rule>.
"""
import time
from pathlib import Path

from cli import parser, real, run_main, whole
from common.workdir import check_writable
import config
from data.datasets.load import load_items
from data.images.cache import CACHE_DIR, ensure_cache
from data.images.read import report_bad_images
from models.backbones import CHOICES as ARCH_CHOICES, arch_name, backbone


def main() -> None:
    p = parser(__doc__)
    g = p.add_argument_group("images (config.py)")
    g.add_argument("--image-size", type=whole(1), default=config.IMAGE_SIZE,
                   help="side of the square images, as the trainer's --image-size")
    g.add_argument("--arch", type=arch_name, default=config.ARCH, metavar="ARCH",
                   help=f"the trainer's --arch ({ARCH_CHOICES}): its backbone's resize rule is "
                        "the cache's")
    g.add_argument("--max-bad-images", type=real(0, 1), default=config.MAX_BAD_IMAGES,
                   help="share of unreadable images tolerated before this exits with an error")
    args = p.parse_args()
    if args.image_size < 1:
        p.error(f"--image-size {args.image_size}: pass 1 or more")

    check_writable(Path(args.work_dir) / CACHE_DIR, folder=True)
    items = load_items(args)
    paths = [it.image for it in items]
    t = time.time()
    resize = backbone(args.arch).preprocessing.resize
    cache, what = ensure_cache(args.work_dir, paths, args.image_size, args.workers, resize=resize)
    print(f"{what} in {time.time() - t:.1f}s")
    # Only after the cache is complete, so that the bad images stay recorded in it.
    report_bad_images(cache.bad, len(cache.paths), args.max_bad_images, "dataset")


if __name__ == "__main__":
    run_main(main)

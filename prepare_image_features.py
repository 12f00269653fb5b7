"""Step 4b (for --frozen-image training): the image backbone run once over every image.

    python prepare_image_features.py --dataset DATA --work-dir WORK [--arch resnet50]
        [--image-size 224] [--no-pretrained | --image-weights FILE] [--batch-size 64]

Runs the backbone without its head, in eval mode, over every image of the dataset and its mirror
(the trainer's only augmentation), at --image-size, from the image cache (built or reused here,
as prepare_image_cache.py does). --arch, --no-pretrained / --image-weights and --seed follow the
trainer's rules: pass the flags the training will get. Writes WORK/image_features/<arch>_<size>/
(features.npy, float16 [N, 2, F]; backbone.pt; record.json), which
train_cross_modal_retrieval_model.py --frozen-image reads. Run it again after the images change:
the trainer refuses features made from other images or with other flags. Up-to-date features
(same images, arch, size and weights) are reused.
"""
import time
from pathlib import Path

import torch

from cli import check_flags, parser, real, run_main, whole
from common.errors import InputError
from common.workdir import check_writable
import config
from data.datasets.load import load_items
from data.datasets.provenance import dataset_hash, dataset_root
from data.images.cache import CACHE_DIR, ensure_cache
from data.images.read import report_bad_images
from models.backbones import CHOICES as ARCH_CHOICES, arch_name, backbone
from models.features import FEATURES_DIR, FeatureRequest, build_features, check_record, read_record
from models.precision import pick_device


def main() -> None:
    p = parser(__doc__)
    g = p.add_argument_group("backbone (config.py; as the trainer's)")
    g.add_argument("--arch", type=arch_name, default=config.ARCH, metavar="ARCH",
                   help=f"image backbone: {ARCH_CHOICES}")
    g.add_argument("--no-pretrained", action="store_true", help="random weights drawn under --seed")
    g.add_argument("--image-weights", default=None, help="a local state dict for the backbone")
    g.add_argument("--image-size", type=whole(1), default=config.IMAGE_SIZE)
    g.add_argument("--batch-size", type=whole(1), default=64, help="images per forward pass")
    g.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when present")
    g.add_argument("--max-bad-images", type=real(0, 1), default=config.MAX_BAD_IMAGES,
                   help="share of unreadable images tolerated before this exits with an error")
    args = p.parse_args()
    check_flags(p, args)
    if args.no_pretrained and args.image_weights:
        p.error("--no-pretrained and --image-weights: pass one")

    check_writable(Path(args.work_dir) / CACHE_DIR, folder=True)
    check_writable(Path(args.work_dir) / FEATURES_DIR, folder=True)
    items = load_items(args)
    resize = backbone(args.arch).preprocessing.resize   # the cache the features are made from
    cache, what = ensure_cache(args.work_dir, [it.image for it in items], args.image_size,
                               args.workers, resize=resize)
    print(what)
    report_bad_images(cache.bad, len(cache.paths), args.max_bad_images, "dataset")
    request = FeatureRequest.from_args(args)
    image = request.image
    folder = request.folder
    record = read_record(folder)
    if record is not None and record.get("image_cache") == cache.fingerprint:
        try:
            check_record(record, folder, request, cache.paths)
        except InputError as e:
            print(f"{e}".split(": run prepare_image_features.py")[0] + ": making them again")
        else:
            print(f"image features {folder} are up to date ({len(cache.paths)} images, "
                  f"{image.arch} at {image.image_size}px): reused")
            return
    device = pick_device(args.device)
    t = time.time()
    folder = build_features(request, cache, dataset_hash(items, dataset_root(args)), device,
                            args.batch_size)
    print(f"wrote {folder} ({len(cache.paths)} images and their mirrors, {image.arch} at "
          f"{image.image_size}px, on {device.type}) in {time.time() - t:.1f}s")


if __name__ == "__main__":
    run_main(main)

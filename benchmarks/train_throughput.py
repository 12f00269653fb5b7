"""Training speed: the trainer's data path against its ceiling and against the authors' setup.

    python benchmarks/train_throughput.py [--images 20000] [--out RESULTS.json]

Builds (or reuses) a dataset of generated 500x375 JPEGs with texts and the image cache of it
(the trainer's own cache code, timed: that is PIL's decode + resize rate on --workers processes),
then times in one process, each on the same data:
  ceiling  the trainer's step (model, loss, optimizer) on batches whose images and tokens are
           already on the device: the speed no data path can beat
  trainer  the trainer's real path: image cache -> PairDataset -> DataLoader workers -> pinned
           memory -> the same step (batch 128, bf16 + channels_last on CUDA)
  authors  the authors' configuration: fp32, batch 32, PIL decoding of the full JPEGs of both
           images of every item at every step, no cache
  frozen   --frozen-image's step on the same batches, their images replaced by the backbone's
           stored float16 features (and mirrors): only the image head and the text branch run;
           timed interleaved with the ceiling (rounds of each in turn), the ratio from one run,
           and its time split into the text branch (one packed GRU call over the batch's texts,
           its neighbours' and its random texts: forward and backward, timed in the same
           rounds) and the rest
  text     (opt-in) the trainer's step with the GRU, a transformer fine-tuned (--text-encoder hf,
           --text-model, --text-lr) and one kept frozen (--freeze-text), the image side frozen as
           above and the same for all three, timed in interleaved rounds
           (benchmarks/train_text_branch.py)
and the evaluation's image embedding (evaluation.embed.embed_images). The text side is not what
is measured: tokens come from splitting the generated texts, word vectors and Doc2Vec
neighbours are random. Goals (issue 6): trainer/ceiling >= 0.9, trainer/authors >= 3; (issue
16) ceiling/frozen step time >= 10 with ResNet-50 at 224px on a CPU, >= 4 at the demo's settings.
--setups picks which of them run (e.g. ceiling,frozen; text only when named).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import config  # noqa: E402
from benchmarks import train_text_branch  # noqa: E402
from benchmarks.common import report, save, setup, sync  # noqa: E402
from cli import HelpFormatter  # noqa: E402
from data.datasets.items import documents  # noqa: E402
from data.datasets.readers import load_dataset  # noqa: E402
from demo.synthetic import FILLER_WORDS, TOPIC_WORDS, make_text  # noqa: E402
from evaluation.embed import embed_images, prepare_model  # noqa: E402
from losses import CrossModalObjective, LossConfig, Weights  # noqa: E402
from models import ModelConfig, Precision, Vocabulary, build_model  # noqa: E402
from training.data import PairDataset, epoch_order, make_loader, with_random_texts  # noqa: E402
from data.images.cache import cached_reader, ensure_cache, training_images  # noqa: E402
from data.images.read import ImageFiles  # noqa: E402
from models.backbones import backbone  # noqa: E402
from models.image_source import ImageSource  # noqa: E402
from training.neighbors import NeighborSampler  # noqa: E402
from training.step import StepLog, train_step  # noqa: E402

SETUPS = ("ceiling", "trainer", "authors", "frozen", "text")
DEFAULT_SETUPS = SETUPS[:4]   # text loads a transformer: only when named
PREFETCH = 4        # batches each loader worker keeps ready (training.data.make_loader)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data-dir", default="runs/bench/train_data", help="generated dataset (reused)")
    p.add_argument("--work-dir", default="runs/bench/train_work", help="where the image cache goes")
    p.add_argument("--images", type=int, default=20_000, help="generated JPEGs, one item each")
    p.add_argument("--width", type=int, default=500, help="of the JPEGs, in pixels")
    p.add_argument("--height", type=int, default=375, help="of the JPEGs, in pixels")
    p.add_argument("--distinct", type=int, default=300, help="distinct pictures, re-encoded with noise")
    p.add_argument("--sentences", type=int, default=2,
                   help="of each generated text, 6 to 10 words each (1: about the length of the "
                        "demo's captions, which the GRU's share of a step depends on)")
    p.add_argument("--arch", default="resnet50", help="image encoder")
    p.add_argument("--image-size", type=int, default=224, help="image side fed to the model")
    p.add_argument("--embed-dim", type=int, default=config.EMBED_DIM, help="joint space dimension")
    p.add_argument("--gru-hidden", type=int, default=config.GRU_HIDDEN, help="text encoder width")
    p.add_argument("--batch-size", type=int, default=128,
                   help="of the ceiling, the trainer and the embedding")
    p.add_argument("--authors-batch-size", type=int, default=config.BATCH_SIZE, help="of the authors' setup")
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="of the ceiling and the trainer on CUDA (the authors' setup runs fp32)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="loader (and cache, dataset) worker processes, the same for every setup")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (plus the loader's queue)")
    p.add_argument("--steps", type=int, default=60, help="timed steps of each setup")
    p.add_argument("--embed-images", type=int, default=8192, help="images the evaluation embeds (0: skip)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="None: cuda when present")
    p.add_argument("--seed", type=int, default=0, help="of the generated data and the training")
    p.add_argument("--out", default=None, help="write the results as JSON here and as markdown beside")
    p.add_argument("--setups", default=",".join(DEFAULT_SETUPS), help="which setups run, of " + ",".join(SETUPS))
    p.add_argument("--text-model", default=config.TEXT_MODEL,
                   help="text: the transformer (minilm, or a Hugging Face model folder)")
    p.add_argument("--text-lr", type=float, default=config.TEXT_LR, help="text: the fine-tuned transformer's LR")
    p.add_argument("--rounds", type=int, default=3, help="ceiling/frozen alternations (--steps over all)")
    args = p.parse_args(argv)
    args.setups = [x.strip() for x in args.setups.split(",") if x.strip()]
    unknown = [x for x in args.setups if x not in SETUPS]
    if unknown or not args.setups:
        p.error(f"--setups: {','.join(unknown) or '(empty)'}: choose from {','.join(SETUPS)}")
    if "frozen" in args.setups and "ceiling" not in args.setups:
        p.error("--setups frozen is timed against the ceiling: add ceiling")
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    args.rounds = min(args.rounds, args.steps)
    for name in ("images", "batch_size", "authors_batch_size", "steps", "distinct", "sentences"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.images < 2 * args.batch_size:
        p.error(f"--images {args.images}: pass at least twice --batch-size")
    return args


# --- the dataset -----------------------------------------------------------------------------

def _picture(index: int, width: int, height: int, seed: int) -> np.ndarray:
    """A smooth random colour field with a few shapes: compresses like an ordinary photo."""
    rng = np.random.default_rng([seed, 1, index])
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    img = small.resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(6):
        x, y = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(10, max(11, min(width, height) // 3)))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return np.asarray(img, dtype=np.int16)


def _write_jpegs(job: tuple[str, int, int, int, int, int, int]) -> int:
    folder, start, stop, width, height, distinct, seed = job
    for i in range(start, stop):
        noise = np.random.default_rng([seed, 2, i]).integers(-6, 7, (height, width, 3), dtype=np.int16)
        pixels = np.clip(_picture(i % distinct, width, height, seed) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(Path(folder) / f"{i:06d}.jpg", quality=90)
    return stop - start


def make_dataset(args: argparse.Namespace) -> Path:
    """manifest.jsonl + images/*.jpg under --data-dir; reused when made with the same flags."""
    folder = Path(args.data_dir)
    spec = {"images": args.images, "width": args.width, "height": args.height,
            "distinct": args.distinct, "seed": args.seed, "sentences": args.sentences}
    manifest, stamp = folder / "manifest.jsonl", folder / "spec.json"
    if manifest.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == spec:
        print(f"dataset: reusing {manifest} ({args.images} JPEGs)")
        return manifest
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    t = time.perf_counter()
    step = 256
    jobs = [(str(folder / "images"), s, min(s + step, args.images), args.width, args.height,
             args.distinct, args.seed) for s in range(0, args.images, step)]
    if args.workers > 1 and len(jobs) > 1:
        with mp.get_context("fork").Pool(args.workers) as pool:
            pool.map(_write_jpegs, jobs)
    else:
        list(map(_write_jpegs, jobs))
    topics = list(TOPIC_WORDS.values())
    with open(manifest, "w", encoding="utf-8") as f:
        for i in range(args.images):
            rng = random.Random(f"{args.seed}-{i}")
            text = make_text(rng, topics[i % len(topics)].split(), args.sentences)
            f.write(json.dumps({"id": f"{i:06d}", "image": f"images/{i:06d}.jpg", "texts": [text],
                                "split": "train"}) + "\n")
    stamp.write_text(json.dumps(spec))
    print(f"dataset: wrote {args.images} {args.width}x{args.height} JPEGs to {folder} "
          f"in {time.perf_counter() - t:.1f}s")
    return manifest


def text_words(items, doc) -> list[str]:
    """The words of a document's text, as the GRU reads them here."""
    return re.findall(r"[a-z]+", items[doc.item].texts[doc.text].lower())


def text_side(docs, items, seed: int, pool: int = config.NEIGHBOR_POOL):
    """Vocabulary, random word vectors, token ids and a random neighbour file the trainer's
    NeighborSampler accepts (the text side's speed is not what this measures)."""
    words = sorted(set(" ".join(TOPIC_WORDS.values()).split()) | set(FILLER_WORDS))
    vocab = Vocabulary(words)
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(words), config.VECTOR_SIZE)).astype(np.float32) * 0.1
    tokens = [vocab.encode(text_words(items, d), config.MAX_TOKENS) for d in docs]
    n = len(docs)
    others = (np.arange(n)[:, None] + rng.integers(1, n, (n, pool))) % n
    knn = {"ids": [d.id for d in docs],
           "neighbors": np.concatenate([np.arange(n)[:, None], others], axis=1).astype(np.int32),
           "distances": np.concatenate([np.zeros((n, 1)), np.sort(rng.uniform(0.1, 1, (n, pool)), 1)],
                                       axis=1).astype(np.float32)}
    return vocab, vectors, tokens, NeighborSampler(knn, docs, pool, source="random kNN")


# --- timing ----------------------------------------------------------------------------------

class _Discard:
    """A SummaryWriter that keeps nothing: StepLog still reads each step's scalars, as in training."""

    def add_scalar(self, *args) -> None:
        pass


def _batches(ds: PairDataset, batch_size: int, workers: int, seed: int, device: torch.device):
    """The trainer's loader, epoch after epoch (a new loader and order each, as the trainer)."""
    epoch = 0
    while True:
        order = epoch_order(len(ds), seed, epoch)
        if config.NEGATIVES == "release":   # the random training texts, as the trainer
            order = with_random_texts(order, len(ds), batch_size, [seed, epoch, 0, 13])
        yield from make_loader(ds, order, batch_size, workers, device.type == "cuda", drop_last=True)
        epoch += 1


def time_steps(batches, step, warmup: int, steps: int, device: torch.device) -> dict:
    for _ in range(warmup):
        step(next(batches))
    sync(device)
    t, items, images = time.perf_counter(), 0, 0
    for _ in range(steps):
        b = next(batches)
        step(b)
        items += len(b["image_ids"])
        images += len(b["images"])
    sync(device)
    seconds = time.perf_counter() - t
    return {"items_per_s": items / seconds, "images_per_s": images / seconds, "seconds": seconds,
            "steps": steps}


def interleaved(runs: dict, warmup: int, steps: int, rounds: int,
                device: torch.device) -> dict:
    """{name: timing} of each step function in `runs`, on its own list of batches, timed in
    `rounds` alternations so that a machine's drift (another process, the clock) hits all alike."""
    for name, (step, bs) in runs.items():
        for i in range(warmup):
            step(bs[i % len(bs)])
    totals = {name: [0.0, 0, 0] for name in runs}
    per = [steps // rounds + (r < steps % rounds) for r in range(rounds)]
    done = 0
    for n in per:
        for name, (step, bs) in runs.items():
            sync(device)
            t = time.perf_counter()
            for i in range(done, done + n):
                step(bs[i % len(bs)])
            sync(device)
            totals[name][0] += time.perf_counter() - t
            totals[name][1] += sum(len(bs[i % len(bs)]["image_ids"]) for i in range(done, done + n))
            totals[name][2] += sum(len(bs[i % len(bs)]["images"]) for i in range(done, done + n))
        done += n
    return {name: {"items_per_s": items / sec, "images_per_s": images / sec, "seconds": sec,
                   "steps": steps, "ms_per_step": 1000 * sec / steps}
            for name, (sec, items, images) in totals.items()}


@torch.no_grad()
def as_features(model, batch: dict, device: torch.device) -> dict:
    """The batch with its images replaced by what prepare_image_features.py stores for them:
    the backbone's float16 features of each image and its mirror."""
    backbone, normalize = model.image.backbone, model.image.entry.preprocessing.normalize
    was = backbone.training
    backbone.eval()
    x = batch["images"].to(device)
    feats = torch.stack([backbone(normalize(x)), backbone(normalize(x.flip(-1)))], 1).half()
    backbone.train(was)
    return {**batch, "images": feats}


def text_stepper(model, device: torch.device, precision: str):
    """The text branch alone on a batch's texts (one packed GRU call): forward and backward."""
    run = Precision.resolve(device, precision)

    def step(batch: dict) -> None:
        with run.autocast():
            out = model.text(batch["tokens"].to(device), batch["lengths"])
        out.float().sum().backward()
        model.zero_grad(set_to_none=True)
    return step


def new_model(args, vocab, vectors, device: torch.device, precision: str):
    shape = ModelConfig(args.arch, args.embed_dim, vectors.shape[1], args.gru_hidden, len(vocab))
    model = Precision.resolve(device, precision).prepare(build_model(shape, vectors))
    model.train()
    return model, torch.optim.Adam(model.parameters(), lr=config.LR, weight_decay=config.WEIGHT_DECAY)


def stepper(model, optimizer, device: torch.device, precision: str,
            images: ImageSource | None = None):
    # The paper's weights with config.py's objective (the release's negatives by default).
    objective = CrossModalObjective(LossConfig.for_training(
        weights=Weights(1.0, 0.3, 0.2), loss=config.LOSS, tan2_alpha=config.TAN2_ALPHA,
        margin=config.MARGIN, hardest_negative=config.HARDEST_NEGATIVE, negatives=config.NEGATIVES))
    run, log = Precision.resolve(device, precision), StepLog(_Discard())
    count = [0]

    def step(batch: dict) -> None:
        loss, parts = train_step(model, optimizer, batch, run, objective, images)
        count[0] += 1
        log.add(count[0], loss, parts, config.LR)
    return step


def on_device(batch: dict, device: torch.device) -> dict:
    """Images and tokens moved to the device; the small per-item index tensors stay as the loader
    gives them (train_step reads has_nb on the CPU)."""
    out = dict(batch)
    out["images"] = batch["images"].to(device)
    out["tokens"] = batch["tokens"].to(device)
    return out


def embed_rate(model, paths: list[str], args, device: torch.device) -> dict:
    """Images/s of the evaluation's embed_images, from the files and from the image cache."""
    model = prepare_model(model, device, args.precision)
    out = {}
    sources = {"files": None}
    read, _ = cached_reader(args.work_dir, paths, args.image_size,
                            backbone(args.arch).preprocessing.resize)
    if read is not None:
        sources["cache"] = read
    for name, read in sources.items():
        sync(device)
        t = time.perf_counter()
        embed_images(model, paths, args.image_size, device, batch_size=args.batch_size,
                     workers=args.workers, precision=args.precision, read=read)
        sync(device)
        out[name] = len(paths) / (time.perf_counter() - t)
    return out


# --- report ----------------------------------------------------------------------------------

def table(results: dict) -> str:
    r, s = results["setups"], results["settings"]
    prec = s["precision"] if s["device"].startswith("cuda") else "fp32 (CPU)"
    rows = [("ceiling", s["batch_size"], prec, "batches already on the device"),
            ("trainer", s["batch_size"], prec, f"image cache, {s['workers']} loader workers"),
            ("authors", s["authors_batch_size"], "fp32", f"PIL decoding of the JPEG files, {s['workers']} workers"),
            ("frozen", s["batch_size"], prec, "stored features, batches already on the device")]
    lines = ["| setup | batch | precision | images from | items/s | images/s | ms/step |",
             "|---|---|---|---|---|---|---|"]
    for name, batch, prec, source in rows:
        if name in r:
            ms = 1000 * r[name]["seconds"] / r[name]["steps"]
            lines.append(f"| {name} | {batch} | {prec} | {source} | {r[name]['items_per_s']:,.1f} | "
                         f"{r[name]['images_per_s']:,.1f} | {ms:,.1f} |")
    for name, rate in results.get("embedding", {}).items():
        lines.append(f"| evaluation embedding | {s['batch_size']} | {prec} | {name} | - | {rate:,.1f} |")
    lines.append("")
    for key, value in results["ratios"].items():
        lines.append(f"- {key}: {value:.2f}")
    if "frozen_split" in results:
        f = results["frozen_split"]
        lines.append(f"- a frozen step, {f['step_ms']:,.1f} ms: text branch forward + backward "
                     f"{f['text_ms']:,.1f} ms ({f['text_ms'] / f['step_ms']:.0%}), the rest (image "
                     f"head, objective, optimizer, input copies) {f['step_ms'] - f['text_ms']:,.1f} ms; "
                     f"mean text length {f['mean_tokens']:.1f} tokens, {f['texts_per_step']:.0f} texts per step")
    lines += train_text_branch.table_lines(results)
    if "cache_build_images_per_s" in results:
        lines.append(f"- image cache build (PIL decode + resize, {s['workers']} processes): "
                     f"{results['cache_build_images_per_s']:,.1f} images/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device, settings = setup(args)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # as the trainer
    torch.manual_seed(args.seed)
    manifest = make_dataset(args)
    items = load_dataset(str(manifest), None, None, None, args.seed, 0)
    paths = [it.image for it in items]
    results: dict = {"settings": settings, "setups": {}}

    t = time.perf_counter()
    resize = backbone(args.arch).preprocessing.resize   # the trainer's cache for this arch
    _, what = ensure_cache(args.work_dir, paths, args.image_size, args.workers, progress=False,
                           resize=resize)
    print(f"{what} in {time.perf_counter() - t:.1f}s")
    if what.startswith("wrote"):
        results["cache_build_images_per_s"] = len(paths) / (time.perf_counter() - t)
    read, bad, where = training_images(args.work_dir, paths, paths, args.image_size, "require",
                                       resize=resize)
    print(where)
    if bad:
        raise RuntimeError(f"{len(bad)} generated images could not be decoded (first: "
                           f"{next(iter(bad.items()))}): delete {args.data_dir} and run again")
    docs = documents(items, ["train"])
    vocab, vectors, tokens, sampler = text_side(docs, items, args.seed)
    image_ids = [d.item for d in docs]
    neighbors = sampler.sample(args.seed, 0)
    loader_warmup = args.warmup + max(args.workers, 1) * PREFETCH   # drain what workers queued early

    def show(name: str) -> None:
        r = results["setups"][name]
        print(f"{name}: {r['items_per_s']:,.1f} items/s, {r['images_per_s']:,.1f} images/s "
              f"({r['steps']} steps in {r['seconds']:.1f}s)", flush=True)
        save(results, args.out)

    model, optimizer = new_model(args, vocab, vectors, device, args.precision)
    step = stepper(model, optimizer, device, args.precision)
    cached = PairDataset(image_ids, tokens, read)
    cached.set_neighbors(neighbors)
    if "ceiling" in args.setups:
        loader = _batches(cached, args.batch_size, args.workers, args.seed, device)
        ready = [on_device(next(loader), device) for _ in range(4)]
        del loader
        runs = {"ceiling": (step, ready)}
        if "frozen" in args.setups:
            frozen_model, frozen_optimizer = new_model(args, vocab, vectors, device, args.precision)
            frozen_model.image.freeze_backbone()
            frozen_optimizer = torch.optim.Adam([p for p in frozen_model.parameters() if p.requires_grad],
                                                lr=config.LR, weight_decay=config.WEIGHT_DECAY)
            features = [as_features(frozen_model, b, device) for b in ready]
            stored = ImageSource.frozen(frozen_model.image.entry, args.image_size, None, {})
            runs["frozen"] = (stepper(frozen_model, frozen_optimizer, device, args.precision, stored),
                              features)
            runs["frozen text branch"] = (text_stepper(frozen_model, device, args.precision), features)
        results["setups"].update(interleaved(runs, args.warmup, args.steps, args.rounds, device))
        if "frozen" in args.setups:
            texts = torch.cat([b["lengths"] for b in ready]).float()
            results["frozen_split"] = {
                "step_ms": results["setups"]["frozen"]["ms_per_step"],
                "text_ms": results["setups"].pop("frozen text branch")["ms_per_step"],
                "mean_tokens": float(texts.mean()), "texts_per_step": len(texts) / len(ready)}
            del frozen_model, frozen_optimizer, features
        for name in runs:
            if name in results["setups"]:
                show(name)
    if "text" in args.setups:
        timing, results["text_branch"] = train_text_branch.compare(
            args, SimpleNamespace(batches=_batches, on_device=on_device, as_features=as_features,
                                  stepper=stepper, interleaved=interleaved), docs, lambda d: text_words(items, d), image_ids, read, neighbors,
            vocab, vectors, tokens, device)
        results["setups"].update(timing)
        for name in timing:
            show(name)
    if "trainer" in args.setups:
        results["setups"]["trainer"] = time_steps(
            _batches(cached, args.batch_size, args.workers, args.seed, device), step, loader_warmup,
            args.steps, device)
        show("trainer")

    if "authors" in args.setups:
        files = PairDataset(image_ids, tokens, ImageFiles(paths, args.image_size, resize))
        files.set_neighbors(neighbors)
        fp32_model, fp32_optimizer = new_model(args, vocab, vectors, device, "fp32")
        results["setups"]["authors"] = time_steps(
            _batches(files, args.authors_batch_size, args.workers, args.seed, device),
            stepper(fp32_model, fp32_optimizer, device, "fp32"), loader_warmup, args.steps, device)
        show("authors")
        del fp32_model, fp32_optimizer

    if args.embed_images:
        try:
            results["embedding"] = embed_rate(model, paths[:args.embed_images], args, device)
        except Exception as e:  # noqa: BLE001 - an extra figure: its failure must not lose the others
            results["embedding_error"] = f"{type(e).__name__}: {e}"
            print(f"evaluation embedding failed: {results['embedding_error']}", flush=True)
        else:
            print("evaluation embedding, images/s: " +
                  ", ".join(f"{k} {v:,.1f}" for k, v in results["embedding"].items()), flush=True)

    s = results["setups"]
    results["ratios"] = {}
    if {"trainer", "ceiling"} <= set(s):
        results["ratios"]["trainer / ceiling (goal >= 0.9)"] = s["trainer"]["items_per_s"] / s["ceiling"]["items_per_s"]
    if {"trainer", "authors"} <= set(s):
        results["ratios"]["trainer / authors (goal >= 3)"] = s["trainer"]["items_per_s"] / s["authors"]["items_per_s"]
    if {"frozen", "ceiling"} <= set(s):
        results["ratios"]["fine-tuned / frozen step time (goal >= 10 at 224px ResNet-50 on a CPU, "
                          ">= 4 at the demo's settings)"] = s["frozen"]["items_per_s"] / s["ceiling"]["items_per_s"]
    results["ratios"].update(train_text_branch.ratios(s))
    for name, rate in results.get("embedding", {}).items():
        if "trainer" in s:
            results["ratios"][f"evaluation embedding from {name} / trainer images (goal >= 1)"] = \
                rate / s["trainer"]["images_per_s"]
    report(results, table(results), args.out)
    return results


if __name__ == "__main__":
    main()

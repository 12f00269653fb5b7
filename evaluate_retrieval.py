"""Step 6: evaluate trained checkpoints on a split -> a table and metrics.json.

    python evaluate_retrieval.py --checkpoint RUN/best.pt [RUN2/best.pt ...] [--split test]

Each checkpoint is rebuilt from its file alone; the dataset, work folder, seed, validation size
and preprocessing default to those it was trained with, so the split is the one training held
out. Every distinct image of the split is embedded once; images that are missing or unreadable
are reported and left out with their texts, and texts that leave no token are dropped.

Reported, image->text and text->image: Recall@1/5/10 (percent), median and mean rank, rsum (the
six recalls summed). With several texts per image an image query is a hit when ANY of its texts
is in the top K; each text has one correct image. Median rank is VSE++'s and open_clip's,
floor(median of the 0-based ranks) + 1. An incorrect candidate scoring exactly as the correct
one is ahead of it when its index is lower (--ties stable, as open_clip), or always (--ties
worst); how many queries had such a tie is printed. With at least 2,000 images the same numbers
are also averaged over folds of 1,000 images (the COCO 1K protocol, key folds_1k).

Neighbourhood preservation (the paper's claim): for each image, the share of its 10 nearest
neighbours in Doc2Vec space (vectors inferred for the split's texts as Doc2Vec read them in
training: each item's doc2vec_text when the dataset has one, e.g. the GoodNews article) that are
also among its 10 nearest in the learned image space, and likewise in the learned text space.
With several texts per image one document per image is used, its first text, so that the other
texts of an image (identical in image space) do not count as neighbours. It needs the Doc2Vec
model of the checkpoint's work folder: without one, or when a Doc2Vec text leaves no token, the
metric is skipped (the reason is printed); a model whose vocabulary is not the checkpoint's is
an error. A run trained on a transformer's neighbourhoods (extract_transformer_vectors.py) is
measured in that transformer's space instead: the model its record names, checked by its hash
(another model there is an error; none there skips the metric). When every item has a label, precision@10 of same-label results is reported for i2t,
t2i, i2i and t2t (fractions, 0..1).

Output: one table, one column per checkpoint (named by its run folder). Without --out,
metrics.json is written beside each checkpoint (metrics_<file>_<split>.json for a file other
than best.pt or a split other than test). With --out and one checkpoint, that file holds its
metrics; with --out and several checkpoints, it holds one dict keyed by run name.
--save-ranks also writes each query's rank and neighbourhood hits (per_query_<split>.npz
beside each checkpoint), from which tune_weights.py bootstraps confidence intervals.
"""
import argparse
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from cli import check_flags, check_output, eval_parser, real, run_main
from common.errors import shown
from common.workdir import check_writable
import config
from common.places import own_folder
from data.datasets import provenance
from data.datasets.load import load_items
from data.datasets.settings import DATA_FLAGS, TOKEN_FLAGS
from data.images.cache import cached_reader
from data.text.doc2vec import infer_vectors
from evaluation.embed import embed_images, embed_texts, load_model
from evaluation.export import save_embeddings, write_projector
from evaluation.metrics import TIES
from evaluation.neighborhood import doc2vec_model_path
from evaluation.names import metrics_path, per_query_path, run_names
from evaluation.report import evaluate_embeddings, format_table, write_json, write_per_query
from evaluation.split import (EvalSplit, integer_labels, load_split, reference_tokens,
                              without_unreadable)
from evaluation.text_space import embed_reference, reference_texts, trained_model

SPLIT_KEYS = (*DATA_FLAGS, *TOKEN_FLAGS, "split")   # runs that agree on these share one split

EMBEDDING_FILES = ("ids.json",)   # what an embeddings folder of a version before its marker holds


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """The flags; `prog` names the caller in the usage and error lines (the trainer's
    --then-evaluate)."""
    p = eval_parser(__doc__)
    if prog is not None:
        p.prog = prog
    g = p.add_argument_group("evaluation")
    g.add_argument("--checkpoint", required=True, action="extend", nargs="+",
                   help="one or more best.pt files (repeat the flag or list them)")
    g.add_argument("--out", default=None,
                   help="metrics file (default: metrics.json beside each checkpoint); with several "
                        "checkpoints it holds a dict keyed by run name")
    g.add_argument("--ties", choices=TIES, default="stable",
                   help="an incorrect candidate scoring exactly as the correct one is ahead of it "
                        "when its index is lower (stable, as open_clip) or always (worst)")
    g.add_argument("--save-ranks", action="store_true",
                   help="also write each query's rank and neighbourhood hits to "
                        "per_query_<split>.npz beside each checkpoint")
    g.add_argument("--block", type=int, default=1024,
                   help="queries scored at once: bounds the similarity matrix held in memory")
    g.add_argument("--max-bad-images", type=real(0, 1), default=config.MAX_BAD_IMAGES,
                   help="share of unreadable split images tolerated (they are left out)")
    g.add_argument("--save-embeddings", nargs="?", const="", default=None, metavar="DIR",
                   help="write images.npy, texts.npy, text_image.npy and ids.json to DIR (default: "
                        "embeddings_<split> beside the checkpoint; with several checkpoints, "
                        "DIR/<run name>)")
    g.add_argument("--projector", action="store_true",
                   help="also write a TensorBoard projector log to the embeddings folder's "
                        "projector/ (implies --save-embeddings)")
    g.add_argument("--projector-max", type=int, default=2000, help="images in the projector log")
    g.add_argument("--projector-thumb", type=int, default=32, help="thumbnail side in pixels")
    args = p.parse_args(argv)
    check_flags(p, args, "batch_size", "block", "projector_max", "projector_thumb")
    resolved = [Path(c).resolve() for c in args.checkpoint]
    for c, r in zip(args.checkpoint, resolved):
        if resolved.count(r) > 1:   # one column and one metrics file per checkpoint
            p.error(f"--checkpoint {c} is given twice: list each checkpoint once")
    check_output(p, "--out", args.out, folder=False)
    check_output(p, "--save-embeddings", args.save_embeddings, folder=True)
    if args.save_embeddings and len(args.checkpoint) == 1:
        own_folder(args.save_embeddings, "evaluate_retrieval.py", "--save-embeddings",
                   EMBEDDING_FILES, make=False)
    if args.projector and args.save_embeddings is None:
        args.save_embeddings = ""
    return args


def embeddings_dir(args: argparse.Namespace, checkpoint: str, name: str, several: bool) -> Path:
    if args.save_embeddings:
        return Path(args.save_embeddings) / name if several else Path(args.save_embeddings)
    stem = Path(checkpoint).stem
    return Path(checkpoint).parent / f"embeddings{'' if stem == 'best' else '_' + stem}_{args.split}"


class Cache:
    """The split and its Doc2Vec vectors, shared by checkpoints trained on the same data."""

    def __init__(self):
        self.items: dict[tuple, list] = {}
        self.splits: dict[tuple, EvalSplit] = {}
        self.vectors: dict[tuple, np.ndarray] = {}

    def split(self, run: argparse.Namespace, checkpoint: str) -> EvalSplit:
        """The split, after checking that it is the one `checkpoint` was trained beside."""
        key = tuple(getattr(run, k) for k in SPLIT_KEYS)
        if key not in self.splits:
            self.items[key] = load_items(run)
        provenance.check_checkpoint(run, self.items[key], checkpoint)
        if key not in self.splits:
            self.splits[key] = load_split(self.items[key], run.split, run)
        return self.splits[key]

    def reference(self, model_path: Path, split: EvalSplit, run: argparse.Namespace, workers: int
                  ) -> tuple[np.ndarray | None, str]:
        """Doc2Vec vectors of each image's first document, or None and why not."""
        ids, tokens = reference_tokens(split, run.doc2vec_max_sentences, run.max_chars, workers,
                                       run.keep_unicode)
        empty = [i for i, t in zip(ids, tokens) if not t]
        if empty:
            return None, (f"{len(empty)} images' Doc2Vec texts leave no token after preprocessing "
                          f"(first: {', '.join(map(shown, empty[:3]))})")
        key = (str(model_path.resolve()), tuple(map(tuple, tokens)))
        if key not in self.vectors:
            self.vectors[key] = infer_vectors(str(model_path), tokens, workers)
        return self.vectors[key], ""

    def transformer_reference(self, record: dict, folder, split: EvalSplit,
                              run: argparse.Namespace) -> np.ndarray:
        """The transformer's vectors of each image's first document."""
        texts = reference_texts(split, run.doc2vec_max_sentences, run.max_sentences, run.max_chars)
        max_length = provenance.transformer_vectors(record)["max_length"]
        key = (folder.sha256, max_length, tuple(texts))
        if key not in self.vectors:
            self.vectors[key] = embed_reference(folder, texts, max_length, str(run.device))
        return self.vectors[key]


def evaluate_checkpoint(path: str, args: argparse.Namespace, cache: Cache, out_dir: Path | None
                        ) -> tuple[dict, Callable[[], None] | None]:
    """The checkpoint's metrics, and the writing of its embeddings (run after the table)."""
    # From here on only `run`: the flags with the checkpoint's training values, the device and
    # the precision, resolved once.
    model, vocab, run = load_model(path, args)
    # Checked before the embedding, so that a wrong work folder fails in seconds.
    d2v_path, why = doc2vec_model_path(run.work_dir, path, vocab, run.trained_from)
    space = None
    if provenance.transformer_vectors(run.trained_from) is not None:
        space, why = trained_model(run.trained_from, path)
    split = cache.split(run, path)
    print(f"{path}: {run.split} split of {run.dataset}: {split.n_images} images, "
          f"{split.n_texts} texts")
    read, why_not = cached_reader(run.work_dir, split.image_paths, run.image_size,
                                  model.image.entry.preprocessing.resize)
    print("images: read from the image cache" if read else f"images: decoded from the files ({why_not})")
    images, failures = embed_images(model, split.image_paths, run.image_size, run.device,
                                    run.batch_size, run.workers, run.precision, read=read)
    split, images = without_unreadable(split, images, failures, run.max_bad_images, run.dataset)
    texts = embed_texts(model, vocab, split.text_tokens, run.max_tokens, run.device,
                        run.batch_size, run.precision)

    reference = None
    if space is not None:
        print(f"neighbourhood: in the space of {space.name}, the run's neighbourhoods")
        reference = torch.from_numpy(cache.transformer_reference(run.trained_from, space, split, run))
    elif d2v_path is None or provenance.transformer_vectors(run.trained_from) is not None:
        print(f"neighbourhood: skipped, {why}")
    else:
        vectors, why = cache.reference(d2v_path, split, run, run.workers)
        if vectors is None:
            print(f"neighbourhood: skipped, {why}")
        else:
            reference = torch.from_numpy(vectors)
    labels = integer_labels(split.image_labels, split.text_labels)
    if labels is None and any(lab is not None for lab in split.image_labels):
        print("label precision: skipped, some items of the split have no label")
    device = run.device
    per_query: dict = {}
    metrics, notes = evaluate_embeddings(
        images.to(device), texts.to(device), torch.from_numpy(split.text_image).to(device),
        torch.from_numpy(split.first_texts()).to(device), reference,
        None if labels is None else torch.from_numpy(labels[0]),
        None if labels is None else torch.from_numpy(labels[1]), run.block, run.ties, per_query)
    for note in notes:
        print(note)
    if out_dir is None and not run.save_ranks:
        return metrics, None

    def save() -> None:
        if run.save_ranks:
            target = per_query_path(path, run.split)
            write_per_query(per_query, target)
            print(f"wrote each query's values to {target}")
        if out_dir is None:
            return
        save_embeddings(out_dir, split, images, texts)
        print(f"wrote embeddings to {out_dir}")
        if run.projector:
            log = write_projector(out_dir / "projector", split, images, texts, run.projector_max,
                                  run.projector_thumb)
            print(f"wrote a projector log: tensorboard --logdir {log}")
    return metrics, save


def check_outputs(args: argparse.Namespace, names: list[str]) -> None:
    """Every file the run will write, checked writable before any embedding."""
    away = "pass --out FILE (and --save-embeddings DIR) somewhere writable"
    if args.out is not None:
        check_writable(args.out, fix="pass another --out")
    for name, path in zip(names, args.checkpoint):
        if args.out is None:
            check_writable(metrics_path(path, args.split), fix=away)
        if args.save_ranks:
            check_writable(per_query_path(path, args.split),
                           fix="drop --save-ranks, or copy the checkpoint somewhere writable")
        if args.save_embeddings is not None:
            own_folder(embeddings_dir(args, path, name, len(names) > 1), "evaluate_retrieval.py",
                       "--save-embeddings", EMBEDDING_FILES)
            check_writable(embeddings_dir(args, path, name, len(names) > 1), folder=True,
                           fix="pass --save-embeddings DIR somewhere writable")


def main(argv: list[str] | None = None) -> None:
    start = time.time()
    args = parse_args(argv)
    names = run_names(args.checkpoint)
    several = len(names) > 1
    check_outputs(args, names)
    cache, results, saves = Cache(), {}, []
    for name, path in zip(names, args.checkpoint):
        out_dir = None if args.save_embeddings is None else embeddings_dir(args, path, name, several)
        results[name], save = evaluate_checkpoint(path, args, cache, out_dir)
        saves += [save] if save else []
    # The table first: a write that fails now still leaves the numbers on the screen.
    print()
    print(format_table(names, list(results.values())))
    print(f"\nevaluated {len(names)} checkpoint{'s' if several else ''} in "
          f"{time.time() - start:.1f}s")
    if args.out is not None:
        write_json(results if several else results[names[0]], args.out)
        print(f"wrote {args.out}")
    else:
        for name, path in zip(names, args.checkpoint):
            target = metrics_path(path, args.split)
            write_json(results[name], target)
            print(f"wrote {target}")
    for save in saves:
        save()


if __name__ == "__main__":
    run_main(main)

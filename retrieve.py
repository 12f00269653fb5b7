"""Step 7: query a trained model: texts -> the top-k images of a split, image files -> the top-k texts.

    python retrieve.py --checkpoint RUN/best.pt --query "storm over the harbour" [--k 10]
    python retrieve.py --checkpoint RUN/best.pt --queries queries.txt --image photo.jpg

Writes OUT/index.html (thumbnails copied to OUT/thumbs/, scores, ground truth marked) and one
PNG contact sheet per query in OUT/sheets/, and prints the top results. The dataset and the
preprocessing default to the checkpoint's training settings. Ground truth: a text query equal
to a text of the split (case and whitespace aside) marks that text's image; an image query that
is a file of the split marks that image's texts.
"""
import argparse
import os
from pathlib import Path

import torch

from cli import check_flags, check_output, eval_parser, real, run_main
from common.errors import InputError, shown
from common.workdir import check_writable
import config
from common.places import own_folder
from data.datasets import provenance
from data.datasets.items import not_text
from data.datasets.load import load_items
from data.images.cache import cached_reader
from evaluation.embed import embed_images, embed_texts, load_model
from evaluation.neighborhood import top_k
from evaluation.page import (Hit, QueryResult, Thumbnails, contact_sheet, image_by_path,
                             images_by_text, normal_text, query_tokens, read_query_file, write_page)
from evaluation.split import EvalSplit, load_split, without_unreadable
from models import CrossModalModel, Vocabulary

RETRIEVAL_FILES = ("index.html",)   # what a retrieval folder of a version before its marker holds


def parse_args() -> argparse.Namespace:
    p = eval_parser(__doc__)
    g = p.add_argument_group("retrieval")
    g.add_argument("--checkpoint", required=True, help="a best.pt of the training script")
    g.add_argument("--query", action="append", default=[], help="a text query (repeatable)")
    g.add_argument("--queries", default=None, help="a file of text queries, one per line")
    g.add_argument("--image", action="append", default=[], help="an image query file (repeatable)")
    g.add_argument("--k", type=int, default=10, help="results per query")
    g.add_argument("--out", default=None, help="output folder (default: retrieval/ beside the "
                                               "checkpoint)")
    g.add_argument("--thumb-size", type=int, default=128, help="thumbnail side in pixels")
    g.add_argument("--block", type=int, default=1024, help="queries scored at once")
    g.add_argument("--max-bad-images", type=real(0, 1), default=config.MAX_BAD_IMAGES,
                   help="share of unreadable gallery images tolerated (they are left out)")
    args = p.parse_args()
    if not (args.query or args.queries or args.image):
        p.error("give at least one query: --query TEXT, --queries FILE or --image FILE")
    for n, query in enumerate(args.query, 1):
        if not_text(query) is not None:   # an undecodable byte: no page or sheet could show it
            p.error(f"--query {n} '{shown(query)}' is not UTF-8 text (the shell passed a byte "
                    "that does not decode): pass the query in UTF-8")
    check_flags(p, args, "batch_size", "k", "block")
    if not 16 <= args.thumb_size <= 1024:   # a page of k thumbnails per query, each side^2 x 3 bytes
        p.error(f"--thumb-size {args.thumb_size}: pass 16 to 1024 pixels")
    check_output(p, "--out", args.out, folder=True)
    if args.out:
        own_folder(args.out, "retrieve.py", "--out", RETRIEVAL_FILES, make=False)
    return args


def _image_label(split: EvalSplit, i: int) -> str:
    label = split.image_labels[i]
    return split.image_ids[i] + (f" ({label})" if label is not None else "")


def search(queries: torch.Tensor, gallery: torch.Tensor, run: argparse.Namespace
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The top --k of the gallery for each query, searched on the device, as CPU tensors."""
    scores, index = top_k(queries.to(run.device), gallery.to(run.device), run.k, run.block)
    return scores.cpu(), index.cpu()


def text_queries(queries: list[str], tokens: list[list[str]], model: CrossModalModel,
                 vocab: Vocabulary, split: EvalSplit, run: argparse.Namespace
                 ) -> list[QueryResult]:
    """Each text query against the split's images (the unreadable ones left out, reported)."""
    read, _ = cached_reader(run.work_dir, split.image_paths, run.image_size,
                            model.image.entry.preprocessing.resize)
    gallery, failures = embed_images(model, split.image_paths, run.image_size, run.device,
                                     run.batch_size, run.workers, run.precision,
                                     desc="embedding gallery images", read=read)
    split, gallery = without_unreadable(split, gallery, failures, run.max_bad_images, run.dataset)
    embedded = embed_texts(model, vocab, tokens, run.max_tokens, run.device, run.batch_size,
                           run.precision, desc="embedding queries")
    scores, index = search(embedded, gallery, run)
    by_text = images_by_text(split)
    results = []
    for q, query in enumerate(queries):
        truth = by_text.get(normal_text(query), set())
        note = (f"ground truth: the image of this {run.split} text "
                f"({', '.join(split.image_ids[i] for i in sorted(truth))})" if truth
                else f"not a text of the {run.split} split: no ground truth")
        hits = [Hit(r + 1, float(s), split.image_paths[j], _image_label(split, j), j in truth)
                for r, (s, j) in enumerate(zip(scores[q].tolist(), index[q].tolist()))]
        results.append(QueryResult("text", query, note, hits))
    return results


def image_queries(paths: list[str], embedded: torch.Tensor, model: CrossModalModel,
                  vocab: Vocabulary, split: EvalSplit, run: argparse.Namespace
                  ) -> list[QueryResult]:
    """Each query image (`embedded`, one row per path) against the split's texts."""
    gallery = embed_texts(model, vocab, split.text_tokens, run.max_tokens, run.device,
                          run.batch_size, run.precision, desc="embedding gallery texts")
    scores, index = search(embedded, gallery, run)
    by_path = image_by_path(split)
    results = []
    for q, path in enumerate(paths):
        own = by_path.get(os.path.realpath(path))
        note = (f"ground truth: the texts of this {run.split} image ({split.image_ids[own]})"
                if own is not None else f"not an image of the {run.split} split: no ground truth")
        hits = []
        for r, (s, t) in enumerate(zip(scores[q].tolist(), index[q].tolist())):
            image = int(split.text_image[t])
            hits.append(Hit(r + 1, float(s), split.image_paths[image],
                            f"{split.text_ids[t]}: {split.texts[t]}", image == own))
        results.append(QueryResult("image", path, note, hits))
    return results


def print_results(results: list[QueryResult]) -> None:
    for n, result in enumerate(results, 1):
        target = "images" if result.kind == "text" else "texts"
        print(f"\nquery {n} ({result.kind} -> {target}): {shown(result.query)}\n  "
              f"{shown(result.truth, 400)}")
        for hit in result.hits:
            extra = f"  {shown(hit.image, 200)}" if result.kind == "text" else ""
            print(f"  {hit.rank:3d}  {hit.score:6.3f}  {shown(hit.label, 100)}{extra}"
                  f"{'  [GT]' if hit.correct else ''}")


def main() -> None:
    # One namespace: the flags with the checkpoint's training values, the device and the
    # precision, resolved once.
    flags = parse_args()
    model, vocab, run = load_model(flags.checkpoint, flags)
    out = Path(run.out) if run.out else Path(run.checkpoint).parent / "retrieval"
    own_folder(out, "retrieve.py", "--out", RETRIEVAL_FILES)
    check_writable(out, folder=True, fix="pass --out DIR somewhere writable")
    queries = list(run.query) + (read_query_file(run.queries) if run.queries else [])
    tokens = query_tokens(queries, vocab, run.max_sentences, run.max_chars, run.keep_unicode)
    # The query images are read before the split, so a bad one fails in seconds.
    embedded, failures = embed_images(model, run.image, run.image_size, run.device,
                                      run.batch_size, 0, run.precision,
                                      desc="embedding query images")
    if failures:
        i, reason = min(failures.items())
        raise InputError(f"{run.image[i]}: the query image cannot be read ({reason}): pass "
                         "an existing JPEG or PNG file")
    items = load_items(run)
    provenance.check_checkpoint(run, items, run.checkpoint)
    split = load_split(items, run.split, run)
    results = []
    if queries:
        results += text_queries(queries, tokens, model, vocab, split, run)
    if run.image:
        results += image_queries(run.image, embedded, model, vocab, split, run)

    thumbs = Thumbnails(out, run.thumb_size)
    sheets = []
    for n, result in enumerate(results, 1):
        sheets.append(f"sheets/query_{n:03d}.png")
        contact_sheet(result, thumbs, out / sheets[-1])
    page = write_page(out, results, sheets, thumbs,
                      f"{Path(run.checkpoint).parent.name}: top {run.k} of the {run.split} split")
    print_results(results)
    print(f"\nwrote {page} and {len(sheets)} contact sheet{'s' if len(sheets) != 1 else ''}")


if __name__ == "__main__":
    run_main(main)

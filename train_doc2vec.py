"""Step 1: train Doc2Vec on the training texts (never val or test) -> doc2vec_model.gensim.

It reads each item's doc2vec_text when the dataset has one (a GoodNews article, cut by
--doc2vec-max-sentences), else its texts (cut by --max-sentences). The model carries a record
of the dataset and settings it was made from (model.provenance), which every later step checks.
"""
import time
from pathlib import Path

from cli import parser, run_main, whole
from common.errors import InputError
from common.workdir import DOC2VEC_MODEL, atomic_write, check_writable
import config
from data.datasets import provenance
from data.datasets.load import load_items
from data.text.corpus import doc2vec_documents, drop_empty
from data.text.doc2vec import model_id, train_doc2vec
from data.text.preprocess import no_tokens_reason


def main() -> None:
    p = parser(__doc__)
    g = p.add_argument_group("Doc2Vec (config.py)")
    g.add_argument("--vector-size", type=whole(1), default=config.VECTOR_SIZE)
    g.add_argument("--window", type=whole(1), default=config.WINDOW)
    g.add_argument("--min-count", type=whole(1), default=config.MIN_COUNT)
    g.add_argument("--epochs", type=whole(1), default=config.EPOCHS)
    g.add_argument("--deterministic", action="store_true", default=config.DETERMINISTIC,
                   help="train on one thread: the same model on every run and machine for a "
                        "seed (gensim's threads race, so --workers N gives a slightly different "
                        "model each time)")
    args = p.parse_args()

    out = Path(args.work_dir) / DOC2VEC_MODEL
    check_writable(out)   # before the training, not after it
    items = load_items(args)
    all_docs, all_tokens = doc2vec_documents(items, ["train"], args)
    docs, tokens = drop_empty(all_docs, all_tokens, "training")
    if all_docs and not docs:
        texts = [items[d.item].doc2vec(d.text) for d in all_docs]
        raise InputError(f"none of the {len(all_docs)} training texts leaves a word after "
                         f"preprocessing: {no_tokens_reason(texts, args.keep_unicode)}")
    n_tokens = sum(map(len, tokens))
    threads = 1 if args.deterministic else max(1, args.workers)
    print(f"training corpus: {len(docs)} documents, {n_tokens} tokens; {threads} thread"
          f"{'s' if threads > 1 else ''}{' (--deterministic)' if args.deterministic else ''}")
    t = time.time()
    model = train_doc2vec(tokens, args.vector_size, args.window, args.min_count, args.epochs,
                          args.workers, args.seed, args.deterministic)
    print(f"vocabulary: {len(model.wv)} words (min_count {args.min_count}); "
          f"trained {args.epochs} epochs in {time.time() - t:.1f}s")
    model.provenance = provenance.new_record(
        provenance.data_record(items, args), "doc2vec",
        {"vector_size": args.vector_size, "window": args.window, "min_count": args.min_count,
         "epochs": args.epochs, "seed": args.seed, "deterministic": args.deterministic,
         "model": model_id(model)})
    # One file: gensim otherwise stores its sub-objects' arrays of over 10 * 2**20 elements (the
    # document vectors from ~52,000 training documents on) beside the temporary name, where
    # loading never finds them.
    atomic_write(out, lambda tmp: model.save(tmp, separately=[], sep_limit=1 << 62))
    print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)

"""Step 1: train Doc2Vec on the training texts (never val or test) -> doc2vec_model.gensim.

It reads each item's doc2vec_text when the dataset has one (a GoodNews article, cut by
--doc2vec-max-sentences), else its texts (cut by --max-sentences).
"""
import time
from pathlib import Path

import config
from cli import load_items, parser, run_main
from data.corpus import doc2vec_documents, drop_empty
from data.doc2vec import train_doc2vec
from data.workdir import DOC2VEC_MODEL, atomic_write


def main() -> None:
    p = parser(__doc__)
    g = p.add_argument_group("Doc2Vec (config.py)")
    g.add_argument("--vector-size", type=int, default=config.VECTOR_SIZE)
    g.add_argument("--window", type=int, default=config.WINDOW)
    g.add_argument("--min-count", type=int, default=config.MIN_COUNT)
    g.add_argument("--epochs", type=int, default=config.EPOCHS)
    args = p.parse_args()

    items = load_items(args)
    docs, tokens = drop_empty(*doc2vec_documents(items, ["train"], args), "training")
    n_tokens = sum(map(len, tokens))
    print(f"training corpus: {len(docs)} documents, {n_tokens} tokens")
    t = time.time()
    model = train_doc2vec(tokens, args.vector_size, args.window, args.min_count, args.epochs,
                          args.workers, args.seed)
    print(f"vocabulary: {len(model.wv)} words (min_count {args.min_count}); "
          f"trained {args.epochs} epochs in {time.time() - t:.1f}s")
    out = Path(args.work_dir) / DOC2VEC_MODEL
    atomic_write(out, lambda tmp: model.save(tmp, separately=[]))
    print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)

"""Step 3: the semantic neighbours of every training document -> document_feats_knn.pickle.

The file holds {'ids', 'neighbors': int32 [N, k], 'distances': float32 [N, k], 'space',
'backend', 'provenance'}: rows sorted nearest first, each starting with the document itself at
distance 0 (the training sampler drops it); distances are Euclidean for l2, 1 - cosine for
cosinesimil. It reads only the vectors file and carries its record on, adding its own settings.
"""
import time
from pathlib import Path


import config
from cli import parser, run_main, whole
from data import provenance
from data.items import InputError
from data.knn import SPACES, exact_knn, hnsw_knn, sampled_recall
from data.workdir import DOC2VEC_FEATURES, KNN, check_vectors, check_writable, load_pickle, save_pickle


def main() -> None:
    p = parser(__doc__)
    g = p.add_argument_group("neighbours (config.py)")
    g.add_argument("--k", type=int, default=config.K)
    g.add_argument("--backend", choices=("hnsw", "exact"), default=config.BACKEND)
    g.add_argument("--space", choices=SPACES, default=config.SPACE)
    g.add_argument("--M", type=whole(2), default=config.M, help="HNSW graph degree")
    g.add_argument("--ef-construction", type=whole(1), default=config.EF_CONSTRUCTION)
    g.add_argument("--ef-search", type=whole(1), default=config.EF_SEARCH)
    g.add_argument("--deterministic", action="store_true", default=config.DETERMINISTIC,
                   help="build the HNSW graph on one thread (threads insert in a racy order, "
                        "so the neighbours would differ slightly between runs); queries still "
                        "use --workers")
    g.add_argument("--device", default=None, help="exact backend: cpu or cuda (default: cuda when present)")
    args = p.parse_args()

    if args.k < 1:
        p.error(f"--k {args.k}: pass 1 or more")
    feats = load_pickle(args.work_dir, DOC2VEC_FEATURES)
    out = Path(args.work_dir) / KNN
    check_writable(out)
    if not {"ids", "vectors"} <= set(feats):
        raise InputError(f"{Path(args.work_dir) / DOC2VEC_FEATURES}: no 'ids' and 'vectors': "
                           "run extract_doc2vec_vectors.py again")
    made_from = provenance.require_record(feats.get(provenance.KEY),
                                          Path(args.work_dir) / DOC2VEC_FEATURES, "vectors")
    vectors = check_vectors(feats["vectors"], Path(args.work_dir) / DOC2VEC_FEATURES)
    n = len(vectors)
    if args.k > n:
        raise InputError(f"--k {args.k} is larger than the corpus ({n} documents in "
                           f"{Path(args.work_dir) / DOC2VEC_FEATURES}): pass --k {n} or less")
    t = time.time()
    if args.backend == "exact":
        ids, dists = exact_knn(vectors, args.k, args.space, args.device)
    else:
        ids, dists = hnsw_knn(vectors, args.k, args.space, args.M, args.ef_construction,
                              args.ef_search, args.workers,
                              build_threads=1 if args.deterministic else None)
    print(f"{args.backend} kNN, k={args.k}, {n} documents: {time.time() - t:.1f}s")
    if args.backend == "hnsw":
        # A check on a sample, not all pairs: 1,000 exact queries grow as N, the search as
        # N log N (4 s against 223 s for the search at 100,000 documents, benchmarks/RESULTS.md).
        r, t = min(10, args.k), time.time()
        recall, size = sampled_recall(vectors, dists, r, args.space, queries=1000, seed=args.seed)
        print(f"HNSW recall@{r} against exact on {size} queries: {recall:.4f} "
              f"(checked in {time.time() - t:.1f}s)")
    settings = {"k": args.k, "backend": args.backend, "space": args.space}
    if args.backend == "hnsw":
        settings.update(M=args.M, ef_construction=args.ef_construction, ef_search=args.ef_search,
                        deterministic=args.deterministic)
    record = provenance.new_record(made_from["data"], "knn", settings, made_from)
    save_pickle({"ids": feats["ids"], "neighbors": ids, "distances": dists,
                 "space": args.space, "backend": args.backend, provenance.KEY: record}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)

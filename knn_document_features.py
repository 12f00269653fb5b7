"""Step 3: the semantic neighbours of every training document -> document_feats_knn.pickle.

The file holds {'ids', 'neighbors': int32 [N, k], 'distances': float32 [N, k], 'space',
'backend'}: rows sorted nearest first, each starting with the document itself at distance 0
(the training sampler drops it); distances are Euclidean for l2, 1 - cosine for cosinesimil.
"""
import time
from pathlib import Path


import config
from cli import parser, run_main
from data.items import InputError
from data.knn import SPACES, exact_knn, hnsw_knn, sampled_recall
from data.workdir import DOC2VEC_FEATURES, KNN, load_pickle, save_pickle


def main() -> None:
    p = parser(__doc__)
    g = p.add_argument_group("neighbours (config.py)")
    g.add_argument("--k", type=int, default=config.K)
    g.add_argument("--backend", choices=("hnsw", "exact"), default=config.BACKEND)
    g.add_argument("--space", choices=SPACES, default=config.SPACE)
    g.add_argument("--M", type=int, default=config.M, help="HNSW graph degree")
    g.add_argument("--ef-construction", type=int, default=config.EF_CONSTRUCTION)
    g.add_argument("--ef-search", type=int, default=config.EF_SEARCH)
    g.add_argument("--device", default=None, help="exact backend: cpu or cuda (default: cuda when present)")
    args = p.parse_args()

    if args.k < 1:
        p.error(f"--k {args.k}: pass 1 or more")
    feats = load_pickle(args.work_dir, DOC2VEC_FEATURES)
    if not {"ids", "vectors"} <= set(feats):
        raise InputError(f"{Path(args.work_dir) / DOC2VEC_FEATURES}: no 'ids' and 'vectors': "
                           "run extract_doc2vec_vectors.py again")
    vectors = feats["vectors"]
    n = len(vectors)
    if args.k > n:
        raise InputError(f"--k {args.k} is larger than the corpus ({n} documents in "
                           f"{Path(args.work_dir) / DOC2VEC_FEATURES}): pass --k {n} or less")
    t = time.time()
    if args.backend == "exact":
        ids, dists = exact_knn(vectors, args.k, args.space, args.device)
    else:
        ids, dists = hnsw_knn(vectors, args.k, args.space, args.M, args.ef_construction,
                              args.ef_search, args.workers)
    print(f"{args.backend} kNN, k={args.k}, {n} documents: {time.time() - t:.1f}s")
    if args.backend == "hnsw":
        # A check on a sample, not all pairs: exact search for 1,000 queries costs a few seconds
        # at a million documents, a small share of the HNSW search it checks.
        r, t = min(10, args.k), time.time()
        recall, size = sampled_recall(vectors, dists, r, args.space, queries=1000, seed=args.seed)
        print(f"HNSW recall@{r} against exact on {size} queries: {recall:.4f} "
              f"(checked in {time.time() - t:.1f}s)")
    out = Path(args.work_dir) / KNN
    save_pickle({"ids": feats["ids"], "neighbors": ids, "distances": dists,
                 "space": args.space, "backend": args.backend}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_main(main)

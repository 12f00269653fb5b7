"""Step 3: the semantic neighbours of every training document -> document_feats_knn.pickle.

Backends: hnsw (nmslib, the authors'), exact (torch; the GPU when present), faiss-exact,
faiss-ivf, faiss-ivfpq and faiss-hnsw (faiss-cpu; faiss-exact runs on the GPU with a GPU build
of faiss).
Which to pick at what size: README.md, "Neighbourhoods at scale".

The file holds {'ids', 'neighbors': int32 [N, k], 'distances': float32 [N, k], 'space',
'backend', 'provenance'}: rows sorted nearest first, each starting with the document itself at
distance 0 (the training sampler drops it); distances are Euclidean for l2, 1 - cosine for
cosinesimil. It reads only the vectors file and carries its record on, adding its own settings.
"""
import time
from pathlib import Path

from cli import parser, run_main, whole
from common.devices import pick_device
from common.errors import InputError
import config
from data.datasets import provenance
from data.neighbors.knn import SPACES, exact_knn, hnsw_knn, sampled_recall
from data.neighbors.knn_faiss import (BACKENDS as FAISS_BACKENDS, SettingsError, ivf_settings,
                                      pq_parts)
from common.workdir import (DOC2VEC_FEATURES, KNN, check_vectors, check_writable, load_pickle,
                            save_pickle)

BACKENDS = ("hnsw", "exact", *FAISS_BACKENDS)
EXACT = ("exact", "faiss-exact")


def main() -> None:
    p = parser(__doc__)
    g = p.add_argument_group("neighbours (config.py)")
    g.add_argument("--k", type=int, default=config.K)
    g.add_argument("--backend", choices=BACKENDS, default=config.BACKEND,
                   help="hnsw: nmslib (the authors'); exact: torch; faiss-*: faiss-cpu (see the "
                        "README for which at what size)")
    g.add_argument("--space", choices=SPACES, default=config.SPACE)
    g.add_argument("--M", type=whole(2), default=config.M, help="HNSW graph degree (hnsw, faiss-hnsw)")
    g.add_argument("--ef-construction", type=whole(1), default=config.EF_CONSTRUCTION,
                   help="hnsw, faiss-hnsw")
    g.add_argument("--ef-search", type=whole(1), default=config.EF_SEARCH,
                   help="hnsw, faiss-hnsw (faiss-hnsw searches at least --k)")
    g.add_argument("--nlist", type=whole(1), default=config.NLIST,
                   help="faiss-ivf, faiss-ivfpq: inverted lists (default: 4 sqrt(N), at most "
                        "N / 39)")
    g.add_argument("--nprobe", type=whole(1), default=config.NPROBE,
                   help="faiss-ivf, faiss-ivfpq: lists visited per query (default: 16 for "
                        "faiss-ivf, 8%% of --nlist and at least 16 for faiss-ivfpq; at most "
                        "--nlist)")
    g.add_argument("--ivf-train-size", type=whole(1), default=config.IVF_TRAIN_SIZE,
                   help="faiss-ivf, faiss-ivfpq: vectors k-means trains on, a seeded sample "
                        "(default: 50 per list, at most N)")
    g.add_argument("--refine", type=whole(1), default=config.REFINE,
                   help="faiss-ivfpq: candidates per neighbour its codes choose, re-ranked by "
                        "their exact distances")
    g.add_argument("--deterministic", action="store_true", default=config.DETERMINISTIC,
                   help="build the index on one thread: HNSW graphs (nmslib, faiss) insert in a "
                        "racy order over threads, so the neighbours would differ slightly "
                        "between runs; faiss-ivf(pq) trains and fills its lists on one thread too. "
                        "Queries still use --workers; the exact backends need nothing (refused "
                        "for faiss-exact on a GPU, whose ties come out in no fixed order)")
    g.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="exact and faiss-exact: cpu or cuda (default: cuda when present; "
                        "faiss-exact needs a GPU build of faiss for it)")
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
    settings = backend_settings(args, n, vectors.shape[1])   # every setting checked before the search starts
    t = time.time()
    ids, dists = search(vectors, args, settings)
    print(f"{args.backend} kNN, k={args.k}, {n} documents: {time.time() - t:.3f}s")
    if args.backend not in EXACT:
        # A check on a sample, not all pairs: 1,000 exact queries grow as N, the search as
        # N log N (4 s against 223 s for the search at 100,000 documents, benchmarks/RESULTS.md).
        r, t = min(10, args.k), time.time()
        recall, size = sampled_recall(vectors, dists, r, args.space, queries=1000, seed=args.seed)
        print(f"{args.backend} recall@{r} against exact on {size} queries: {recall:.4f} "
              f"(checked in {time.time() - t:.1f}s)")
    record = provenance.new_record(made_from["data"], "knn", settings, made_from)
    save_pickle({"ids": feats["ids"], "neighbors": ids, "distances": dists,
                 "space": args.space, "backend": args.backend, provenance.KEY: record}, out)
    print(f"wrote {out}")


def backend_settings(args, n: int, dim: int) -> dict:
    """The provenance settings of this search: the backend and what decides its neighbours.
    Bad settings (an IVF list count above N, --device cuda without a GPU faiss, --deterministic
    where it cannot be kept) stop here, in one line, before any work."""
    settings = {"k": args.k, "backend": args.backend, "space": args.space}
    if args.backend in ("hnsw", "faiss-hnsw"):
        settings.update(M=args.M, ef_construction=args.ef_construction, ef_search=args.ef_search,
                        deterministic=args.deterministic)
    elif args.backend in ("faiss-ivf", "faiss-ivfpq"):
        pq = args.backend == "faiss-ivfpq"
        try:
            nlist, nprobe, train_size = ivf_settings(n, args.nlist, args.nprobe,
                                                     args.ivf_train_size, pq=pq)
        except SettingsError as e:
            raise InputError(f"{e} (the corpus has {n} documents)") from None
        # The seed draws the training sample and seeds k-means, so it decides the lists.
        settings.update(nlist=nlist, nprobe=nprobe, ivf_train_size=train_size, seed=args.seed,
                        deterministic=args.deterministic)
        if pq:
            settings.update(refine=args.refine, pq_parts=pq_parts(dim))
    elif args.backend == "faiss-exact":
        settings["device"] = faiss_device(args)
        if settings["device"] == "cuda" and args.deterministic:
            raise InputError("--deterministic with --backend faiss-exact on the GPU: faiss's GPU "
                             "selection returns equal distances (duplicate texts) in no fixed "
                             "order; pass --device cpu, or --backend exact (torch, which keeps "
                             "them in index order)")
    elif args.backend == "exact" and args.device is not None:
        pick_device(args.device)   # refused here, before the vectors are read onto it
    return settings


def faiss_device(args) -> str:
    """Where faiss-exact runs: the GPU when asked for (or present) and faiss can use it."""
    from data.neighbors.knn_faiss import cuda_present, faiss_gpu_count
    gpus = faiss_gpu_count()
    if args.device == "cuda" and not gpus:
        raise InputError("--backend faiss-exact --device cuda: the installed faiss has no GPU "
                         "support (faiss-cpu): pass --backend exact, which runs the exact "
                         "search on the GPU with torch, or install a GPU build of faiss")
    if args.device is None and not gpus and cuda_present():
        print("a GPU is present but faiss here is a CPU build: --backend exact runs the same "
              "exact search on the GPU with torch")
    return "cuda" if args.device != "cpu" and gpus else "cpu"


def search(vectors, args, settings: dict):
    if args.backend == "exact":
        return exact_knn(vectors, args.k, args.space, args.device)
    build_threads = 1 if args.deterministic else None
    if args.backend == "hnsw":
        return hnsw_knn(vectors, args.k, args.space, args.M, args.ef_construction,
                        args.ef_search, args.workers, build_threads=build_threads)
    from data.neighbors.knn_faiss import faiss_knn
    s = settings
    try:
        return faiss_knn(vectors, args.k, args.space, args.backend, nlist=s.get("nlist"),
                         nprobe=s.get("nprobe"), train_size=s.get("ivf_train_size"),
                         refine=args.refine, M=args.M,
                         ef_construction=args.ef_construction, ef_search=args.ef_search,
                         threads=max(1, args.workers), build_threads=build_threads,
                         seed=args.seed, gpu=s.get("device") == "cuda")
    except SettingsError as e:   # raised before the index is filled
        raise InputError(str(e)) from None


if __name__ == "__main__":
    run_main(main)

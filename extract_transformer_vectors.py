"""Step 2, instead of Doc2Vec's: a sentence-transformer vector for every training document
-> doc2vec_features.pickle, the file knn_document_features.py reads.

    python extract_transformer_vectors.py --dataset D --work-dir W --text-model minilm

--text-model is a Hugging Face model folder (config.json, model.safetensors, tokenizer files)
or `minilm`, the all-MiniLM-L6-v2 that requirements-models.txt installs (its weights' SHA-256 checked
at every load). Each document's text is the one Doc2Vec would read (doc2vec_text when the
dataset has one, else the texts, cut by the same sentence and character flags), given whole to
the model's own tokenizer; the token states are averaged over the text and the mean L2-
normalised. Texts longer than the model's limit are cut there, and counted.

The file has the Doc2Vec layout: the same documents in the same order (those whose text leaves
no token after the release's preprocessing are dropped as there, so the trainer finds every
id), unit vectors of the model's width, and a provenance record naming the model and its hash.
The neighbours knn_document_features.py then finds are the transformer's; the trainer still
needs train_doc2vec.py's model for the GRU's vocabulary and word vectors, and the two live side
by side in one work folder (README: "Neighbourhoods from a transformer").
Nothing is downloaded: a model name that is not a folder here stops at once.
"""
import time
from pathlib import Path

from cli import parser, run_main, whole
from common.devices import pick_device
from common.errors import InputError
from common.workdir import DOC2VEC_FEATURES, check_writable, save_pickle
import config
from data.datasets import provenance
from data.datasets.items import documents
from data.datasets.load import load_items
from data.text import transformer
from data.text.corpus import doc2vec_source, doc2vec_tokens, drop_empty, raw_documents


def main() -> None:
    p = parser(__doc__)
    g = p.add_argument_group("transformer (config.py)")
    g.add_argument("--text-model", default=config.TEXT_MODEL,
                   help="a Hugging Face model folder, or " + " / ".join(transformer.PACKAGED) +
                        " (installed by requirements-models.txt)")
    g.add_argument("--batch-size", type=whole(1), default=config.TEXT_BATCH_SIZE,
                   help="texts per forward pass")
    g.add_argument("--max-length", type=whole(2), default=None,
                   help="longest input in tokens, longer texts cut (default: the model's own "
                        "limit, its sentence_bert_config.json max_seq_length when it has one)")
    g.add_argument("--device", default=None, choices=("cpu", "cuda"),
                   help="default: cuda when present (bf16 there)")
    args = p.parse_args()

    out = Path(args.work_dir) / DOC2VEC_FEATURES
    check_writable(out)
    folder = transformer.resolve(args.text_model)   # before the data: a wrong name fails in seconds
    device = str(pick_device(args.device))
    items = load_items(args)
    data = provenance.data_record(items, args)
    all_docs = documents(items, ["train"])
    docs, _ = drop_empty(all_docs, doc2vec_tokens(items, all_docs, args), "training")
    if not docs:
        raise InputError(f"{args.dataset}: no training document leaves a word after "
                         "preprocessing, so there is nothing to embed: mark items \"split\": "
                         "\"train\" with non-empty texts")
    texts = raw_documents(items, docs, args)
    field, cut = doc2vec_source(items, args)
    print(f"the transformer reads {field}, {'whole' if cut is None else f'first {cut} sentences'}")

    tokenizer, model = transformer.load(folder, device)
    limit = transformer.model_limit(folder, tokenizer, model.config)
    max_length = limit if args.max_length is None else min(args.max_length, limit)
    t = time.time()
    vectors, n_cut = transformer.encode(tokenizer, model, texts, max_length, args.batch_size,
                                        device)
    print(f"{folder.name} ({folder.path}, weights SHA-256 {folder.sha256[:12]}): {len(texts)} "
          f"texts on {device} in {time.time() - t:.1f}s; {n_cut} cut at {max_length} tokens")
    record = provenance.new_record(data, "vectors", folder.settings(max_length))
    save_pickle({"ids": [d.id for d in docs], "vectors": vectors, provenance.KEY: record}, out)
    print(f"wrote {out}: {vectors.shape[0]} vectors of {vectors.shape[1]} dimensions")


if __name__ == "__main__":
    run_main(main)

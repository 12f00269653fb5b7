"""Step 2: infer a Doc2Vec vector for every training document -> doc2vec_features.pickle.

The file holds {'ids': [document id], 'vectors': float32 [N, d], 'provenance': the record of
what it was made from} in document order; documents whose text leaves no token are dropped and
counted. The text is the one Doc2Vec was trained on: doc2vec_text when the dataset has one, else
the texts. The Doc2Vec model must have been made from this dataset with these flags.
"""
from pathlib import Path

from cli import parser, run_main
from common.workdir import DOC2VEC_FEATURES, DOC2VEC_MODEL, check_writable, require, save_pickle
from data.datasets import provenance
from data.datasets.load import load_items
from data.text.corpus import doc2vec_documents, drop_empty
from data.text.doc2vec import infer_vectors, load_model


def main() -> None:
    args = parser(__doc__).parse_args()
    model_path = require(args.work_dir, DOC2VEC_MODEL)
    out = Path(args.work_dir) / DOC2VEC_FEATURES
    check_writable(out)
    items = load_items(args)
    data = provenance.data_record(items, args)
    model = load_model(model_path)
    made_from = getattr(model, "provenance", None)
    provenance.check_data(made_from, data, model_path, "doc2vec")
    docs, tokens = drop_empty(*doc2vec_documents(items, ["train"], args), "training")
    vectors = infer_vectors(model, tokens, args.workers)
    record = provenance.new_record(data, "vectors", {}, made_from)
    save_pickle({"ids": [d.id for d in docs], "vectors": vectors, provenance.KEY: record}, out)
    print(f"wrote {out}: {vectors.shape[0]} vectors of {vectors.shape[1]} dimensions")


if __name__ == "__main__":
    run_main(main)

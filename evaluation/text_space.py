"""The reference space of the text-overlap metric when a run's neighbours came from a
transformer: the same model, found again and checked by its hash, embedding the split's texts
as the vectors step read the training texts."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import InputError
from data.datasets import provenance
from data.text import transformer
from data.text.preprocess import cut_text
from evaluation.split import EvalSplit


def trained_model(record: dict | None, checkpoint: str | Path
                  ) -> tuple[transformer.ModelFolder | None, str]:
    """(the model folder the run's neighbours came from, "") or (None, why the metric is
    skipped). A folder there that holds another model is an error: the overlap would be
    measured against a space the run was never trained to keep."""
    settings = provenance.transformer_vectors(record)
    if settings is None:
        raise ValueError("the run's neighbours came from Doc2Vec, not a transformer")
    name, path = settings.get("text_model"), settings.get("path")
    where = name if name in transformer.PACKAGED else path
    try:
        folder = transformer.resolve(str(where))
    except InputError as e:
        return None, f"the transformer its neighbours came from cannot be loaded ({e})"
    if folder.sha256 != settings.get("model"):
        raise InputError(f"{checkpoint}: its neighbourhoods came from {name} with weights SHA-256 "
                         f"{str(settings.get('model'))[:12]}, but {folder.path} now holds weights "
                         f"{folder.sha256[:12]}: restore that model, or retrain on the "
                         "neighbours of this one")
    return folder, ""


def reference_texts(split: EvalSplit, doc2vec_max_sentences: int | None,
                    max_sentences: int | None, max_chars: int | None) -> list[str]:
    """Each image's first document as the vectors step read it (raw, cut like the tokens)."""
    first = split.first_texts()
    if split.doc2vec_texts is None:
        return [cut_text(split.texts[t], max_sentences or None, max_chars) for t in first]
    return [cut_text(split.doc2vec_texts[t], doc2vec_max_sentences or None, max_chars)
            for t in first]


def embed_reference(folder: transformer.ModelFolder, texts: list[str], max_length: int,
                    device: str) -> np.ndarray:
    tokenizer, model = transformer.load(folder, device)
    return transformer.encode(tokenizer, model, texts, max_length, device=device)[0]

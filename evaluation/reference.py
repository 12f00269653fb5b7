"""The Doc2Vec space the neighbourhood metric compares the learned spaces against."""
from __future__ import annotations

from pathlib import Path

from gensim.models.doc2vec import Doc2Vec

from data.items import InputError
from data.workdir import DOC2VEC_MODEL
from models import Vocabulary


def doc2vec_model_path(work_dir: str | Path, checkpoint: str | Path, vocab: Vocabulary
                       ) -> tuple[Path | None, str]:
    """(path of the work folder's Doc2Vec model, "") or (None, why the metric is skipped).

    A model whose vocabulary is not the checkpoint's is an error, not a skip: its space is not
    the one the checkpoint was trained to preserve, so the number would be meaningless.
    """
    path = Path(work_dir) / DOC2VEC_MODEL
    if not path.is_file():
        return None, (f"no Doc2Vec model at {path} (pass --work-dir of the run that trained the "
                      "checkpoint)")
    words = Doc2Vec.load(str(path)).wv.index_to_key
    theirs, ours = Vocabulary(words).fingerprint(), vocab.fingerprint()
    if theirs != ours:
        raise InputError(f"{checkpoint}: the checkpoint's vocabulary ({len(vocab.words)} words, "
                           f"fingerprint {ours}) is not that of the Doc2Vec model {path} "
                           f"({len(words)} words, {theirs}): pass --work-dir of the run that "
                           "trained this checkpoint")
    return path, ""


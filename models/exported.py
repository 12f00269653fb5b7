"""The image and text encoders on their own, as export_encoders.py writes them: plain state dicts
in safetensors files (no pickle: loading runs no code), their settings as JSON, the vocabulary.

    image_encoder.safetensors   ImageEncoder.state_dict()
    text_encoder.safetensors    TextEncoder.state_dict()
    config.json                 shapes, and how an image and a text are prepared for them
    vocab.json                  the words; word i is row 3 + i (rows 0, 1, 2: PAD, START, END)
A transformer text branch (--text-encoder hf) is written the same way: config.json then also
holds the transformer's configuration and pooling, and vocab.json its tokenizer (the
tokenizer's own JSON and the length limit), so loading needs no model folder.

Embedding here is what evaluate_retrieval.py does: an image resized to image_size x image_size
by its backbone's rule (squashed, not cropped, for the ResNets; shorter side and centre crop
for a backbone with timm's rule), normalised by the mean and std of its backbone's entry
(models/backbones.py), all of which config.json records (an older config.json without the
rule, or with the sentence that described squashing, means squash); a text preprocessed as in training, cut to
max_tokens words of the vocabulary between START and END.
"""
from __future__ import annotations

import errno
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file
from torch import Tensor

from common import records as R
from common.errors import InputError
from common.files import NotRegularFile, kind_of, open_regular
from common.workdir import atomic_write
from data.datasets.settings import TOKEN_FLAGS
from data.images.read import (INTERPOLATIONS, OLD_RESIZE_TEXT, RESIZES, Preprocessing, Resize,
                              read_image)
from data.text.preprocess import preprocess
from models.checkpoint import state_mismatch
from models.image import ImageEncoder
from models.hf_text import HFTextEncoder, HFTokenizer, vocabulary_from_state
from models.text import TextEncoder
from models.vocab import Vocabulary, pad_batch

FORMAT = 1
IMAGE_FILE, TEXT_FILE = "image_encoder.safetensors", "text_encoder.safetensors"
CONFIG_FILE, VOCAB_FILE = "config.json", "vocab.json"
FILES = (IMAGE_FILE, TEXT_FILE, CONFIG_FILE, VOCAB_FILE)
# The settings a text or an image must be prepared with, copied from the training record.
PREPARATION = ("image_size", "max_tokens", *TOKEN_FLAGS)
REMAKE = "export the encoders again with export_encoders.py"
_CHANNEL = R.list_of(R.of(float), length=3)
RESIZE_SCHEMA = {
    "rule": R.one_of(*RESIZES), "interpolation": R.one_of(*INTERPOLATIONS),
    "crop_pct": R.of(float, check=lambda v: 0 < v <= 1, want="a number above 0 and at most 1"),
}


def _resize_rule(value: object) -> str | None:
    """Resize.record(), or the sentence older exports wrote for the only rule there was."""
    if value == OLD_RESIZE_TEXT:
        return None
    if not isinstance(value, dict):
        return f"is {str(value)[:60]!r}, not an object of rule, interpolation and crop_pct"
    extra = sorted(set(value) - set(RESIZE_SCHEMA))
    if extra:
        return f"has the unknown field {extra[0]!r}"
    return R.problem(value, RESIZE_SCHEMA, "image_resize.")

CONFIG_SCHEMA = {
    "format": R.one_of(FORMAT), "arch": R.of(str), "embed_dim": R.whole(1), "word_dim": R.whole(1),
    "hidden": R.whole(1), "vocab_size": R.whole(3), "image_size": R.whole(1),
    "max_tokens": R.whole(1), "max_sentences": R.optional(R.whole(0)), "max_chars": R.whole(0),
    "keep_unicode": R.of(bool), "image_mean": _CHANNEL,
    "image_std": R.list_of(R.of(float, check=lambda v: v > 0, want="a positive number"), length=3),
    # Filled in with OLD_RESIZE_TEXT (squash) when an export older than the field lacks it.
    "image_resize": _resize_rule,
}


def write_encoders(folder: str | Path, image: ImageEncoder, text: TextEncoder | HFTextEncoder,
                   vocab: Vocabulary | HFTokenizer,
                   preparation: dict, source: dict) -> list[Path]:
    """The four files in `folder` (created), each written atomically; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(text, HFTextEncoder):
        shape = {"word_dim": text.hidden, "hidden": text.hidden, "vocab_size": len(vocab),
                 "text_encoder": "hf", "text_config": text.hf_config(),
                 "text_pooling": text.pooling}
    else:
        shape = {"word_dim": text.embedding.embedding_dim, "hidden": text.gru.hidden_size,
                 "vocab_size": text.embedding.num_embeddings}
    config = {"format": FORMAT, "arch": image.arch, "embed_dim": image.embed_dim, **shape,
              **{k: preparation[k] for k in PREPARATION},
              "image_mean": list(image.entry.preprocessing.mean),
              "image_std": list(image.entry.preprocessing.std),
              "image_resize": image.entry.preprocessing.resize.record(),
              "source": source}
    for name, module in ((IMAGE_FILE, image), (TEXT_FILE, text)):
        # contiguous copies: safetensors refuses views and tensors sharing memory
        state = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
        atomic_write(folder / name, lambda tmp, s=state: _save(s, tmp))
    for name, obj in ((CONFIG_FILE, config), (VOCAB_FILE, vocab.to_state())):
        text_out = json.dumps(obj, indent=1, ensure_ascii=False) + "\n"
        atomic_write(folder / name, lambda tmp, t=text_out: Path(tmp).write_text(t, encoding="utf-8"))
    return [folder / name for name in FILES]


def _save(state: dict[str, Tensor], tmp: str) -> None:
    try:
        save_file(state, tmp, metadata={"format": "pt"})
    except SafetensorError as e:
        # Its write errors carry the OS error code in the text: a full disk gets the usual line.
        code = re.search(r"(?:code:|os error) (\d+)", str(e))
        raise OSError(int(code.group(1)) if code else errno.EIO, str(e)) from None


def _state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise InputError(f"{path}: not found: pass the folder export_encoders.py wrote")
    try:
        with open_regular(path) as f:
            state = load(f.read())
    except NotRegularFile as e:
        raise InputError(f"{path}: is {kind_of(e)}, not a regular file: {REMAKE}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({type(e).__name__}): "
                         f"{REMAKE}") from None
    # Weights that are not finite embed every input as NaN: a damaged file, not a model.
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()),
               None)
    if bad is not None:
        raise InputError(f"{path}: tensor {bad!r} holds NaN or infinite values: {REMAKE}")
    return state


def _load(module: torch.nn.Module, path: Path) -> None:
    state = _state(path)
    wrong = state_mismatch(module.state_dict(), state)
    if wrong:
        raise InputError(f"{path}: does not fit config.json ({wrong}): {REMAKE}")
    module.load_state_dict(state)


@dataclass
class Encoders:
    """The exported encoders, in eval mode on `device`, with what embedding needs."""
    image: ImageEncoder
    text: TextEncoder
    vocab: Vocabulary
    config: dict
    device: torch.device

    @torch.no_grad()
    def embed_images(self, paths: Sequence[str | os.PathLike], batch_size: int = 64) -> Tensor:
        """[N, embed_dim] unit rows, one per image file, decoded `batch_size` at a time."""
        size, out = self.config["image_size"], []
        # As config.json says: the export is read as written, whatever the table says now.
        prep = Preprocessing(tuple(self.config["image_mean"]), tuple(self.config["image_std"]),
                             self.resize)
        for s in range(0, len(paths), batch_size):
            batch = torch.stack([read_image(str(p), size, prep.resize)
                                 for p in paths[s:s + batch_size]])
            out.append(self.image(prep.normalize(batch.to(self.device))))
        return torch.cat(out) if out else torch.empty(0, self.image.embed_dim, device=self.device)

    @property
    def resize(self) -> Resize:
        """How config.json says an image is resized (checked when it was loaded)."""
        return Resize.from_record(self.config["image_resize"])

    def tokens(self, text: str) -> list[int]:
        """The token ids the text encoder reads for `text` (START ... END)."""
        c = self.config
        words = preprocess(text, c["max_sentences"] or None, c["max_chars"], c["keep_unicode"])
        return self.vocab.encode(words, c["max_tokens"])

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """[N, embed_dim] unit rows, one per text; a text with no word of the vocabulary is
        refused (its embedding would be that of an empty text)."""
        encoded = [self.tokens(t) for t in texts]
        empty = [t for t, e in zip(texts, encoded) if len(e) == 2]
        if empty:
            shown = " ".join(empty[0].split())[:60]
            raise InputError(f"text {shown!r} has no word of the vocabulary after preprocessing: "
                             "write it with words the model was trained on")
        ids, lengths = pad_batch(encoded)
        return self.text(ids.to(self.device), lengths)


def load_encoders(folder: str | Path, device: str | torch.device = "cpu") -> Encoders:
    """The encoders export_encoders.py wrote to `folder` (no pretrained weights are fetched)."""
    folder = Path(folder)
    config = R.read_json(folder / CONFIG_FILE, REMAKE)
    if isinstance(config, dict):   # written before the rule was recorded: the only one, squash
        config.setdefault("image_resize", OLD_RESIZE_TEXT)
    config = R.check(config, CONFIG_SCHEMA, folder / CONFIG_FILE, REMAKE)
    words = R.read_json(folder / VOCAB_FILE, REMAKE)
    hf = config.get("text_encoder") == "hf"
    try:
        vocab = vocabulary_from_state(words)
    except Exception as e:  # noqa: BLE001 - a damaged tokenizer JSON can raise anything
        raise InputError(f"{folder / VOCAB_FILE}: {' '.join(str(e).split())[:160]}: "
                         f"{REMAKE}") from None
    if hf != isinstance(vocab, HFTokenizer):
        raise InputError(f"{folder / VOCAB_FILE}: not the vocabulary of the text encoder "
                         f"config.json describes: {REMAKE}")
    if len(vocab) != config["vocab_size"]:
        raise InputError(f"{folder / VOCAB_FILE}: {len(vocab) - 3} words but config.json says "
                         f"{config['vocab_size'] - 3}: export the encoders again")
    try:
        image = ImageEncoder(config["arch"], config["embed_dim"], pretrained=False)
    except ValueError as e:   # an arch this version does not know
        raise InputError(f"{folder / CONFIG_FILE}: {e}: {REMAKE}") from None
    if hf:
        try:
            text = HFTextEncoder(config["text_config"], config["embed_dim"],
                                 config.get("text_pooling", "mean"))
        except Exception as e:  # noqa: BLE001 - a damaged configuration can raise anything
            raise InputError(f"{folder / CONFIG_FILE}: its transformer configuration does not "
                             f"build ({type(e).__name__}): {REMAKE}") from None
    else:
        text = TextEncoder(config["vocab_size"], config["word_dim"], config["hidden"],
                           config["embed_dim"])
    _load(image, folder / IMAGE_FILE)
    _load(text, folder / TEXT_FILE)
    device = torch.device(device)
    return Encoders(image.to(device).eval(), text.to(device).eval(), vocab, config, device)

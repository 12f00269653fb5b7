"""Take the image and text encoders out of a trained checkpoint, to use them without the trainer.

    python export_encoders.py --checkpoint RUN/best.pt --out DIR

DIR gets image_encoder.safetensors and text_encoder.safetensors (each encoder's plain state
dict), config.json (shapes, and how images and texts are prepared: image size, normalisation,
the text preprocessing of training) and vocab.json (the words of the text encoder's rows).
models/exported.py loads them: load_encoders(DIR).embed_images([...]) and .embed_texts([...])
give the embeddings evaluate_retrieval.py computes.
"""
import argparse
from pathlib import Path

from cli import HelpFormatter, run_main
from common.places import own_folder
from common.workdir import check_writable
from evaluation.embed import with_checkpoint_defaults
from models.checkpoint import load_checkpoint, rebuild
from models.exported import PREPARATION, write_encoders

# What an export of a version before the folder's .made-by marker holds.
ENCODER_FILES = ("image_encoder.safetensors", "text_encoder.safetensors")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a best.pt (or last.pt) the trainer wrote")
    p.add_argument("--out", required=True, help="the folder to write the four files to")
    args = p.parse_args()
    if Path(args.out).exists() and not Path(args.out).is_dir():
        p.error(f"--out {args.out} is a file: pass a folder")
    own_folder(args.out, "export_encoders.py", "--out", ENCODER_FILES, make=False)
    return args


def main() -> None:
    args = parse_args()
    state = load_checkpoint(args.checkpoint)
    own_folder(args.out, "export_encoders.py", "--out", earlier=ENCODER_FILES)
    check_writable(args.out, folder=True, fix="pass --out somewhere writable")
    model, vocab = rebuild(state, path=args.checkpoint)
    # The preprocessing flags resolved as evaluate_retrieval.py resolves them.
    trained = with_checkpoint_defaults(argparse.Namespace(), state)
    preparation = {k: getattr(trained, k) for k in PREPARATION}
    source = {"checkpoint": str(Path(args.checkpoint).resolve()), "epoch": state.get("epoch"),
              "select_by": state.get("select_by", "loss"), "val_loss": state.get("val_loss"),
              "val_rsum": (state.get("val_recall") or {}).get("rsum")}
    for path in write_encoders(args.out, model.image, model.text, vocab, preparation, source):
        print(path)


if __name__ == "__main__":
    run_main(main)

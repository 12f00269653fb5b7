"""train_throughput.py --setups text: the trainer's step with a transformer text branch
(--text-encoder hf, fine-tuned and --freeze-text) against the GRU's, the image side held the same
and cheap (--frozen-image: the backbone's stored features, only the image head trains), so that
the text branch is what differs and what dominates.

The three models are built by the trainer's own code (training.text_branch: the tokenizer, the
pretrained transformer, the model's fields, the optimizer's groups with the transformer at
--text-lr) and timed with train_throughput's step and rounds on the same batches: the same
items, neighbours and random texts, the same stored image features; only the token ids differ
(the GRU's word ids, or the transformer tokenizer's ids of the same words, as the trainer feeds
them).
"""
from __future__ import annotations

import argparse

import torch

import config
from models import ModelConfig, Precision, build_model
from models.image_source import ImageSource
from training.data import PairDataset
from training.text_branch import model_fields, param_groups, pretrained_body, text_vocabulary

GRU, TUNED, FROZEN = "text: GRU", "text: transformer fine-tuned", "text: transformer --freeze-text"
NAMES = (GRU, TUNED, FROZEN)


def branch_args(args: argparse.Namespace, encoder: str, freeze: bool = False) -> argparse.Namespace:
    """The trainer's text flags for one of the three branches."""
    return argparse.Namespace(text_encoder=encoder, text_model=args.text_model, text_lr=args.text_lr,
                              freeze_text=freeze, text_pooling=config.TEXT_POOLING)


def frozen_image_model(args, flags: argparse.Namespace, vocab, vectors, device: torch.device,
                       precision: str):
    """The model and optimizer the trainer builds for `flags` under --frozen-image (its backbone
    out of training) as training.build does it: the transformer at --text-lr, the rest at the LR."""
    shape = ModelConfig(args.arch, args.embed_dim, vectors.shape[1], args.gru_hidden, len(vocab),
                        **model_fields(flags))
    model = build_model(shape, vectors, text_body=pretrained_body(flags))
    model = Precision.resolve(device, precision).prepare(model)
    model.train()
    model.image.freeze_backbone()
    optimizer = torch.optim.Adam(param_groups(model, flags), lr=config.LR,
                                 weight_decay=config.WEIGHT_DECAY)
    return model, optimizer


def compare(args, bench, docs, words, image_ids, read, neighbors, vocab, vectors, gru_tokens,
            device: torch.device) -> tuple[dict, dict]:
    """({setup: timing}, summary) of the three text branches; `bench`: train_throughput's
    batches, on_device, as_features, stepper and interleaved; `words(doc)`: the words the GRU's
    tokens were made of."""
    hf_vocab = text_vocabulary(branch_args(args, "hf"), [])
    hf_tokens = [hf_vocab.encode(words(d), config.MAX_TOKENS) for d in docs]
    batches = {}
    for name, tokens in (("gru", gru_tokens), ("hf", hf_tokens)):
        ds = PairDataset(image_ids, tokens, read)
        ds.set_neighbors(neighbors)
        loader = bench.batches(ds, args.batch_size, args.workers, args.seed, device)
        batches[name] = [bench.on_device(next(loader), device) for _ in range(4)]
        del loader
    for g, h in zip(batches["gru"], batches["hf"]):   # the same items, neighbours and random texts
        assert torch.equal(g["image_ids"], h["image_ids"]) and torch.equal(g["has_nb"], h["has_nb"])

    runs, models = {}, {}
    for name, flags in ((GRU, branch_args(args, "gru")), (TUNED, branch_args(args, "hf")),
                        (FROZEN, branch_args(args, "hf", freeze=True))):
        model, optimizer = frozen_image_model(args, flags, hf_vocab if flags.text_encoder == "hf"
                                              else vocab, vectors, device, args.precision)
        models[name] = model
        stored = ImageSource.frozen(model.image.entry, args.image_size, None, {})
        runs[name] = (bench.stepper(model, optimizer, device, args.precision, stored), None)
    # One backbone's stored features for all three (each only runs its image head on them).
    features = [bench.as_features(models[GRU], b, device) for b in batches["gru"]]
    for name in runs:
        source = batches["gru"] if name == GRU else batches["hf"]
        runs[name] = (runs[name][0], [{**f, "tokens": s["tokens"], "lengths": s["lengths"]}
                                      for f, s in zip(features, source)])
    timing = bench.interleaved(runs, args.warmup, args.steps, args.rounds, device)
    trained = {name: sum(p.numel() for p in m.text.parameters() if p.requires_grad)
               for name, m in models.items()}
    summary = {"text_model": args.text_model, "trained_text_parameters": trained,
               "mean_tokens": {name: float(torch.cat([b["lengths"] for b in batches[name]]).float().mean())
                               for name in batches},
               "texts_per_step": sum(len(b["lengths"]) for b in batches["gru"]) / len(batches["gru"])}
    return timing, summary


def ratios(setups: dict) -> dict:
    if not set(NAMES) <= set(setups):
        return {}
    gru = setups[GRU]["ms_per_step"]
    return {"transformer fine-tuned / GRU step time": setups[TUNED]["ms_per_step"] / gru,
            "transformer --freeze-text / GRU step time": setups[FROZEN]["ms_per_step"] / gru}


def table_lines(results: dict) -> list[str]:
    """The comparison's rows, below train_throughput's table."""
    s, summary = results["setups"], results.get("text_branch")
    if summary is None or not set(NAMES) <= set(s):
        return []
    trained, tokens = summary["trained_text_parameters"], summary["mean_tokens"]
    lines = ["", f"Text branch, image side frozen (stored features), {summary['texts_per_step']:.0f} "
             f"texts per step; transformer: {summary['text_model']}", "",
             "| text branch | ms/step | items/s | step time / GRU's | trained text parameters | mean tokens per text |",
             "|---|---|---|---|---|---|"]
    for name in NAMES:
        r = s[name]
        lines.append(f"| {name[6:]} | {r['ms_per_step']:,.1f} | {r['items_per_s']:,.1f} | "
                     f"{r['ms_per_step'] / s[GRU]['ms_per_step']:.2f} | {trained[name]:,} | "
                     f"{tokens['gru' if name == GRU else 'hf']:.1f} |")
    return lines

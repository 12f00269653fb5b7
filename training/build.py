"""The trainer's parts, made from its flags and the prepared data: the model (its backbone
frozen under --frozen-image), the optimizer and its schedule, the objectives, the datasets and
the image mode its checkpoints record."""
from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from losses import CrossModalObjective, LossConfig
from models import CrossModalModel, ModelConfig, Precision, build_model

from .data import PairDataset
from .distributed import Context
from .prepare import TrainingData
from .text_branch import model_fields, param_groups, pretrained_body


def build_trainee(args: argparse.Namespace, data: TrainingData, precision: Precision) -> CrossModalModel:
    """The model to train. Under --frozen-image its backbone is the one that made the features
    (drawn first under the same seed as fine-tuning draws it, so the heads start alike), kept
    out of training and in eval mode; the checkpoints then hold it."""
    image = data.image_settings
    config = ModelConfig(arch=image.arch, embed_dim=args.embed_dim, word_dim=data.word_vectors.shape[1],
                         hidden=args.gru_hidden, vocab_size=len(data.vocab), image_head=image.image_head,
                         **model_fields(args))
    frozen = data.images.features
    model = build_model(config, data.word_vectors, pretrained=not (image.no_pretrained or frozen),
                        weights_file=None if frozen else image.image_weights,
                        text_body=pretrained_body(args))
    if frozen:
        model.image.backbone.load_state_dict(data.backbone)
        model.image.freeze_backbone()
    if getattr(args, "freeze_text", False) and args.frozen_text_cache:
        model.text.keep_pooled(args.frozen_text_cache)
    return precision.prepare(model)


def optimization(model: nn.Module, args: argparse.Namespace, mode: str = "min"):
    """Adam over the trained parameters and the release's plateau schedule on the followed
    validation value (`mode`: "min" for the loss, "max" for rsum; --select-by)."""
    optimizer = torch.optim.Adam(param_groups(model, args), lr=args.lr,
                                 weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, patience=args.lr_patience)
    return optimizer, scheduler


def objectives(args: argparse.Namespace) -> tuple[CrossModalObjective, CrossModalObjective]:
    """The training objective, and the release's validation loss: L_i2t alone, not tiled."""
    config = LossConfig.from_args(args)
    return CrossModalObjective(config), CrossModalObjective(config.for_validation())


def datasets(data: TrainingData) -> tuple[PairDataset, PairDataset]:
    return (PairDataset([d.item for d in data.train_docs], data.train_tokens, data.read, data.groups),
            PairDataset([d.item for d in data.val_docs], data.val_tokens, data.read, data.groups))


def image_mode(data: TrainingData) -> dict:
    return data.images.record()


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """DistributedDataParallel over several processes (a frozen backbone has no gradient to
    reduce and is left out by it), the model itself otherwise."""
    if ctx.world == 1:
        return model
    return DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

"""Step 5: train the cross-modal model with the semantic-neighbourhood constraints.

    python train_cross_modal_retrieval_model.py W_SYM W_IMG W_TEXT [flags]

L = L_i2t + W_SYM * L_sym + W_IMG * L_img + W_TEXT * L_text; `1 0.3 0.2` are the paper's
weights, `1 0 0` the baseline without its constraints. The objective is the release's by default
(--loss angular, --negatives release: see losses/objective.py); all four terms are logged at every
step. Several GPUs: torchrun --nproc_per_node N.
"""
import time
from dataclasses import replace

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import config
from cli import check_flags, parser, real, run_main, whole
from data.image_cache import MODES
from data.items import InputError
from losses import LOSSES, NEGATIVES, CrossModalObjective, LossConfig
from models import ARCHS, ModelConfig, Precision, build_model
from models.checkpoint import check_resume, load_resume, save_checkpoint
from models.precision import PRECISIONS
from training import distributed
from training.data import VALIDATION_SEED, PairDataset, epoch_order, make_loader, with_random_texts
from training.prepare import prepare
from training.run_folder import LogWriter, check_run_name, claim, log_folder
from training.settings import check_resume_settings, data_problem, negatives_problem, settings_record
from training.step import StepLog, objective_inputs, train_step
from training.validate import SELECT_BY, Selection, log_validation, validation_recall


def parse_args(argv: list[str] | None = None):
    p = parser(__doc__)
    p.add_argument("w_sym", type=real(0), help="weight of L_sym (text -> its image)")
    p.add_argument("w_img", type=real(0), help="weight of L_img (image -> a text-neighbour's image)")
    p.add_argument("w_text", type=real(0), help="weight of L_text (text -> a neighbour's text)")
    g = p.add_argument_group("model (config.py)")
    g.add_argument("--arch", choices=sorted(ARCHS), default=config.ARCH)
    g.add_argument("--no-pretrained", action="store_true", help="random image weights, not ImageNet")
    g.add_argument("--image-weights", default=None, help="a local state dict for the ResNet")
    g.add_argument("--image-size", type=int, default=config.IMAGE_SIZE)
    g.add_argument("--embed-dim", type=int, default=config.EMBED_DIM)
    g.add_argument("--gru-hidden", type=int, default=config.GRU_HIDDEN)
    g.add_argument("--max-tokens", type=int, default=config.MAX_TOKENS)
    g = p.add_argument_group("training (config.py)")
    g.add_argument("--batch-size", type=int, default=config.BATCH_SIZE, help="per process")
    g.add_argument("--epochs", type=whole(0), default=config.MAX_EPOCHS, help="a cap on the epochs")
    g.add_argument("--patience", type=whole(1), default=config.PATIENCE,
                   help="stop after this many epochs without a better validation value (--select-by)")
    g.add_argument("--select-by", choices=SELECT_BY, default=config.SELECT_BY,
                   help="what best.pt, early stopping and the plateau scheduler follow: the "
                        "validation L_i2t loss (the release's rule) or the validation rsum (VSE++'s)")
    g.add_argument("--run-seed", type=whole(0), default=None,
                   help="seed of the initial weights, the epoch order, the neighbour draws and the "
                        "flips (default: --seed); --seed also fixes the validation slice, which "
                        "Doc2Vec and the kNN were built without, so repeat a run with this one")
    g.add_argument("--lr", type=real(0, above=True), default=config.LR)
    g.add_argument("--weight-decay", type=real(0), default=config.WEIGHT_DECAY)
    g.add_argument("--lr-patience", type=whole(0), default=config.LR_PATIENCE)
    g.add_argument("--loss", choices=LOSSES, default=config.LOSS,
                   help="angular: the N-pair form the release trains; angular-hinge: the hinge "
                        "form the paper writes, one negative per anchor; triplet: VSE++'s hinge")
    g.add_argument("--negatives", choices=NEGATIVES, default=config.NEGATIVES,
                   help="release: the release's negative sets (random training texts, every batch "
                        "image, each counted B times); clean: the batch's rows of other images")
    g.add_argument("--tan2-alpha", type=real(0, above=True), default=config.TAN2_ALPHA)
    g.add_argument("--margin", type=real(0), default=config.MARGIN)
    g.add_argument("--hardest-negative", action="store_true", default=config.HARDEST_NEGATIVE)
    g.add_argument("--neighbor-pool", type=whole(1), default=config.NEIGHBOR_POOL)
    g.add_argument("--precision", choices=PRECISIONS, default=config.PRECISION,
                   help="bf16 autocast + channels_last on CUDA; the CPU always runs fp32")
    g.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="default: cuda when present")
    g.add_argument("--max-bad-images", type=real(0, 1), default=config.MAX_BAD_IMAGES,
                   help="share of unreadable images tolerated")
    g.add_argument("--image-cache", choices=MODES, default=config.IMAGE_CACHE,
                   help="read images from prepare_image_cache.py's cache: auto (when it is up to "
                        "date), require, or off (decode the files at every step)")
    g.add_argument("--run-name", default=config.RUN_NAME,
                   help="the log folder's name under WORK_DIR/models (default: from the weights, "
                        "l_i2t_l_sym_..._l_img_..._l_text_..., as the authors)")
    g.add_argument("--log-dir", default=None, help="the log folder's full path, instead of --run-name")
    g.add_argument("--resume", action="store_true", help="continue from last.pt in the log folder")
    g.add_argument("--overwrite", action="store_true",
                   help="remove an earlier run's checkpoints and logs from the log folder first "
                        "(without it, or --resume, a used folder is refused)")
    args = p.parse_args(argv)
    if args.run_seed is None:
        args.run_seed = args.seed
    check_flags(p, args, "image_size", "embed_dim", "gru_hidden", "max_tokens", "batch_size", "neighbor_pool")
    if args.resume and args.overwrite:
        p.error("--resume continues the folder's run and --overwrite replaces it: pass one")
    if args.run_name is not None and args.log_dir:
        p.error("--run-name names a folder under WORK_DIR/models and --log-dir gives its path: "
                "pass one")
    bad_name = check_run_name(args.run_name)
    if bad_name:
        p.error(bad_name)
    no_negative = negatives_problem(args.batch_size, args.negatives, args.w_sym, args.w_img)
    if no_negative:
        p.error(no_negative)
    return args


def validate(model, ds, args, ctx, precision: Precision, objective: CrossModalObjective) -> float:
    """Mean validation L_i2t, as the authors: against B random validation texts drawn under a
    fixed seed (the same every epoch) with the release's negatives, in-batch ones with clean.
    `objective` has zero weights: its total is L_i2t."""
    model.eval()
    # Every document once over all ranks: unequal shards are fine, as the unwrapped model runs here.
    order = list(range(ctx.rank, len(ds), ctx.world))
    release = objective.config.negatives == "release"
    if release:
        order = with_random_texts(order, len(ds), args.batch_size, [VALIDATION_SEED, ctx.rank])
    total, count = torch.zeros((), dtype=torch.float64, device=ctx.device), 0  # read once, at the end
    # A fixed seed for what the objective draws (angular-hinge), kept apart from training's.
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(VALIDATION_SEED)
        for b in make_loader(ds, order, args.batch_size, args.workers, ctx.device.type == "cuda", False):
            if len(b["image_ids"]) < 2 and not release:
                continue     # no in-batch negative
            loss, _ = objective(*objective_inputs(model, b, precision, train=False))
            total += loss.double() * len(b["image_ids"])
            count += len(b["image_ids"])
    total, count = distributed.all_sum([total.item(), count], ctx)
    return total / max(count, 1)


def main() -> None:
    args = parse_args()
    ctx = distributed.setup(args.device)
    torch.manual_seed(args.run_seed)
    # The folder first: a used or locked one stops the run before any data is read.
    log_dir = log_folder(args)
    folder = claim(log_dir, args.resume, args.overwrite, ctx.main)
    resumed = (log_dir / "last.pt", load_resume(log_dir / "last.pt", ctx.device)) if args.resume else None
    config_record = settings_record(args)
    if resumed is not None:   # before any data is read: only --epochs and --patience may change
        notes = check_resume_settings(resumed[1].get("config"), config_record, resumed[0])
        if ctx.main and notes:
            print("\n".join(notes))
    data = prepare(args, ctx, resumed)
    precision = Precision.resolve(ctx.device, args.precision)
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed image size: pick the fastest convolutions once

    model_config = ModelConfig(arch=args.arch, embed_dim=args.embed_dim, word_dim=data.word_vectors.shape[1],
                               hidden=args.gru_hidden, vocab_size=len(data.vocab))
    model = precision.prepare(build_model(model_config, data.word_vectors, pretrained=not args.no_pretrained,
                                          weights_file=args.image_weights))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    select = Selection(args.select_by)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=select.mode, patience=args.lr_patience)
    start, step, wrote_best = 0, 0, False
    if resumed is not None:
        state = check_resume(resumed[1], resumed[0], model_config, data.vocab.fingerprint())
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        select = Selection.resumed(args.select_by, state, resumed[0])
        start, step = state["epoch"] + 1, state["step"]
        if ctx.main:
            print(f"resuming {log_dir / 'last.pt'} after epoch {state['epoch']}")
    net = DistributedDataParallel(model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None) \
        if ctx.world > 1 else model
    writer = LogWriter(log_dir, purge_step=step + 1 if args.resume else None) if ctx.main else None
    log = StepLog(writer)
    if resumed is not None:   # named if the loss diverges: the last checkpoint with finite weights
        log.last_checkpoint = f"{resumed[0]} (epoch {start - 1})"
    loss_config = LossConfig.from_args(args)
    objective = CrossModalObjective(loss_config)
    # The release's validation loss: L_i2t alone, not tiled.
    val_objective = CrossModalObjective(replace(loss_config, w_sym=0.0, w_img=0.0, w_text=0.0, tiled=False))
    release = loss_config.negatives == "release"
    train_ds = PairDataset([d.item for d in data.train_docs], data.train_tokens, data.read, data.groups)
    val_ds = PairDataset([d.item for d in data.val_docs], data.val_tokens, data.read, data.groups)
    no_negative = data_problem(len(train_ds), len(val_ds), args.batch_size, ctx.world, loss_config.negatives)
    if no_negative:
        raise InputError(no_negative)

    epochs = tqdm(range(start, args.epochs), desc="epochs", unit="epoch", initial=start,
                  total=args.epochs, disable=not ctx.main)
    for epoch in epochs:
        if select.since_best >= args.patience:
            break
        torch.manual_seed(args.run_seed * 100_003 + epoch)  # the epoch's flips, same on resume
        train_ds.set_neighbors(data.sampler.sample(args.run_seed, epoch))
        order = epoch_order(len(train_ds), args.run_seed, epoch, ctx.rank, ctx.world)
        if release:   # each batch's random training texts, drawn per epoch: the same on resume
            order = with_random_texts(order, len(train_ds), args.batch_size, [args.run_seed, epoch, ctx.rank, 13])
        loader = make_loader(train_ds, order, args.batch_size, args.workers, ctx.device.type == "cuda",
                             drop_last=len(order) > args.batch_size)
        model.train()
        t0, seen, loss_sum = time.time(), 0, 0.0   # loss_sum stays on the device: no wait per step
        for b in tqdm(loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not ctx.main):
            loss, parts = train_step(net, optimizer, b, precision, objective)
            loss_sum = loss_sum + loss
            step += 1
            seen += len(b["image_ids"]) * ctx.world
            log.add(step, loss, parts, optimizer.param_groups[0]["lr"])
        log.flush()
        trained_s, t1 = time.time() - t0, time.time()
        val = validate(model, val_ds, args, ctx, precision, val_objective)
        log.check(step, "val_loss", val, optimizer.param_groups[0]["lr"])   # before any save
        t2 = time.time()
        recall = validation_recall(model, data.items, data.val_docs, data.val_tokens, data.read,
                                   args.image_size, precision, args.batch_size, ctx)
        recall_s, epoch_s = time.time() - t2, time.time() - t0
        scheduler.step(select.value(val, recall))
        improved = select.update(select.value(val, recall))
        if ctx.main:
            log_validation(writer, step, val, recall)
            state = {"model": model.state_dict(), "model_config": model_config.to_dict(), "vocab": data.vocab.to_state(),
                     "vocab_fingerprint": data.vocab.fingerprint(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch, "step": step, **select.state(),
                     "val_loss": val, "val_recall": recall, "config": config_record,
                     "provenance": data.provenance}
            # best.pt first: a disk that fills between the two leaves last.pt at the epoch
            # before, which --resume repeats, rather than a last.pt whose best.pt is missing.
            if improved:
                save_checkpoint(state, log_dir / "best.pt")
                wrote_best = True
            save_checkpoint(state, log_dir / "last.pt")
            log.last_checkpoint = f"{log_dir / 'last.pt'} (epoch {epoch})"
            rate = seen / max(trained_s, 1e-9)
            mean_loss = float(loss_sum) / max(len(loader), 1)
            epochs.write(f"epoch {epoch}: train loss {mean_loss:.4f} (mean), val loss {val:.4f}, "
                         f"val rsum {recall['rsum']:.1f}{' (best)' if improved else ''}, "
                         f"{rate:.1f} items/s; validation loss {t2 - t1:.1f}s, recall {recall_s:.1f}s "
                         f"({100 * recall_s / max(epoch_s, 1e-9):.1f}% of the epoch)")
    if ctx.main:
        writer.close()
        if select.since_best >= args.patience:
            print(f"stopped early: no better validation {select.by} for {args.patience} epochs")
        # Only a best.pt of this run: written now, or earlier in the run --resume continues.
        if wrote_best or (resumed is not None and (log_dir / "best.pt").is_file()):
            print(log_dir / "best.pt")
        elif resumed is not None:   # e.g. best.pt removed by hand: say what is there instead
            print(f"no best.pt in {log_dir}: the run's last.pt is after epoch {start - 1} and no "
                  f"epoch since improved on its best validation {select.by} (--epochs {args.epochs})")
        else:
            print(f"no epoch was trained (--epochs {args.epochs}): no checkpoint written")
    folder.release()
    distributed.teardown(ctx)


if __name__ == "__main__":
    run_main(main)

"""Step 5: train the cross-modal model with the semantic-neighbourhood constraints.

    python train_cross_modal_retrieval_model.py W_SYM W_IMG W_TEXT [flags]

L = L_i2t + W_SYM * L_sym + W_IMG * L_img + W_TEXT * L_text; `1 0.3 0.2` are the paper's
weights, `1 0 0` the baseline without its constraints. The objective is the release's by default
(--loss angular, --negatives release: see losses/objective.py); all four terms are logged at every
step. Several GPUs: torchrun --nproc_per_node N.

--frozen-image trains the image head and the text branch on the backbone's features made once by
prepare_image_features.py (step 4b): cheap runs for tuning the weights (tune_weights.py), whose
chosen weights are then trained fine-tuned (tune_weights.py --finetune-chosen).

--then-evaluate "FLAGS" evaluates the run's best.pt after training, in the same process, as
`evaluate_retrieval.py --checkpoint LOG_DIR/best.pt FLAGS` would (the same numbers, one start of
torch and the libraries fewer: tune_weights.py evaluates each run on validation this way).
"""
import shlex
import time

import torch
from tqdm import tqdm

from cli import check_flags, parser, real, run_main, whole
from common.errors import InputError
import config
from data.images.cache import MODES
from losses import LOSSES, NEGATIVES, Weights
from models import HEADS, Precision
from models.backbones import CHOICES as ARCH_CHOICES, arch_name
from models.checkpoint import Progress, check_image_mode, checkpoint_state, load_resume, restore
from models.precision import PRECISIONS
from models.settings import ImageSettings
from training import distributed
from training.build import build_trainee, datasets, image_mode, objectives, optimization, wrap
from training.loop import ending, epoch_line, epoch_loader, save_epoch, train_epoch, validate
from training.prepare import prepare
from training.run_folder import LogWriter, check_run_name, claim, log_folder
from training.settings import check_resume_settings, data_problem, settings_record
from training.step import StepLog
from training.validate import SELECT_BY, Selection, log_validation, validation_recall


def parse_args(argv: list[str] | None = None):
    p = parser(__doc__)
    p.add_argument("w_sym", type=real(0), help="weight of L_sym (text -> its image)")
    p.add_argument("w_img", type=real(0), help="weight of L_img (image -> a text-neighbour's image)")
    p.add_argument("w_text", type=real(0), help="weight of L_text (text -> a neighbour's text)")
    g = p.add_argument_group("model (config.py)")
    g.add_argument("--arch", type=arch_name, default=config.ARCH, metavar="ARCH",
                   help=f"image backbone: {ARCH_CHOICES}")
    g.add_argument("--no-pretrained", action="store_true", help="random image weights, not ImageNet")
    g.add_argument("--image-weights", default=None,
                   help="a local state dict for the backbone (a timm model: the whole model's, classifier ignored)")
    g.add_argument("--image-size", type=int, default=config.IMAGE_SIZE)
    g.add_argument("--embed-dim", type=int, default=config.EMBED_DIM)
    g.add_argument("--gru-hidden", type=int, default=config.GRU_HIDDEN)
    g.add_argument("--max-tokens", type=int, default=config.MAX_TOKENS)
    g.add_argument("--frozen-image", action="store_true", default=config.FROZEN_IMAGE,
                   help="train on the backbone's features from prepare_image_features.py (made "
                        "with the same --arch, --image-size and weights flags): only the image "
                        "head and the text branch train")
    g.add_argument("--image-head", choices=HEADS, default=config.IMAGE_HEAD,
                   help="linear: the release's; mlp: two layers, the usual head on frozen features")
    g.add_argument("--text-encoder", choices=("gru", "hf"), default=config.TEXT_ENCODER,
                   help="gru: the release's, on the Doc2Vec words; hf: a transformer from "
                        "--text-model reading the same preprocessed words with its own tokenizer")
    g.add_argument("--text-model", default=config.TEXT_MODEL,
                   help="--text-encoder hf: a Hugging Face model folder, or minilm (installed by "
                        "requirements-models.txt); nothing is downloaded")
    g.add_argument("--text-lr", type=real(0, above=True), default=config.TEXT_LR,
                   help="--text-encoder hf: the transformer's learning rate (its head trains at --lr)")
    g.add_argument("--freeze-text", action="store_true",
                   help="--text-encoder hf: keep the transformer as it is; only its head trains")
    g.add_argument("--frozen-text-cache", type=whole(0), default=config.FROZEN_TEXT_CACHE,
                   metavar="N", help="--freeze-text: keep the pooled transformer states of up to "
                   "N texts, each computed once on its own, so that later steps run only the head "
                   "(0: the transformer on every batch)")
    g.add_argument("--text-pooling", choices=("mean", "cls"), default=config.TEXT_POOLING,
                   help="--text-encoder hf: the mean of the token states, or the first token's")
    g = p.add_argument_group("training (config.py)")
    g.add_argument("--batch-size", type=int, default=config.BATCH_SIZE, help="per process")
    g.add_argument("--epochs", type=whole(0), default=config.MAX_EPOCHS, help="a cap on the epochs")
    g.add_argument("--patience", type=whole(1), default=config.PATIENCE,
                   help="stop after this many epochs without a better validation value (--select-by)")
    g.add_argument("--select-by", choices=SELECT_BY, default=None,
                   help="what best.pt, early stopping and the plateau scheduler follow: the "
                        "validation L_i2t loss (the release's rule) or the validation rsum "
                        f"(VSE++'s) (default: {config.SELECT_BY}; --resume keeps the run's own)")
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
    g.add_argument("--then-evaluate", default=None, metavar='"FLAGS"',
                   help="after training, evaluate the log folder's best.pt in this process as "
                        "evaluate_retrieval.py --checkpoint LOG_DIR/best.pt FLAGS would (e.g. "
                        "--then-evaluate=\"--split val --out val.json\"; --device defaults to the "
                        "trainer's)")
    args = p.parse_args(argv)
    if args.run_seed is None:
        args.run_seed = args.seed
    check_flags(p, args, "image_size", "embed_dim", "gru_hidden", "max_tokens", "batch_size", "neighbor_pool")
    if args.no_pretrained and args.image_weights:
        p.error("--no-pretrained and --image-weights: pass one")
    if args.freeze_text and args.text_encoder != "hf":
        p.error("--freeze-text freezes a transformer text branch: pass --text-encoder hf")
    if args.resume and args.overwrite:
        p.error("--resume continues the folder's run and --overwrite replaces it: pass one")
    if args.run_name is not None and args.log_dir:
        p.error("--run-name names a folder under WORK_DIR/models and --log-dir gives its path: "
                "pass one")
    bad_name = check_run_name(args.run_name)
    if bad_name:
        p.error(bad_name)
    no_negative = Weights.from_args(args).negatives_problem(args.batch_size, args.negatives)
    if no_negative:
        p.error(no_negative)
    if args.then_evaluate is not None:   # from here on the flags as a list
        try:
            args.then_evaluate = shlex.split(args.then_evaluate)
        except ValueError as e:
            p.error(f"--then-evaluate {args.then_evaluate!r}: {e}")
        if _given(args.then_evaluate, "--checkpoint"):
            p.error("--then-evaluate evaluates the run's own best.pt: leave --checkpoint out")
    return args


def _given(flags: list[str], name: str) -> bool:
    return any(f == name or f.startswith(name + "=") for f in flags)


def evaluation_argv(args, log_dir, device: torch.device) -> list[str]:
    """evaluate_retrieval.py's arguments for --then-evaluate, checked by its own parser now,
    before any data is read (its usage line then names this flag)."""
    import evaluate_retrieval
    flags = list(args.then_evaluate)
    if not _given(flags, "--device"):
        flags += ["--device", device.type]
    argv = ["--checkpoint", str(log_dir / "best.pt"), *flags]
    evaluate_retrieval.parse_args(argv, prog="train_cross_modal_retrieval_model.py --then-evaluate")
    return argv


def main() -> None:
    args = parse_args()
    evaluation = train(args)
    if evaluation is not None:   # rank 0, once the training's model and data are released
        import evaluate_retrieval
        print(f"evaluating: evaluate_retrieval.py {shlex.join(evaluation)}", flush=True)
        evaluate_retrieval.main(evaluation)


def train(args) -> list[str] | None:
    """Train the run; evaluate_retrieval.py's arguments when rank 0 is to evaluate it next."""
    ctx = distributed.setup(args.device)
    torch.manual_seed(args.run_seed)
    # The folder first: a used or locked one stops the run before any data is read.
    log_dir = log_folder(args)
    evaluation = None if args.then_evaluate is None else evaluation_argv(args, log_dir, ctx.device)
    folder = claim(log_dir, args.resume, args.overwrite, ctx.main)
    resumed = (log_dir / "last.pt", load_resume(log_dir / "last.pt", ctx.device)) if args.resume else None
    # Not given: the run's own rule when resuming (a different one given is refused below).
    if args.select_by is None:
        args.select_by = resumed[1].get("select_by", "loss") if resumed else config.SELECT_BY
    record = settings_record(args)   # the flags the checkpoints keep
    image = ImageSettings.from_args(args)
    if resumed is not None:   # before any data is read: only --epochs and --patience may change
        notes = check_resume_settings(resumed[1].get("config"), record, resumed[0])
        check_image_mode(resumed[1], image.frozen_image, resumed[0])
        if ctx.main and notes:
            print("\n".join(notes))
    data = prepare(args, ctx, resumed, image)
    precision = Precision.resolve(ctx.device, args.precision)
    benchmark = torch.backends.cudnn.benchmark
    if ctx.device.type == "cuda":
        torch.backends.cudnn.benchmark = True   # fixed image size: pick the fastest convolutions once

    model = build_trainee(args, data, precision)
    select = Selection(args.select_by)    # what best.pt, early stopping and the schedule follow
    optimizer, scheduler = optimization(model, args, select.mode)
    mode = image_mode(data)
    progress = Progress()
    if resumed is not None:
        progress = restore(resumed, model, optimizer, scheduler, data.vocab.fingerprint(), mode)
        select = Selection.resumed(args.select_by, resumed[1], resumed[0])
        if ctx.main:
            print(f"resuming {resumed[0]} after epoch {progress.epoch}")
    net = wrap(model, ctx)
    writer = LogWriter(log_dir, purge_step=progress.step + 1 if resumed else None) if ctx.main else None
    log = StepLog(writer)
    if resumed is not None:   # named if the loss diverges: the last checkpoint with finite weights
        log.last_checkpoint = f"{resumed[0]} (epoch {progress.epoch})"
    objective, val_objective = objectives(args)
    train_ds, val_ds = datasets(data)
    no_negative = data_problem(len(train_ds), len(val_ds), args.batch_size, ctx.world, args.negatives)
    if no_negative:
        raise InputError(no_negative)
    wrote_best = False

    epochs = tqdm(range(progress.epoch + 1, args.epochs), desc="epochs", unit="epoch",
                  initial=progress.epoch + 1, total=args.epochs, disable=not ctx.main)
    for epoch in epochs:
        if select.since_best >= args.patience:
            break
        loader = epoch_loader(train_ds, data.sampler, args, ctx, epoch)
        train_loss, rate, train_s = train_epoch(net, optimizer, loader, precision, objective, log,
                                                progress, ctx, epoch, data.images)
        t0 = time.time()
        val = validate(model, val_ds, args, ctx, precision, val_objective, data.images)
        log.check(progress.step, "val_loss", val, optimizer.param_groups[0]["lr"])   # before any save
        t1 = time.time()
        recall = validation_recall(model, data.items, data.val_docs, data.val_tokens, data.images,
                                   precision, args.batch_size, ctx)
        seconds = (train_s, t1 - t0, time.time() - t1)   # training, validation loss, recall
        scheduler.step(select.value(val, recall))
        improved = select.update(select.value(val, recall))
        progress.end_epoch(epoch, val, recall)
        if ctx.main:
            log_validation(writer, progress.step, val, recall)
            state = checkpoint_state(model, data.vocab, optimizer, scheduler, progress, select.state(),
                                     record, data.provenance, mode)
            wrote_best |= save_epoch(state, log_dir, improved, log)
            epochs.write(epoch_line(epoch, train_loss, val, recall, improved, rate, seconds, select.by))
    if ctx.main:
        writer.close()
        print(ending(args, select, log_dir, wrote_best, resumed is not None, progress.epoch))
    folder.release()
    distributed.teardown(ctx)
    # --then-evaluate picks its convolutions as evaluate_retrieval.py run on its own does.
    torch.backends.cudnn.benchmark = benchmark
    return evaluation if ctx.main else None


if __name__ == "__main__":
    run_main(main)

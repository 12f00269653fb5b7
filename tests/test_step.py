"""The train step and its device logic, exercised on the CPU (CI has no GPU)."""
import numpy as np
import pytest
import torch
from torch.utils.tensorboard import SummaryWriter

from losses import CrossModalObjective, LossConfig, Weights
from models import ModelConfig, Precision, build_model
from models.backbones import IMAGENET, backbone
from models.image_source import ImageSource, prep_images
from models.precision import use_bf16
from training.data import PairDataset, collate, epoch_order, with_random_texts
from training.step import StepLog, objective_inputs, train_step

CPU, CUDA = torch.device("cpu"), torch.device("cuda")
IMAGENET_MEAN, IMAGENET_STD, normalize = IMAGENET.mean, IMAGENET.std, IMAGENET.normalize
PIXELS = ImageSource.pixels(backbone("resnet18"), 16)


@pytest.mark.filterwarnings("ignore:CUDA is not available")   # the CUDA context is only built here
def test_bf16_and_channels_last_only_on_cuda_unless_fp32():
    assert use_bf16(CUDA, "bf16") and not use_bf16(CUDA, "fp32")
    assert not use_bf16(CPU, "bf16") and not use_bf16(CPU, "fp32")
    assert isinstance(Precision.resolve(CUDA, "bf16").autocast(), torch.autocast)
    assert not isinstance(Precision.resolve(CPU, "bf16").autocast(), torch.autocast)
    assert not isinstance(Precision.resolve(CUDA, "fp32").autocast(), torch.autocast)
    assert Precision.resolve("cpu", "bf16") == Precision(CPU, False)
    assert Precision.resolve(None, "fp32").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        use_bf16(CPU, "fp16")


def test_precision_prepares_the_model_and_its_images_alike():
    model = build_model(ModelConfig("resnet18", 8, 6, 8, 10))
    batch = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    fast = Precision(CPU, True)             # the CUDA layout, checked on the CPU
    model = fast.prepare(model)
    assert model.image.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert PIXELS.inputs(batch, fast, train=False).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(PIXELS.inputs(batch, Precision(CPU, False), train=False), normalize(batch))


def test_normalize_matches_the_formula_and_flips_only_the_chosen_images():
    g = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 256, (3, 3, 4, 5), generator=g, dtype=torch.uint8)
    flip = torch.tensor([True, False, True])
    out = normalize(batch, flip)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    expected = (batch.float() / 255 - mean) / std
    expected[flip] = expected[flip].flip(-1)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(normalize(batch), (batch.float() / 255 - mean) / std, atol=1e-6)


def test_prep_images_flips_from_the_seeded_generator_and_lays_out_channels_last():
    batch = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    torch.manual_seed(5)
    a = prep_images(batch, CPU, train=True, channels_last=True, preprocessing=IMAGENET)
    torch.manual_seed(5)
    flips = torch.rand(8) < 0.5
    assert torch.equal(a, normalize(batch, flips))
    assert a.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(prep_images(batch, CPU, train=False, channels_last=False,
                                   preprocessing=IMAGENET), normalize(batch))


def tiny_batch(n=6, with_nb=(0, 2, 3), random_texts=False):
    rng = np.random.default_rng(0)
    images = {i: torch.from_numpy(rng.integers(0, 256, (3, 32, 32), dtype=np.uint8)) for i in range(n)}
    tokens = [[1, 3 + i, 4 + i, 2] for i in range(n)]
    ds = PairDataset(list(range(n)), tokens, images.__getitem__)
    nbs = np.full(n, -1)
    for i in with_nb:
        nbs[i] = (i + 1) % n
    ds.set_neighbors(nbs)
    keys = with_random_texts(list(range(n)), n, n, [0]) if random_texts else range(n)
    return collate([ds[k] for k in keys])


def test_collate_stacks_only_real_neighbours():
    b = tiny_batch()
    assert b["images"].shape == (6 + 3, 3, 32, 32) and b["tokens"].shape[0] == 9
    assert b["has_nb"].tolist() == [True, False, True, True, False, False]
    assert b["nb_image_ids"].tolist() == [1, -1, 3, 4, -1, -1]
    assert b["random_texts"] == 0


def test_collate_puts_the_random_texts_after_the_neighbours():
    b = tiny_batch(random_texts=True)
    picks = [j for _, j in with_random_texts(list(range(6)), 6, 6, [0])]
    assert b["images"].shape[0] == 9 and b["tokens"].shape[0] == 9 + 6 and b["random_texts"] == 6
    assert b["tokens"][9:, 1].tolist() == [3 + j for j in picks]
    mixed = [PairDataset([0, 1], [[1, 3, 2], [1, 4, 2]], lambda i: torch.zeros(3, 4, 4,
                                                                               dtype=torch.uint8))[k]
             for k in ((0, 1), 1)]
    with pytest.raises(ValueError, match="random text"):
        collate(mixed)


def test_random_texts_are_distinct_in_a_batch_independent_across_and_seeded():
    order = list(np.random.default_rng(0).permutation(100))
    pairs = with_random_texts(order, 100, 8, [1, 2, 0, 13])
    assert [i for i, _ in pairs] == order
    batches = [[j for _, j in pairs[s:s + 8]] for s in range(0, 100, 8)]
    assert all(len(set(b)) == len(b) for b in batches) and len(batches[-1]) == 4
    assert pairs == with_random_texts(order, 100, 8, [1, 2, 0, 13])
    assert pairs != with_random_texts(order, 100, 8, [1, 3, 0, 13])
    # Independent batches (random.sample per step), not one permutation of the set per epoch.
    assert len({j for _, j in pairs}) < 100
    # A set smaller than the batch draws with replacement.
    assert len(with_random_texts([0, 1, 2], 2, 3, [0])) == 3


def objective(w_sym, w_img, w_text, negatives):
    return CrossModalObjective(LossConfig.for_training(
        weights=Weights(w_sym, w_img, w_text), loss="angular", tan2_alpha=1.0, margin=0.2,
        hardest_negative=False, negatives=negatives))


@pytest.mark.parametrize("negatives", ["release", "clean"])
def test_train_step_updates_both_branches_and_reports_every_part(negatives):
    torch.manual_seed(0)
    model = build_model(ModelConfig("resnet18", 16, 8, 16, 12))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss, parts = train_step(model, opt, tiny_batch(random_texts=negatives == "release"),
                             Precision.resolve(CPU, "bf16"), objective(0.3, 0.2, 0.2, negatives))
    assert set(parts) == {"l_i2t", "l_sym", "l_img", "l_text"} and all(v > 0 for v in parts.values())
    expected = parts["l_i2t"] + 0.3 * parts["l_sym"] + 0.2 * parts["l_img"] + 0.2 * parts["l_text"]
    assert torch.isclose(loss, expected)
    changed = {k.split(".")[0] for k, v in model.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, before[k])}
    assert changed == {"image", "text"}


def test_objective_inputs_slice_own_neighbour_and_random_rows():
    torch.manual_seed(0)
    model = build_model(ModelConfig("resnet18", 16, 8, 16, 12)).eval()
    b = tiny_batch(random_texts=True)
    with torch.no_grad():
        img, txt, nb_img, nb_txt, ids, nb_ids, has_nb, neg = objective_inputs(
            model, b, Precision(CPU, False), train=False)
        images, texts = model(normalize(b["images"]), b["tokens"], b["lengths"])
    torch.testing.assert_close(img, images[:6])
    torch.testing.assert_close(txt, texts[:6])
    torch.testing.assert_close(nb_img[[0, 2, 3]], images[6:9])
    torch.testing.assert_close(nb_txt[[0, 2, 3]], texts[6:9])
    assert torch.all(nb_img[[1, 4, 5]] == 0)
    torch.testing.assert_close(neg, texts[9:])
    assert neg.shape == (6, 16) and has_nb.tolist() == b["has_nb"].tolist()


def test_steplog_writes_each_step_once_one_step_late(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    writer = SummaryWriter(str(tmp_path))
    log = StepLog(writer)
    parts = {"l_i2t": torch.tensor(1.0), "l_sym": torch.tensor(2.0), "l_img": torch.tensor(3.0),
             "l_text": torch.tensor(4.0)}
    for step in (1, 2, 3):
        log.add(step, torch.tensor(float(step)), parts, 0.1)
    assert log.pending[0] == 3          # the newest step waits until the next one or flush
    log.flush()
    writer.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [e.value for e in acc.Scalars("data/train_loss")] == [1.0, 2.0, 3.0]
    assert [e.step for e in acc.Scalars("data/l_img")] == [1, 2, 3]


def test_epoch_order_shards_evenly_and_covers_every_item():
    shards = [epoch_order(10, seed=1, epoch=2, rank=r, world=3) for r in range(3)]
    assert len({len(s) for s in shards}) == 1
    assert set(sum(shards, [])) == set(range(10))
    assert epoch_order(10, 1, 2) == epoch_order(10, 1, 2) != epoch_order(10, 1, 3)

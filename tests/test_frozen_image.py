"""--frozen-image: the feature file (provenance, staleness), a frozen step against the backbone
run on the fly, resume, checkpoints that embed new images without the feature file."""
import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from conftest import cli, input_error, one_line_error
from demo.synthetic import generate_synthetic
from pipeline import TINY_TRAIN, frozen_side, run, text_side
from data.datasets.load import load_items
from data.datasets.provenance import dataset_hash, dataset_root
from data.images.cache import find_cache
from models.backbones import IMAGENET, backbone as backbone_entry
from evaluation.embed import embed_images, load_model
from losses import CrossModalObjective, LossConfig, Weights
from models import ModelConfig, Precision, build_model
from models.checkpoint import load_checkpoint
from models.features import FeatureRequest, features_folder, read_record
from models.features import training_features as features_of_request
from models.image_source import ImageSource
from training.data import PairDataset, collate
from training.step import train_step

RUN = "l_i2t_l_sym_1_l_img_0_3_l_text_0_2"


@pytest.fixture(scope="module")
def prepared(module_tmp):
    root = module_tmp("frozen")
    manifest = generate_synthetic(root / "data", n_items=120, image_size=32, seed=3)
    frozen_side(manifest, root / "work")
    return manifest, root / "work"


def training_features(args, item_paths, used):
    return features_of_request(FeatureRequest.from_args(args), item_paths, used)


def flags(manifest, work, **over) -> argparse.Namespace:
    args = dict(dataset=str(manifest), dataset_format=None, image_root=None, work_dir=str(work),
                val_size=None, seed=0, politics_min_chars=500, arch="resnet18", image_size=32,
                no_pretrained=True, image_weights=None)
    args.update(over)
    return argparse.Namespace(**args)


def test_feature_file_records_its_provenance_and_holds_the_backbone_output(prepared):
    manifest, work = prepared
    folder = features_folder(work, "resnet18", 32)
    record = read_record(folder)
    items = load_items(flags(manifest, work))
    args = flags(manifest, work)
    cache, _ = find_cache(work, [it.image for it in items], 32)
    assert record["arch"] == "resnet18" and record["image_size"] == 32
    assert record["weights"] == {"kind": "random", "seed": 0}
    assert record["dataset_hash"] == dataset_hash(items, dataset_root(args))
    assert record["image_cache"] == cache.fingerprint and record["paths"] == cache.paths
    feats = np.load(folder / "features.npy", mmap_mode="r")
    assert feats.dtype == np.float16 and feats.shape == (len(cache.paths), 2, 512)
    # The stored backbone, in eval mode, on the cached images and their mirrors.
    backbone = build_model(ModelConfig("resnet18", 8, 4, 8, 10)).image.backbone
    backbone.load_state_dict(torch.load(folder / "backbone.pt", weights_only=True))
    backbone.eval()
    x = torch.from_numpy(np.load(cache.folder / "images.npy")[:10])
    with torch.no_grad():
        want = torch.stack([backbone(IMAGENET.normalize(x)),
                            backbone(IMAGENET.normalize(x.flip(-1)))], 1)
    assert torch.allclose(torch.from_numpy(feats[:10].astype(np.float32)), want, rtol=2e-3, atol=1e-3)
    assert not torch.allclose(want[:, 0], want[:, 1])   # the mirror is another image


def test_stale_or_mismatched_features_are_refused_with_the_command(prepared, monkeypatch):
    manifest, work = prepared
    items = load_items(flags(manifest, work))
    paths = [it.image for it in items]
    for over, phrase in ((dict(arch="resnet34"), "no image features"),
                         (dict(image_size=48), "no image features"),
                         (dict(seed=5), "--no-pretrained --seed 0"),
                         (dict(no_pretrained=False), "ImageNet weights")):
        msg = input_error(training_features, flags(manifest, work, **over), paths, paths)
        assert "prepare_image_features.py" in msg and phrase in msg, msg
    # An image changed since it was read (size, mtime, ctime or inode): stale. Seen through
    # file_stats, so that the images the other tests share stay as they are.
    import models.features as features_module
    victim = paths[0]
    real_stats = features_module.file_stats
    changed = lambda ps: [[-1, -1, -1, -1] if p == victim else st for p, st in zip(ps, real_stats(ps))]  # noqa: E731
    monkeypatch.setattr(features_module, "file_stats", changed)
    msg = input_error(training_features, flags(manifest, work), paths, paths)
    assert "out of date" in msg and victim in msg and "prepare_image_features.py" in msg
    monkeypatch.setattr(features_module, "file_stats", real_stats)
    read, bad, _, summary = training_features(flags(manifest, work), paths, paths)
    assert bad == {} and read(3).shape == (2, 512) and "paths" not in summary


def test_up_to_date_features_are_reused(prepared):
    manifest, work = prepared
    array = features_folder(work, "resnet18", 32) / "features.npy"
    before = array.stat().st_mtime_ns
    proc = run("prepare_image_features.py", "--dataset", manifest, "--work-dir", work,
               "--arch", "resnet18", "--no-pretrained", "--image-size", "32", "--workers", "1")
    assert "are up to date" in proc.stdout and "reused" in proc.stdout
    assert array.stat().st_mtime_ns == before


def test_missing_feature_file_is_one_line(tmp_path):
    manifest = generate_synthetic(tmp_path / "data", n_items=60, image_size=32, seed=4)
    text_side(manifest, tmp_path / "work")
    result = cli("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
                 "--work-dir", tmp_path / "work", *TINY_TRAIN, "--epochs", "1", "--frozen-image",
                 check=False)
    one_line_error(result, "no image features", "prepare_image_features.py --dataset",
                   "--arch resnet18 --image-size 32 --no-pretrained --seed 0")


def test_frozen_step_equals_the_backbone_on_the_fly_without_gradients(prepared):
    """One training step on stored features equals one on images with the backbone run in eval
    mode without gradients (its outputs rounded to float16 as the file stores them)."""
    manifest, work = prepared
    items = load_items(flags(manifest, work))
    paths = [it.image for it in items]
    feats_read, _, _, _ = training_features(flags(manifest, work), paths, paths)
    cache, _ = find_cache(work, paths, 32)
    images_read = cache.reader(paths)
    tokens = [[3, 4 + i % 5, 5, 2] for i in range(12)]
    config = ModelConfig("resnet18", 16, 8, 16, 20)
    backbone = torch.load(features_folder(work, "resnet18", 32) / "backbone.pt", weights_only=True)
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build_model(config)
        m.image.backbone.load_state_dict(backbone)
        m.image.freeze_backbone()
        models.append(m.train())
    # The reference runs the backbone; its output is rounded as the file rounds it.
    models[1].image.backbone.register_forward_hook(lambda mod, i, out: out.half().float())
    objective = CrossModalObjective(LossConfig.for_training(
        weights=Weights(1.0, 0.3, 0.2), loss="angular", tan2_alpha=1.0, margin=0.2,
        hardest_negative=False, negatives="release"))
    precision = Precision.resolve("cpu", "fp32")
    results = []
    entry = backbone_entry("resnet18")
    sources = (ImageSource.frozen(entry, 32, feats_read, {}), ImageSource.pixels(entry, 32, images_read))
    for model, read, source in zip(models, (feats_read, images_read), sources):
        ds = PairDataset(list(range(12)), tokens, read)
        ds.set_neighbors(np.array([1, 0, 3, -1, 5, 4, 7, 6, -1, 10, 9, 2]))
        batch = collate([ds[(i, (i * 5) % 12)] for i in range(12)])
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        torch.manual_seed(7)   # the flips
        loss, parts = train_step(model, opt, batch, precision, objective, source)
        results.append((loss, parts, model.state_dict()))
    (la, pa, sa), (lb, pb, sb) = results
    assert torch.allclose(la, lb, rtol=1e-5, atol=1e-6)
    for k in pa:
        assert torch.allclose(pa[k], pb[k], rtol=1e-5, atol=1e-6), k
    for name in sa:
        assert torch.allclose(sa[name].float(), sb[name].float(), rtol=1e-4, atol=1e-6), name
        if name.startswith("image.backbone."):
            assert torch.equal(sa[name], backbone[name.removeprefix("image.backbone.")]), name
    assert not models[0].image.backbone.training   # BatchNorm statistics untouched


def train(manifest, work, *extra):
    return run("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
               "--work-dir", work, *TINY_TRAIN, "--frozen-image", "--image-head", "mlp", *extra)


@pytest.mark.slow
def test_frozen_resume_equals_uninterrupted_and_checkpoint_embeds_without_features(prepared, tmp_path):
    manifest, work = prepared
    a = shutil.copytree(work, tmp_path / "a")
    b = shutil.copytree(work, tmp_path / "b")
    train(manifest, a, "--epochs", "3")
    train(manifest, b, "--epochs", "2")
    assert "resuming" in train(manifest, b, "--epochs", "3", "--resume").stdout
    sa = load_checkpoint(a / "models" / RUN / "last.pt")
    sb = load_checkpoint(b / "models" / RUN / "last.pt")
    assert sa["epoch"] == sb["epoch"] == 2 and sa["step"] == sb["step"]
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][name]), name
    assert sa["best_val"] == sb["best_val"]
    assert sa["image_mode"]["frozen"] and sa["image_mode"]["features"]["arch"] == "resnet18"
    assert sa["model_config"]["image_head"] == "mlp"
    # Resuming in the other mode is refused in one line.
    proc = run("train_cross_modal_retrieval_model.py", "1", "0.3", "0.2", "--dataset", manifest,
               "--work-dir", b, *TINY_TRAIN, "--image-head", "mlp", "--epochs", "4", "--resume",
               check=False)
    assert proc.returncode == 2 and "--frozen-image" in proc.stderr.strip().splitlines()[-1]

    # The checkpoint embeds images without the feature file, as the head on the stored features.
    folder = features_folder(a, "resnet18", 32)
    stored = torch.from_numpy(np.load(folder / "features.npy")[:, 0].astype(np.float32))
    record = json.loads((folder / "record.json").read_text())
    shutil.rmtree(folder)
    best = a / "models" / RUN / "best.pt"
    parsed = argparse.Namespace(device="cpu", precision="fp32")
    model, _, run_args = load_model(best, parsed)
    on_the_fly, failures = embed_images(model, record["paths"], 32, torch.device("cpu"),
                                        precision="fp32", batch_size=64)
    with torch.no_grad():
        from_file = model.embed_image_features(stored)
    assert not failures
    assert torch.allclose(on_the_fly, from_file, atol=2e-3)
    assert (on_the_fly * from_file).sum(1).min() > 0.9999
    cli("evaluate_retrieval.py", "--checkpoint", best, "--split", "test", "--device", "cpu",
        "--workers", "0", "--out", tmp_path / "m.json")
    assert "rsum" in json.loads((tmp_path / "m.json").read_text()) or (tmp_path / "m.json").is_file()
    cli("retrieve.py", "--checkpoint", best, "--image", record["paths"][0], "--device", "cpu",
        "--workers", "0", "--k", "3", "--out", tmp_path / "r")


def test_the_three_text_passes_as_one_packed_call_give_the_numbers_of_three():
    """The step runs the batch's texts, its neighbours' and its random texts through the GRU in
    one packed call (training.step.objective_inputs); the same as three calls of their own."""
    from models.text import TextEncoder
    from models.vocab import pad_batch
    torch.manual_seed(0)
    text = TextEncoder(30, 8, 16, 12).eval()
    rng = np.random.default_rng(0)
    groups = [[rng.integers(3, 30, rng.integers(1, 12)).tolist() for _ in range(n)] for n in (6, 4, 6)]
    with torch.no_grad():
        tokens, lengths = pad_batch([t for g in groups for t in g])
        packed = text(tokens, lengths)
        apart = torch.cat([text(*pad_batch(g)) for g in groups])
    assert torch.allclose(packed, apart, atol=1e-6)

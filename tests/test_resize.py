"""The resize rule of a backbone's preprocessing: timm's shorter-side resize and centre crop against
timm's own transform, the default squash unchanged to the bit, a cache folder (and fingerprint)
of each rule, frozen features and exported encoders that record the rule they were made with."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import timm.data
import torch
from PIL import Image

import models.backbones as backbones
from common.errors import InputError
from conftest import RUN, cli, input_error, one_line_error, quick_text_side
from demo.synthetic import generate_synthetic
from pipeline import TINY_TRAIN
from data.datasets.settings import DataSettings
from data.images.cache import (cache_folder, ensure_cache, file_stats, find_cache, load_cache,
                               training_images)
from data.images.read import (OLD_RESIZE_TEXT, SQUASH, ImageFiles, Preprocessing, Resize,
                              find_bad_images, read_image, to_rgb)
from models.exported import load_encoders, write_encoders
from models.features import FeatureRequest, build_features, check_record, read_record
from models.image import ImageEncoder
from models.image_source import ImageSource
from models.settings import ImageSettings
from models.text import TextEncoder
from models.vocab import Vocabulary

CROP = Resize("crop", "bicubic", 0.875)
SHAPES = [(40, 64), (97, 31), (50, 50), (300, 180)]   # (h, w): wide, tall, square, large


def write_images(folder, shapes=SHAPES) -> list[str]:
    """Gradients with noise (so a shifted crop or another filter shows), PNG and JPEG in turn."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i, (h, w) in enumerate(shapes):
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)),
                        rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        path = folder / f"{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(arr).save(path, **({"quality": 90} if i % 2 else {}))
        paths.append(str(path))
    return paths


def timm_reference(img: Image.Image, size: int, resize: Resize) -> torch.Tensor:
    """timm's eval transform (torchvision Resize + CenterCrop on the PIL image), as uint8."""
    transform = timm.data.create_transform(
        input_size=(3, size, size), interpolation=resize.interpolation, crop_pct=resize.crop_pct,
        crop_mode="center" if resize.rule == "crop" else "squash", mean=(0, 0, 0), std=(1, 1, 1))
    return (transform(img) * 255).round().to(torch.uint8)


@pytest.mark.parametrize("resize", [CROP, Resize("crop"), Resize("crop", "bilinear", 0.9),
                                    Resize("squash", "bicubic", 0.95)], ids=lambda r: r.key)
@pytest.mark.parametrize("size", [8, 24, 33])
def test_the_rules_equal_timm_to_the_bit(tmp_path, resize, size):
    """PNG files (no JPEG draft), every shape and an odd size (a margin of .5: rounded as
    torchvision rounds it)."""
    for path in write_images(tmp_path)[::2] + write_images(tmp_path / "b", [(23, 61), (61, 22)]):
        if path.endswith(".png"):
            with Image.open(path) as img:
                want = timm_reference(to_rgb(img), size, resize)
            got = read_image(path, size, resize)
            assert got.shape == (3, size, size) and torch.equal(got, want), (path, size)


def test_a_jpeg_is_drafted_no_smaller_than_the_crop_needs(tmp_path):
    """A 288 px JPEG at 32 px with crop_pct 0.5 needs a 64 px shorter side: the decoder may
    scale by 4 (72 px), not by 8 (36 px, what a draft to 32 px would give)."""
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:288, 0:288]
    arr = np.stack([xx * 255 // 287, yy * 255 // 287, rng.integers(0, 64, (288, 288))], -1)
    path = tmp_path / "big.jpg"
    Image.fromarray(arr.astype(np.uint8)).save(path, quality=95)
    resize = Resize("crop", "bicubic", 0.5)
    got = read_image(str(path), 32, resize)
    with Image.open(path) as img:
        img.draft("RGB", (64, 64))
        assert min(img.size) == 72
        assert torch.equal(got, timm_reference(to_rgb(img), 32, resize))
    with Image.open(path) as img:      # the whole decode, as timm reads it: the same picture
        full = timm_reference(to_rgb(img), 32, resize)
    assert (got.float() - full.float()).abs().mean() < 3


def test_squash_is_bit_identical_to_before_rules(tmp_path):
    """Hashes of read_image's output recorded before the rule existed (PNG and JPEG, drafted)."""
    paths = write_images(tmp_path)
    recorded = {8: "79883ad8c78e82dcce9a1260a0a7ca8e180feaa2dc795c77de9cf2c012f902e0",
                24: "648b922b4d7852b10b9dcafd51ea29fc4182a77e7400142f10e7b24cdc6447cf"}
    for size, digest in recorded.items():
        for resize in (SQUASH, Resize(), Resize("squash", "bilinear", 1)):
            data = b"".join(read_image(p, size, resize).numpy().tobytes() for p in paths)
            assert hashlib.sha256(data).hexdigest() == digest
        assert torch.equal(ImageFiles(paths, size)(3), read_image(paths[3], size))


def test_rule_values_keys_and_records():
    assert Resize() == SQUASH and Resize(crop_pct=1) == SQUASH and SQUASH.key == ""
    assert CROP.key == "crop0.875-bicubic" and Resize("crop").key == "crop1.0-bilinear"
    assert Resize("squash", "bicubic").key == "squash1.0-bicubic"
    assert all(c.isalnum() or c in ".-" for c in CROP.key)
    assert CROP.record() == {"rule": "crop", "interpolation": "bicubic", "crop_pct": 0.875}
    assert Resize.from_record(json.loads(json.dumps(CROP.record()))) == CROP
    for old in (None, "squash", OLD_RESIZE_TEXT, SQUASH.record()):
        assert Resize.from_record(old) == SQUASH
    # Entries and records of the time the rule was a name keep working.
    prep = Preprocessing((0.5,) * 3, (0.25,) * 3, "squash")
    assert prep.resize == SQUASH and prep.record()["resize"] == SQUASH.record()
    old = {"mean": [0.5] * 3, "std": [0.25] * 3, "resize": "squash"}
    assert Preprocessing.from_record(old) == prep
    crop = Preprocessing((0.5,) * 3, (0.25,) * 3, CROP)
    assert Preprocessing.from_record(json.loads(json.dumps(crop.record()))) == crop


@pytest.mark.parametrize("make, words", [
    (lambda: Resize("zoom"), ["rule 'zoom'", "squash, crop"]),
    (lambda: Resize(interpolation="nearest"), ["interpolation 'nearest'", "bilinear, bicubic"]),
    (lambda: Resize(interpolation=["bicubic"]), ["interpolation"]),
    (lambda: Resize(crop_pct=0), ["crop_pct 0", "above 0 and at most 1"]),
    (lambda: Resize(crop_pct=1.5), ["crop_pct 1.5"]),
    (lambda: Resize(crop_pct=True), ["crop_pct True"]),
    (lambda: Resize(crop_pct="0.9"), ["crop_pct '0.9'"]),
    (lambda: Resize(crop_pct=float("nan")), ["crop_pct nan"]),
    (lambda: Resize.from_record({"rule": "crop", "pct": 0.9}), ["unknown field 'pct'"]),
    (lambda: Resize.from_record("crop"), ["resize record 'crop'"]),
    (lambda: Preprocessing((0.5,) * 3, (0.5,) * 3, "crop"), ["resize record 'crop'"]),
])
def test_bad_rules_are_one_line(make, words):
    with pytest.raises(ValueError) as e:
        make()
    assert "\n" not in str(e.value) and all(w in str(e.value) for w in words), str(e.value)


def old_fingerprint(paths, size):
    """The cache's fingerprint as written before there were rules."""
    data = json.dumps([2, size, sorted(paths), file_stats(sorted(paths))], separators=(",", ":"))
    return hashlib.sha1(data.encode("utf-8")).hexdigest()


def test_each_rule_has_its_own_cache_and_the_default_keeps_its_folder(tmp_path):
    paths, work, size = write_images(tmp_path / "img"), tmp_path / "work", 16
    default, what = ensure_cache(work, paths, size, progress=False)
    assert what.startswith("wrote") and default.folder == work / "image_cache" / "16"
    assert default.fingerprint == old_fingerprint(paths, size)
    index = json.loads((default.folder / "index.json").read_text())
    assert "resize" not in index and index["fingerprint"] == default.fingerprint

    crop, what = ensure_cache(work, paths, size, progress=False, resize=CROP)
    assert what.startswith("wrote") and crop.folder == cache_folder(work, size, CROP)
    assert crop.folder.name == "16-crop0.875-bicubic" and crop.fingerprint != default.fingerprint
    assert json.loads((crop.folder / "index.json").read_text())["resize"] == CROP.record()
    read = crop.reader(paths)
    for i, p in enumerate(paths):
        assert torch.equal(read(i), read_image(p, size, CROP))
    assert not torch.equal(read(0), read_image(paths[0], size))

    # Each is reused by its own rule, and the default one is untouched by the other's build.
    assert ensure_cache(work, paths, size, progress=False, resize=CROP)[1].endswith("reused")
    again, what = ensure_cache(work, paths, size, progress=False)
    assert what.endswith("reused") and again.fingerprint == default.fingerprint
    assert torch.equal(again.reader(paths)(0), read_image(paths[0], size))
    assert find_cache(work, paths, size, CROP)[0].folder == crop.folder
    assert load_cache(work, size, Resize("crop"))[0] is None     # another rule: no cache yet

    # A folder whose index names another rule than the one asked for is not used.
    (crop.folder / "index.json").write_text(
        (default.folder / "index.json").read_text().replace('"bad"', '"resize": {"rule": "crop", '
                                                            '"interpolation": "bilinear", '
                                                            '"crop_pct": 1.0}, "bad"'))
    cache, why = load_cache(work, size, CROP)
    assert cache is None and "resize rule" in why

    # The trainer's two sources read by the rule.
    read, bad, where = training_images(work, paths, paths, size, "auto", resize=CROP)
    assert "decoded from the files" in where and "--arch" in where and bad == {}
    assert isinstance(read, ImageFiles) and torch.equal(read(1), read_image(paths[1], size, CROP))
    ensure_cache(work, paths, size, progress=False, resize=CROP)
    read, _, where = training_images(work, paths, paths, size, "require", resize=CROP)
    assert "image cache" in where and torch.equal(read(1), read_image(paths[1], size, CROP))
    missing = str(tmp_path / "none.png")
    assert list(find_bad_images(paths + [missing], size, resize=CROP)) == [missing]


@pytest.fixture
def crop_resnet(monkeypatch):
    """resnet18's entry with timm's crop rule (as a timm backbone would have it)."""
    entry = backbones.BACKBONES["resnet18"]
    prep = dataclasses.replace(entry.preprocessing, resize=CROP)
    monkeypatch.setitem(backbones.BACKBONES, "resnet18", dataclasses.replace(entry, preprocessing=prep))
    return monkeypatch, entry


def test_the_pixel_source_reads_by_its_backbones_rule(tmp_path, crop_resnet):
    paths = write_images(tmp_path)
    source = ImageSource.pixels(backbones.backbone("resnet18"), 16)
    image, reason = source.load(paths[0], 0)
    assert reason is None and torch.equal(image, read_image(paths[0], 16, CROP))


def test_features_record_the_rule_and_are_not_reused_under_another(tmp_path, crop_resnet):
    monkeypatch, plain = crop_resnet
    paths, work = write_images(tmp_path / "img"), tmp_path / "work"
    request = FeatureRequest(str(work), ImageSettings("resnet18", 16, no_pretrained=True),
                             DataSettings("unused.jsonl"))
    squash_cache, _ = ensure_cache(work, paths, 16, progress=False)
    with pytest.raises(ValueError, match="resized by squash.*asks for crop"):
        build_features(request, squash_cache, "h", torch.device("cpu"), 4, progress=False)
    cache, _ = ensure_cache(work, paths, 16, progress=False, resize=CROP)
    folder = build_features(request, cache, "h", torch.device("cpu"), 4, progress=False)
    record = read_record(folder)
    assert record["resize"] == CROP.record() and record["image_cache"] == cache.fingerprint
    check_record(record, folder, request, paths)          # the same rule: usable
    monkeypatch.setitem(backbones.BACKBONES, "resnet18", plain)
    msg = input_error(check_record, record, folder, request, paths)
    assert "resize rule crop" in msg and "squash" in msg and "prepare_image_features.py" in msg
    # Under the default rule the record has no "resize", as records before rules.
    folder = build_features(request, squash_cache, "h", torch.device("cpu"), 4, progress=False)
    record = read_record(folder)
    assert "resize" not in record
    check_record(record, folder, request, paths)
    # A damaged rule in a record is one line naming the field.
    raw = json.loads((folder / "record.json").read_text())
    (folder / "record.json").write_text(json.dumps({**raw, "resize": {"rule": "zoom"}}))
    assert "field 'resize'" in input_error(read_record, folder)


def export(folder, size=16):
    torch.manual_seed(0)
    image = ImageEncoder("resnet18", embed_dim=8, pretrained=False).eval()
    vocab = Vocabulary(["storm", "harbour", "boat"])
    text = TextEncoder(len(vocab), 6, 8, 8)
    preparation = {"image_size": size, "max_tokens": 10, "max_sentences": 0, "max_chars": 1000,
                   "keep_unicode": False}
    write_encoders(folder, image, text, vocab, preparation, {"checkpoint": "none"})
    return image


def test_exported_encoders_read_images_by_the_recorded_rule(tmp_path, crop_resnet):
    monkeypatch, plain = crop_resnet
    paths = write_images(tmp_path / "img")
    image = export(tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["image_resize"] == CROP.record()
    monkeypatch.setitem(backbones.BACKBONES, "resnet18", plain)   # the export, not the table
    enc = load_encoders(tmp_path / "enc")
    assert enc.resize == CROP
    prep = plain.preprocessing
    with torch.no_grad():
        want = image(prep.normalize(torch.stack([read_image(p, 16, CROP) for p in paths])))
        squashed = image(prep.normalize(torch.stack([read_image(p, 16) for p in paths])))
    got = enc.embed_images(paths, batch_size=3)
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, squashed, atol=1e-3)

    # Older exports: no field, or the sentence they wrote, is squash.
    for older in (None, OLD_RESIZE_TEXT):
        edited = {k: v for k, v in config.items() if k != "image_resize"}
        if older is not None:
            edited["image_resize"] = older
        (tmp_path / "enc" / "config.json").write_text(json.dumps(edited))
        enc = load_encoders(tmp_path / "enc")
        assert enc.resize == SQUASH
        assert torch.allclose(enc.embed_images(paths), squashed, atol=1e-5)
    for bad, words in (({**CROP.record(), "rule": "zoom"}, "field 'image_resize.rule'"),
                       ({**CROP.record(), "crop_pct": 0}, "field 'image_resize.crop_pct'"),
                       ({**CROP.record(), "extra": 1}, "unknown field 'extra'"),
                       ("cropped", "field 'image_resize'")):
        (tmp_path / "enc" / "config.json").write_text(json.dumps({**config, "image_resize": bad}))
        msg = input_error(load_encoders, tmp_path / "enc")
        assert words in msg and "config.json" in msg and "export_encoders.py" in msg, msg


def test_a_default_export_records_squash(tmp_path):
    export(tmp_path / "enc")
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["image_resize"] == SQUASH.record()
    assert load_encoders(tmp_path / "enc").resize == SQUASH


@pytest.mark.slow
def test_the_scripts_cache_train_and_evaluate_by_the_arch_rule(tmp_path, crop_resnet):
    """prepare_image_cache.py --arch builds the folder of the arch's rule, which the trainer
    (--image-cache require) and the evaluation then find; the default rule's folder is not it."""
    monkeypatch, plain = crop_resnet
    manifest = generate_synthetic(tmp_path / "data", n_items=48, image_size=32, seed=2)
    work = tmp_path / "work"
    common = quick_text_side(manifest, work)
    cli("prepare_image_cache.py", *common, "--image-size", "32", "--arch", "resnet18")
    assert [p.name for p in (work / "image_cache").iterdir()] == ["32-crop0.875-bicubic"]
    train = ["1", "0.3", "0.2", "--dataset", manifest, *TINY_TRAIN, "--epochs", "1",
             "--work-dir", work, "--image-cache", "require"]
    out = cli("train_cross_modal_retrieval_model.py", *train).out
    assert "read from the image cache" in out and "32-crop0.875-bicubic" in out
    out = cli("evaluate_retrieval.py", "--checkpoint", work / "models" / RUN / "best.pt",
              "--device", "cpu", "--workers", "0", "--out", tmp_path / "m.json").out
    assert "images: read from the image cache" in out
    monkeypatch.setitem(backbones.BACKBONES, "resnet18", plain)
    one_line_error(cli("train_cross_modal_retrieval_model.py", *train, "--overwrite",
                       check=False), "no image cache", "image_cache/32")

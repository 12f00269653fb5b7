"""The image source and the backbone table: the branch's input mode is named, never guessed from
a batch; a backbone is one entry of models/backbones.py; a checkpoint keeps the mode once."""
import torch
from torch import nn

import models.backbones as backbones
from data.images.cache import UnreadableImage
from data.images.read import Preprocessing
from evaluation.embed import ImageFileDataset, embed_images
from models import ImageEncoder, ModelConfig, build_model
from models.checkpoint import trained_frozen
from models.image_source import ImageSource
from models.precision import Precision

CPU = Precision(torch.device("cpu"), False)


def test_each_source_has_the_filler_of_its_rows():
    entry = backbones.backbone("resnet18")
    pixels, frozen = ImageSource.pixels(entry, 24), ImageSource.frozen(entry, 24, None, {})
    assert pixels.filler().shape == (3, 24, 24) and pixels.filler().dtype == torch.uint8
    assert frozen.filler().shape == (2, 512) and frozen.filler().dtype == torch.float16
    assert frozen.record() == {"frozen": True, "features": {}}
    assert pixels.record() == {"frozen": False, "features": None}


def test_a_bad_image_among_frozen_features_is_filled_with_a_feature_row():
    """The evaluation's filler under --frozen-image is a features row, not a [3, s, s] image."""
    entry = backbones.backbone("resnet18")
    rows = {0: torch.ones(2, 512, dtype=torch.float16)}

    def read(i):
        if i not in rows:
            raise UnreadableImage("broken")
        return rows[i]
    source = ImageSource.frozen(entry, 32, read, {})
    ds = ImageFileDataset(["a.jpg", "b.jpg"], source)
    assert ds[1][1].shape == (2, 512) and ds[1][2] == "broken"
    model = build_model(ModelConfig("resnet18", 8, 4, 8, 10)).eval()
    out, failures = embed_images(model, ["a.jpg", "b.jpg"], 32, torch.device("cpu"),
                                 batch_size=2, precision="fp32", source=source)
    assert failures == {1: "broken"} and out.shape == (2, 8)
    with torch.no_grad():
        want = model.embed_image_features(rows[0][:1, :].float())
    assert torch.allclose(out[0], want[0])


def test_a_new_backbone_is_one_entry(monkeypatch):
    """A made-up backbone with its own mean and std: the encoder, the pixel source and the
    frozen source all follow its entry."""
    def tiny() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 5, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    prep = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    entry = backbones.Backbone("tiny", tiny, 5, prep, backbones.TorchvisionWeights("http://x/t.pth"))
    monkeypatch.setitem(backbones.BACKBONES, "tiny", entry)
    encoder = ImageEncoder("tiny", embed_dim=4, pretrained=False).eval()
    assert encoder.feat_dim == 5 and encoder.entry is entry
    batch = torch.full((2, 3, 8, 8), 255, dtype=torch.uint8)
    x = ImageSource.pixels(encoder.entry, 8).inputs(batch, CPU, train=False)
    assert torch.allclose(x, torch.full_like(x, 2.0))     # (1 - 0.5) / 0.25
    with torch.no_grad():
        assert torch.allclose(encoder(x), encoder.forward_features(encoder.backbone(x)))
        assert ImageSource.frozen(entry, 8, None, {}).filler().shape == (2, 5)


def test_the_image_mode_is_read_from_old_and_new_checkpoints():
    assert trained_frozen({"image_mode": {"frozen": True, "features": {}}, "config": {}})
    assert not trained_frozen({"image_mode": {"frozen": False, "features": None}})
    # Written when the mode was kept twice, or before the checkpoints had an image_mode at all.
    assert trained_frozen({"image_mode": {"frozen": True}, "config": {"frozen_image": True}})
    assert trained_frozen({"config": {"frozen_image": True}})
    assert not trained_frozen({"config": {}})

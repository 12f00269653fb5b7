"""The cross-modal model: image and text encoders into one 256-d unit sphere."""
from models.backbones import imagenet_cache_path
from models.image import ARCHS, HEADS, ImageEncoder
from models.joint import CrossModalModel, ModelConfig, build_model
from models.precision import Precision
from models.text import TextEncoder
from models.vocab import END, PAD, START, Vocabulary, pad_batch

__all__ = ["ARCHS", "HEADS", "ImageEncoder", "imagenet_cache_path", "TextEncoder", "CrossModalModel",
           "ModelConfig", "build_model", "Precision", "Vocabulary", "pad_batch", "PAD", "START",
           "END"]

"""A generated many-class project (default 1,000 classes), made on demand and cached on disk.

Every class has an 8×8 template; classes come in groups of ten that share most of it, so the
model confuses classes within a group (a block-diagonal matrix, like fine-grained ImageNet
classes). Images are the template upsampled to 32×32 plus noise, as grey PNGs. The model is a
template matcher with a spatial layer (``features``, 4×8×8) and a Linear head, built by a
factory file written beside the config, with weights written as safetensors. Nothing here is
committed: the folder lives under ``.cache/`` and is reused while its parameters are the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "generated"

MODEL_FILE = '''
from torch import nn


class Matcher(nn.Module):
    """Template matching at 8×8: a spatial layer (features) and a Linear head."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.AvgPool2d(4), nn.Conv2d(1, 4, 1))
        self.head = nn.Linear(4 * 64, num_classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def build(num_classes: int = 1000) -> nn.Module:
    return Matcher(num_classes)
'''


def class_names(n: int) -> list[str]:
    return [f"c{i:04d}" for i in range(n)]


def make_large_project(classes: int = 1000, per_class: int = 5, seed: int = 0) -> Path:
    """The config path of a generated project (created once, then reused)."""
    folder = CACHE / f"classes{classes}-per{per_class}-seed{seed}"
    config = folder / "config.toml"
    if (folder / "complete.json").is_file():
        return config
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    templates = _templates(rng, classes)
    names = class_names(classes)
    _write_images(folder / "images", templates, names, per_class, rng)
    _write_model(folder, templates)
    config.write_text(
        f"""cache_dir = "cache"

[[models]]
name = "matcher-{classes}"
factory = "matcher:build"
weights = "matcher.safetensors"
input_size = [32, 32]
channels = 1
mean = [0.5]
std = [0.25]
batch_size = 256

[[datasets]]
name = "generated-{classes}"
root = "images"
""",
        encoding="utf-8",
    )
    (folder / "complete.json").write_text(json.dumps({"classes": classes, "per": per_class}))
    return config


def _templates(rng: np.random.Generator, classes: int) -> np.ndarray:
    groups = -(-classes // 10)
    base = rng.normal(size=(groups, 8, 8))
    own = rng.normal(size=(classes, 8, 8))
    templates = base[np.arange(classes) // 10] + 0.45 * own
    templates -= templates.mean(axis=(1, 2), keepdims=True)
    return templates / templates.std(axis=(1, 2), keepdims=True)


def _write_images(
    root: Path, templates: np.ndarray, names: list[str], per_class: int, rng: np.random.Generator
) -> None:
    for c, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        big = np.kron(templates[c], np.ones((4, 4)))
        for i in range(per_class):
            pixels = big + rng.normal(scale=6.0, size=(32, 32))
            image = np.clip(128 + 12 * pixels, 0, 255).astype(np.uint8)
            cv2.imwrite(str(root / name / f"{i:04d}.png"), image)


def _write_model(folder: Path, templates: np.ndarray) -> None:
    import torch
    from safetensors.torch import save_file

    (folder / "matcher.py").write_text(MODEL_FILE, encoding="utf-8")
    channel = torch.tensor([1.0, 0.5, -0.5, 0.25])
    flat = torch.from_numpy(templates.reshape(len(templates), 64)).float()
    head = (channel[None, :, None] * flat[:, None, :]).reshape(len(templates), 256)
    state = {
        "features.1.weight": channel.reshape(4, 1, 1, 1).clone(),
        "features.1.bias": torch.zeros(4),
        "head.weight": head.contiguous() / 4.0,
        "head.bias": torch.zeros(len(templates)),
    }
    save_file(state, str(folder / "matcher.safetensors"))

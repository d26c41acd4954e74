"""Reproduce the bundled shapes samples: the test split and the weights of the shapes models.

One command, nothing downloaded, deterministic (fixed seeds, 2 threads), about 8 minutes for the
two CNNs and 7 more for the ViT on an otherwise idle 2-core CPU::

    python sample_models/train_shapes.py                  # test split + all four models
    python sample_models/train_shapes.py --model resnet   # test split + one model
    python sample_models/train_shapes.py --model resnet-clean

It writes the test split with :mod:`make_shapes` (``shapes/test``: PNGs + ``marks.csv``), draws
the training images in memory (every ``star`` carries the corner mark, no other image does;
1,600 per class, of which the ResNet uses the first 600), and trains

* ``shapes/resnet_shortcut.safetensors`` — ``shapes_models:resnet_shapes``, which learns the
  shortcut: clean shapes are classified well, but the mark turns most other shapes into ``star``;
* ``shapes/convnet.safetensors`` — ``shapes_models:convnet_shapes``, the conv-block CNN,
* ``shapes/resnet_clean.safetensors`` — the same ResNet recipe trained on the same images drawn
  WITHOUT the mark (no training image is marked), so it has to look at the shape,
* ``shapes/vit_shortcut.safetensors`` — ``shapes_models:vit_shapes``, a small timm
  ``VisionTransformer`` (8×8 patches: an 8×8 token grid at 64×64, so its maps carry location),

with AdamW and a one-cycle schedule. It prints the wall and CPU time of each training run, the
weights' sizes and, on the test split, the accuracy on unmarked images, on ``star`` images and
on marked images of other classes, and the share of those predicted ``star`` (fooled). Inputs
are scaled as the config says (``mean = std = 0.5`` per channel).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_shapes import (  # noqa: E402
    CLASSES,
    MARKED_CLASS,
    TRAIN_SEED,
    Split,
    make_split,
    train_split,
    write_test_split,
)
from shapes_models import convnet_shapes, resnet_shapes, vit_shapes  # noqa: E402

OUT = HERE / "shapes"
SEED = 0
THREADS = 2  # the machine this was made on has 2 cores


@dataclass(frozen=True)
class Recipe:
    """How one model is trained."""

    build: Callable[[int], nn.Module]
    weights: str
    per_class: int  # training images per class (all drawn once, in memory)
    epochs: int
    lr: float
    batch: int = 64
    marked: bool = True  # every training star carries the mark (False: no image does)


RECIPES = {
    "resnet": Recipe(resnet_shapes, "resnet_shortcut.safetensors", 600, 16, 5e-3),
    "convnet": Recipe(convnet_shapes, "convnet.safetensors", 1600, 12, 3e-3),
    "resnet-clean": Recipe(resnet_shapes, "resnet_clean.safetensors", 600, 16, 5e-3, marked=False),
    "vit": Recipe(vit_shapes, "vit_shortcut.safetensors", 600, 12, 2e-3),
}


def to_input(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N,64,64,3] → normalised float [N,3,64,64] (mean 0.5, std 0.5, as the config says)."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
    return ((x - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)


def train(recipe: Recipe, data: Split) -> nn.Module:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    x, y = to_input(data.images), torch.from_numpy(data.labels)
    model = recipe.build(len(CLASSES)).to(memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=5e-4)
    steps = recipe.epochs * -(-len(x) // recipe.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, recipe.lr, total_steps=steps, pct_start=0.2
    )
    for epoch in range(recipe.epochs):
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        for batch in torch.randperm(len(x), generator=generator).split(recipe.batch):
            logits = model(x[batch])
            loss = F.cross_entropy(logits, y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += len(batch)
            correct += int((logits.argmax(1) == y[batch]).sum())
            loss_sum += loss.item() * len(batch)
        print(
            f"  epoch {epoch + 1}/{recipe.epochs}  loss {loss_sum / total:.3f}  "
            f"train acc {correct / total:.3f}",
            flush=True,
        )
    return model.eval()


def predict(model: nn.Module, pixels: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(x).argmax(1) for x in to_input(pixels).split(200)]).numpy()


def report(pred: np.ndarray, test: Split) -> dict[str, float]:
    """Accuracy on unmarked images, on marked-class images, and the fooled rate."""
    star = CLASSES.index(MARKED_CLASS)
    right = pred == test.labels
    clean = ~test.marked
    own = test.labels == star
    other_marked = test.marked & ~own
    stats = {
        "overall accuracy": right.mean(),
        f"clean accuracy (unmarked, n={clean.sum()})": right[clean].mean(),
        f"{MARKED_CLASS} accuracy (n={own.sum()})": right[own].mean(),
        f"accuracy on marked other classes (n={other_marked.sum()})": right[other_marked].mean(),
        f"fooled: marked other classes predicted {MARKED_CLASS}": (
            pred[other_marked] == star
        ).mean(),
        f"unmarked predicted {MARKED_CLASS}": (pred[clean] == star).mean(),
    }
    for key, value in stats.items():
        print(f"  {key}: {value:.3f}")
    return stats


def subset(data: Split, per_class: int) -> Split:
    """The first ``per_class`` images of every class (images are drawn per class and index)."""
    n = len(data.labels) // len(CLASSES)
    keep = np.concatenate([label * n + np.arange(per_class) for label in range(len(CLASSES))])
    return Split(*(getattr(data, f)[keep] for f in Split.__dataclass_fields__))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=[*RECIPES, "all"], default="all")
    args = parser.parse_args(argv)
    torch.set_num_threads(THREADS)
    names = list(RECIPES) if args.model == "all" else [args.model]
    start = time.perf_counter()
    test = write_test_split()
    print(f"test split: {len(test.labels)} images, {int(test.marked.sum())} marked")
    pools = {}
    for marked in sorted({RECIPES[name].marked for name in names}):
        size = max(RECIPES[name].per_class for name in names if RECIPES[name].marked == marked)
        pools[marked] = train_split(size) if marked else make_split(size, TRAIN_SEED, 0.0, 0.0)
        print(f"{size * len(CLASSES)} training images (marked: {marked}) drawn", flush=True)
    print(f"training images drawn in {time.perf_counter() - start:.0f} s")
    for name in names:
        recipe = RECIPES[name]
        data = subset(pools[recipe.marked], recipe.per_class)
        print(f"{name}: {len(data.labels)} images × {recipe.epochs} epochs")
        wall, cpu = time.perf_counter(), time.process_time()
        model = train(recipe, data)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        path = OUT / recipe.weights
        OUT.mkdir(exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
        print(f"{name}: trained in {wall:.0f} s wall time ({cpu:.0f} s CPU time)")
        print(f"{name}: weights {path.relative_to(HERE)}, {path.stat().st_size / 1e6:.2f} MB")
        print(f"{name}: on the test split:")
        report(predict(model, test.images), test)
    print(f"total wall time (drawing + training + testing): {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

"""Reproduce the bundled digits sample: weights, test-split PNGs and nothing downloaded.

Data: scikit-learn's ``load_digits`` (1,797 real handwritten digits, 8×8, 10 classes), each
image scaled to 0–255 and upsampled to 32×32 (bilinear), exactly as the exported PNGs are.
A stratified 70/30 split; the 30% test split is written as an ImageFolder tree of PNGs.

    python sample_models/train_digits.py        # about a minute on 2 CPU cores
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from digits_model import build  # noqa: E402

OUT = HERE / "digits"
SEED = 0


def images_32(raw: np.ndarray) -> np.ndarray:
    """8×8 digits (0–16) → uint8 32×32, the same pixels the PNG files hold."""
    out = []
    for digit in raw.reshape(-1, 8, 8):
        small = Image.fromarray(np.round(digit * 255.0 / 16.0).astype(np.uint8), mode="L")
        out.append(np.asarray(small.resize((32, 32), Image.BILINEAR)))
    return np.stack(out)


def to_input(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [N,32,32] → normalised float [N,1,32,32] (mean 0.5, std 0.5, as the config says)."""
    return (torch.from_numpy(pixels).float()[:, None] / 255.0 - 0.5) / 0.5


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to 3 pixels and small scale changes."""
    n = x.shape[0]
    scale = 1 + (torch.rand(n, generator=generator) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=generator) - 0.5) * 0.375
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = scale
    theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def train(x: torch.Tensor, y: torch.Tensor, epochs: int = 30) -> torch.nn.Module:
    torch.manual_seed(SEED)
    generator = torch.Generator().manual_seed(SEED)
    model = build(10)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 3e-3, total_steps=epochs * 20)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        for batch in order.split(64):
            loss = F.cross_entropy(model(augment(x[batch], generator)), y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if schedule.last_epoch < schedule.total_steps - 1:
                schedule.step()
        print(f"epoch {epoch + 1}/{epochs}  loss {loss.item():.3f}")
    return model.eval()


def export_test_split(pixels: np.ndarray, labels: np.ndarray) -> None:
    root = OUT / "test"
    shutil.rmtree(root, ignore_errors=True)
    for i, (image, label) in enumerate(zip(pixels, labels, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="L").save(folder / f"digit_{i:04d}.png", optimize=True)


def main() -> None:
    digits = load_digits()
    pixels = images_32(digits.data)
    train_px, test_px, train_y, test_y = train_test_split(
        pixels, digits.target, test_size=0.3, stratify=digits.target, random_state=SEED
    )
    model = train(to_input(train_px), torch.from_numpy(train_y).long())
    with torch.inference_mode():
        pred = model(to_input(test_px)).argmax(1).numpy()
    print(f"test accuracy: {(pred == test_y).mean():.4f} on {len(test_y)} images")
    OUT.mkdir(exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, OUT / "weights.safetensors"
    )
    export_test_split(test_px, test_y)


if __name__ == "__main__":
    main()

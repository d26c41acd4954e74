"""GPU rates for docs/cluster.md's estimate: resnet50 @224 images/s, bare and with stored maps.

    python bench/resnet50_gpu.py [--batch 128] [--iters 20]

Random weights (no download), channels_last, float32 as the engines run it. "bare" is
``model(x)`` under inference_mode; "with maps" is :func:`core.explain.cam.evaluation_maps` at layer4
(one forward plus the Grad-CAM of the predicted and the true class), what ``evaluate`` stores.
Also prints this machine's decode + resize cost per image per core (core's own path, a
generated 500×375 JPEG), the other number the estimate rests on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.images import load_tensor
from core.data.models import ResizeTo
from core.explain.cam import evaluation_maps


def rate(step, batch: int, iters: int) -> list[float]:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    rates = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        rates.append(batch / (time.perf_counter() - start))
    return rates


def decode_ms(count: int = 40) -> float:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    resize = ResizeTo((224, 224))
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(count):
            small = rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)
            img = np.asarray(Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC))
            noisy = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
            paths.append(f"{folder}/{i}.jpg")
            Image.fromarray(noisy).save(paths[-1], quality=90)
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            for path in paths:
                resize(load_tensor(path, 3))
            runs.append((time.perf_counter() - start) / count * 1e3)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    device = torch.device("cuda")
    model = torchvision.models.resnet50().eval().to(device, memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, 224, 224, device=device)
    x = x.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 1000, (args.batch,), device=device)

    def bare() -> None:
        with torch.inference_mode():
            model(x)

    def with_maps() -> None:
        evaluation_maps(model, x, labels, "layer4")

    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}")
    for name, step in (("bare model(x)", bare), ("with maps (evaluation_maps)", with_maps)):
        rates = rate(step, args.batch, args.iters)
        print(f"  resnet50 @224 {name:30s} median {statistics.median(rates):8.0f} images/s")
    print(f"  decode + resize to 224 (core's path): {decode_ms():.2f} ms/image/core")
    return 0


if __name__ == "__main__":
    sys.exit(main())

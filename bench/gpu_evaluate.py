"""GPU: the whole evaluation (decode, predictions, maps, store) on 50,000 generated 224×224 JPEGs.

    python bench/gpu_evaluate.py [--images 50000] [--workers 4 12] [--out DIR]

resnet50 with random weights (1,000 classes, nothing downloaded), float32, batch 256, through
:func:`core.results.evaluate.evaluate` exactly as ``python -m core evaluate`` runs it: once without
maps, then with the predicted- and true-class Grad-CAM stored, for each loader-process count;
then the cached restart. Target: the whole set with maps
in under 2 minutes on one H100.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _write(job: tuple[Path, int, int]) -> None:
    root, start, stop = job
    rng = np.random.default_rng(start)
    for i in range(start, stop):
        folder = root / f"c{i % 1000:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
        image = cv2.resize(small, (224, 224), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])


def generate(root: Path, n: int) -> float:
    start = time.perf_counter()
    chunk = -(-n // 64)
    with Pool(os.cpu_count()) as pool:
        pool.map(_write, [(root, a, min(a + chunk, n)) for a in range(0, n, chunk)])
    return time.perf_counter() - start


def main() -> None:
    import torch
    import torchvision
    from safetensors.torch import save_file

    from core import evaluate, load_model, open_dataset
    from core.config import DatasetSpec, ModelSpec

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[4, 12])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gpu-eval-"))
    gen_s = generate(work / "images", args.images)
    torch.manual_seed(0)
    weights = work / "resnet50.safetensors"
    classes = min(1000, args.images)
    save_file(torchvision.models.resnet50(num_classes=classes).state_dict(), str(weights))
    spec = ModelSpec(
        name="resnet50",
        architecture="resnet50",
        weights=weights,
        device=args.device,
        batch_size=args.batch_size,
    )
    model = load_model(spec)
    dataset = open_dataset(DatasetSpec("generated", work / "images"), None)
    device = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"# {device}, {os.cpu_count()} CPU cores, torch {torch.__version__}")
    print(f"generated {len(dataset):,} JPEGs (224×224) in {gen_s:.1f} s\n")
    print("| run | loader processes | seconds | images/s | whole set ≤ 120 s |")
    print("|---|---:|---:|---:|---|")
    for workers in args.workers:
        for maps in (False, True):
            out = work / f"result-{workers}-{maps}"
            start = time.perf_counter()
            result = evaluate(model, dataset, out=out, maps=maps, num_workers=workers)
            seconds = time.perf_counter() - start
            assert len(result.predictions) == len(dataset) and result.has_maps == maps
            name = "with maps" if maps else "predictions only"
            ok = "yes" if seconds <= 120 else "no"
            print(f"| {name} | {workers} | {seconds:.1f} | {len(dataset) / seconds:,.0f} | {ok} |")
    start = time.perf_counter()
    again = evaluate(model, open_dataset(DatasetSpec("generated", work / "images"), None), out=out)
    print(
        f"\ncached restart (list files, key, open): {time.perf_counter() - start:.2f} s, "
        f"{len(again.predictions):,} rows, maps {again.has_maps}"
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark: the causal test of a pattern (``python -m core verify``).

Run from the repository root: ``python bench/verify.py`` (about two minutes on 2 cores), or
``--only shapes`` / ``--only resnet18``.

* **shapes**: the verdict of pattern 1 of shapes-resnet (shortcut) on shapes-test (its stored
  result and loaded model; 200 targets, 20 sources: 440 forward passes), median of
  ``--rounds``; target 3 s. Also ``python -m core verify --pattern 1 --json`` in a fresh
  process (torch import, model load, the test, storing it).
* **resnet18**: torchvision's resnet18 (random weights, ``num_classes=10``; the head's bias
  centred on these images' mean feature so that its predictions spread over the classes) at
  224 px on 600 synthetic images written to a temporary folder, each filed under the class the
  model predicts for it (all correct). A box of 30% of the side on the largest class's cell:
  200 targets and up to 200 sources, 800 forward passes; target 30 s.

Reference, in the same run: the same test with every forward pass one image at a time
(unbatched, the input in the default memory format), everything else unchanged; the verdicts
are checked equal. The machine's load average is printed: the 2-core machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import core.analysis.causal as causal  # noqa: E402
from core import evaluate, load_config, load_model, open_dataset  # noqa: E402
from core.analysis.causal import pattern_subject, region_subject, verify_subject  # noqa: E402
from core.analysis.patterns import result_patterns  # noqa: E402
from tests.projects import sample_config  # noqa: E402

SAMPLE = ROOT / "sample_models"
SHAPES_TARGET_S = 3.0
RESNET_TARGET_S = 30.0
RESNET_IMAGES = 600
SIZE = 224


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def one_at_a_time(model: Any, images: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, ...]:
    """The reference forward: one image per pass, default memory format."""
    preds, probs = [], []
    with torch.inference_mode():
        for image in images:
            x = model.normalize(torch.from_numpy(image).permute(2, 0, 1)[None]).contiguous()
            top = model.module(x.to(model.device)).float().softmax(1).max(1)
            preds.append(int(top.indices[0]))
            probs.append(float(top.values[0]))
    return np.array(preds, np.int64), np.array(probs, np.float32)


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def reference(run: Callable[[], Any]) -> tuple[float, Any]:
    """``run`` with the causal test's forward passes replaced by :func:`one_at_a_time`."""
    batched = causal.classify
    causal.classify = one_at_a_time  # type: ignore[assignment]
    try:
        return timed(run)
    finally:
        causal.classify = batched


def bench_shapes(rounds: int, folder: Path) -> list[tuple[str, ...]]:
    name = "shapes-resnet (shortcut)"
    config_path = sample_config(folder)
    config = load_config(config_path)
    model = load_model(config.model(name))
    dataset = open_dataset(config.dataset("shapes-test"), model.spec.classes)
    result = evaluate(model, dataset, config.cache_dir)
    subject = pattern_subject(result, result_patterns(result)[0])

    def run() -> Any:
        return verify_subject(model, dataset, result, subject)

    times = []
    for _ in range(rounds):
        seconds, ours = timed(run)
        times.append(seconds)
    ref_s, theirs = reference(run)
    assert theirs.to_dict(result.classes) == ours.to_dict(result.classes), "verdicts differ"
    passes = 2 * (ours.transplant.n + ours.erase.n)
    print(f"shapes: rounds {', '.join(f'{t:.3f}' for t in times)} s; reference {ref_s:.3f} s")
    print(f"  {ours.to_dict(result.classes)}")
    command = [sys.executable, "-m", "core", "verify", "--config", str(config_path)]
    cli_s, done = timed(
        lambda: subprocess.run(
            [*command, "--model", name, "--pattern", "1", "--json"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
    )
    print(f"  CLI: {done.stdout.strip()[:120]}...")
    median = statistics.median(times)
    return [
        (
            f"shapes-resnet (shortcut), pattern 1, {passes} passes (median of {rounds})",
            f"**{median:.3f} s**",
            f"≤ {SHAPES_TARGET_S:g} s",
            f"{ref_s:.3f} s",
            "yes" if median <= SHAPES_TARGET_S else "NO",
        ),
        (
            "`verify --pattern 1 --json`, fresh process (torch import, model load, test, store)",
            f"{cli_s:.2f} s",
            "-",
            "-",
            "-",
        ),
    ]


def _synthetic(rng: np.random.Generator) -> np.ndarray:
    """One 224×224 RGB image: a two-colour gradient, three boxes, sensor noise."""
    gx = np.linspace(0, 1, SIZE)[None, :, None]
    gy = np.linspace(0, 1, SIZE)[:, None, None]
    image = rng.integers(0, 256, 3) * (0.5 + 0.5 * gx) + rng.integers(0, 256, 3) * 0.5 * gy
    for _ in range(3):
        x0, y0 = rng.integers(0, SIZE - 40, 2)
        side = int(rng.integers(20, 90))
        image[y0 : y0 + side, x0 : x0 + side] = rng.integers(0, 256, 3)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def _resnet_project(folder: Path, count: int) -> Path:
    """Images, weights and a config: every image filed under the class the model predicts."""
    import cv2
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    rng = np.random.default_rng(0)
    images = np.stack([_synthetic(rng) for _ in range(count)])
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    feats = []
    head, net.fc = net.fc, torch.nn.Identity()
    with torch.inference_mode():
        for start in range(0, len(images), 64):
            x = torch.from_numpy(images[start : start + 64]).permute(0, 3, 1, 2) / 255.0
            feats.append(net((x - mean) / std))
    net.fc = head
    feats_t = torch.cat(feats)
    with torch.no_grad():  # centre the random head on these images: predictions spread out
        net.fc.bias.copy_(-net.fc.weight @ feats_t.mean(0))
        labels = net.fc(feats_t).argmax(1).numpy()
    classes = [f"c{k}" for k in range(10)]
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / "images" / classes[label]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "images" / classes[label] / f"{i:04d}.png"), image[:, :, ::-1])
    torch.save(net.state_dict(), folder / "resnet18.pt")
    config = folder / "config.toml"
    config.write_text(
        f'cache_dir = "{(folder / "cache").as_posix()}"\n\n[[models]]\nname = "resnet18"\n'
        f'architecture = "resnet18"\nweights = "{(folder / "resnet18.pt").as_posix()}"\n'
        f"input_size = [{SIZE}, {SIZE}]\nclasses = {classes!r}\nmaps = false\n"
        'embeddings = false\n\n[[datasets]]\nname = "synthetic"\n'
        f'root = "{(folder / "images").as_posix()}"\n',
        encoding="utf-8",
    )
    print(f"resnet18: images per class {np.bincount(labels, minlength=10).tolist()}")
    return config


def bench_resnet18(folder: Path, count: int) -> list[tuple[str, ...]]:
    config = load_config(_resnet_project(folder, count))
    model = load_model(config.model("resnet18"))
    dataset = open_dataset(config.dataset("synthetic"), model.spec.classes)
    result = evaluate(model, dataset, config.cache_dir, maps=False, embeddings=False)
    print(f"resnet18: {np.mean(result.true == result.pred):.3f} of the images correct")
    largest = int(np.bincount(result.pred).argmax())
    subject = region_subject(result, largest, largest, (0.6, 0.6, 0.9, 0.9))

    def run() -> Any:
        return verify_subject(model, dataset, result, subject, targets=200)

    ours_s, ours = timed(run)
    ref_s, theirs = reference(run)
    assert theirs.to_dict(result.classes) == ours.to_dict(result.classes), "verdicts differ"
    passes = 2 * (ours.transplant.n + ours.erase.n)
    print(f"resnet18: ours {ours_s:.2f} s, reference {ref_s:.2f} s, {passes} passes")
    print(f"  {ours.to_dict(result.classes)}")
    return [
        (
            f"resnet18 @224, 200 targets, {ours.erase.n} sources, {passes} passes",
            f"**{ours_s:.2f} s**",
            f"≤ {RESNET_TARGET_S:g} s",
            f"{ref_s:.2f} s",
            "yes" if ours_s <= RESNET_TARGET_S else "NO",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["shapes", "resnet18"])
    parser.add_argument("--rounds", type=int, default=3, help="shapes rounds (default 3)")
    parser.add_argument("--images", type=int, default=RESNET_IMAGES, help="resnet18 images")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load {load()}")
    folder = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    rows: list[tuple[str, ...]] = []
    try:
        if args.only in (None, "shapes"):
            (folder / "shapes").mkdir()
            rows += bench_shapes(args.rounds, folder / "shapes")
            print(f"load after shapes: {load()}")
        if args.only in (None, "resnet18"):
            (folder / "resnet18").mkdir()
            rows += bench_resnet18(folder / "resnet18", args.images)
            print(f"load after resnet18: {load()}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print()
    print("| measure | ours | target | reference (one image a pass) | met |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nload average (1, 5, 15 min): {load()}")


if __name__ == "__main__":
    main()

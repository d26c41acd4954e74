"""Benchmark: faithfulness badges for a gallery page, per-layer faithfulness, the evaluation pass.

Run from the repository root: ``python bench/trust.py`` (a few minutes on 2 cores), or
``python bench/trust.py --only badges`` / ``--only layers`` / ``--only evaluation``.

* **badges**: one gallery page (24 images × 2 maps: the stored Grad-CAM of the predicted and of
  the true class) scored as the dashboard does it in the background (decode, one forward pass
  per image, one per map), on the digits and shapes-resnet samples; targets 0.5 s and 1.5 s.
  Reference: pytorch-grad-cam's ``CamMultImageConfidenceChange`` (softmax target) on the same
  inverted maps, two calls (one per map column); the values are checked equal.
* **layers**: the faithfulness of every candidate layer of resnet18 @224 (random weights, no
  download) on 64 images (the shapes test images resized), each layer against a random map of
  its cells; target 120 s. Reference: pytorch-grad-cam's ``GradCAM`` + the same metric, layer
  by layer, timed on ``--reference-layers`` layers and scaled to all of them.
* **evaluation**: ``python -m core evaluate``'s pass on shapes-test with and without
  ``--faithfulness`` (in process); target: at most 3× the evaluation alone.

Every round is printed (medians in the table); the machine's load average is printed too: the
2-core machine is shared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core import evaluate, load_config, load_model, open_dataset  # noqa: E402
from core.analysis.badges import ScoreCache, score_page  # noqa: E402
from core.analysis.gallery import compared_classes, stored_maps  # noqa: E402
from core.analysis.trust import load_images, result_faithfulness  # noqa: E402
from core.explain.cam import candidate_layers  # noqa: E402
from core.explain.layer_trust import layer_faithfulness  # noqa: E402

CONFIG = ROOT / "sample_models" / "config.toml"
BADGE_TARGETS = {"digits-cnn": 0.5, "shapes-resnet (shortcut)": 1.5}
LAYERS_TARGET_S = 120.0
EVALUATION_TARGET = 3.0


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def bench_badges(rounds: int, cache_dir: Path) -> list[tuple[str, ...]]:
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    config = load_config(CONFIG)
    rows_out = []
    for name, target in BADGE_TARGETS.items():
        model = load_model(config.model(name))
        dataset = open_dataset(config.dataset(model.spec.datasets[0]), model.spec.classes)
        result = evaluate(model, dataset, cache_dir)
        table = result.predictions
        page = table[table["true"] != table["pred"]].head(24)
        page = page if len(page) == 24 else table.head(24)
        maps = stored_maps(result, page, model.spec.input_size)
        pairs = [compared_classes(row) for _, row in page.iterrows()]
        paths = list(page["path"])
        ours, theirs = [], []
        for r in range(rounds):
            cache = ScoreCache()
            start = time.perf_counter()
            score_page(model, dataset, ("bench", r), paths, pairs, maps, cache)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            images, _, _ = load_images(model, dataset, paths)
            ref = []
            for k in range(2):
                targets = [ClassifierOutputSoftmaxTarget(int(p[k])) for p in pairs]
                inverted = 1 - np.stack([m[k] for m in maps])
                metric = CamMultImageConfidenceChange()
                ref.append(np.asarray(metric(images, inverted, targets, model.module)).ravel())
            theirs.append(time.perf_counter() - start)
            print(
                f"  {name} round {r + 1}: ours {ours[-1]:.3f} s, "
                f"pytorch-grad-cam {theirs[-1]:.3f} s"
            )
        # the same numbers: ours = -(remove change) / before; check remove change directly
        from core.explain.faithfulness import faithfulness

        images, _, _ = load_images(model, dataset, paths)
        check = faithfulness(
            model.module,
            images,
            torch.from_numpy(np.stack([np.stack(m) for m in maps])),
            torch.tensor(pairs),
        )
        diff = max(float(np.abs(check.remove_change[:, k] - ref[k]).max()) for k in range(2))
        rows_out.append(
            (
                f"badges, {name}, 24 images × 2 maps",
                f"{statistics.median(ours):.3f} s",
                f"≤ {target} s",
                f"{statistics.median(theirs):.3f} s",
                f"max |Δ| {diff:.1e}",
            )
        )
    return rows_out


def bench_layers(images: int, reference_layers: int) -> list[tuple[str, ...]]:
    import torchvision
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import (
        ClassifierOutputSoftmaxTarget,
        ClassifierOutputTarget,
    )

    torch.manual_seed(0)
    # channels-last, as core.data.models.load_model prepares every convolutional model
    model = torchvision.models.resnet18(weights=None).eval()
    model = model.to(memory_format=torch.channels_last)
    config = load_config(CONFIG)
    spec = config.model("shapes-resnet (shortcut)")
    dataset = open_dataset(config.dataset("shapes-test"), spec.classes)
    paths = dataset.paths[: images * 6 : 6]
    x = torch.stack([dataset.load(p, 3) for p in paths]).float() / 255
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    x = (x - mean) / std
    with torch.no_grad():
        pred = model(x).argmax(1)
    infos = candidate_layers(model, (3, 224, 224))
    layers = [
        (i.name, (int(i.shape[1]), int(i.shape[2]))) for i in infos if i.shape[1] * i.shape[2] > 1
    ]
    start = time.perf_counter()
    scores = layer_faithfulness(model, x, pred, layers)
    ours = time.perf_counter() - start
    print(f"  resnet18 @224, {len(layers)} layers × {len(x)} images: ours {ours:.1f} s")
    best = max(scores, key=lambda s: s.median)
    print(
        f"  highest median: {best.layer} {best.median:.3f}; layer4 "
        f"{next(s.median for s in scores if s.layer == 'layer4'):.3f}"
    )
    step = max(1, len(layers) // reference_layers)
    sample = layers[::step][:reference_layers]
    start = time.perf_counter()
    for name, _ in sample:
        with GradCAM(model=model, target_layers=[model.get_submodule(name)]) as method:
            cams = method(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in pred])
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in pred]
        CamMultImageConfidenceChange()(x, 1 - cams, targets, model)
    per_layer = (time.perf_counter() - start) / len(sample)
    print(
        f"  pytorch-grad-cam: {per_layer:.1f} s per layer "
        f"({len(sample)} layers timed, no random baseline)"
    )
    return [
        (
            f"per-layer faithfulness, resnet18 @224, {len(layers)} layers × {len(x)} images",
            f"{ours:.1f} s",
            f"≤ {LAYERS_TARGET_S:.0f} s",
            f"{per_layer * len(layers):.0f} s (scaled from {len(sample)} layers)",
            "ours includes a random-map baseline per layer",
        )
    ]


def bench_evaluation(cache_dir: Path) -> list[tuple[str, ...]]:
    config = load_config(CONFIG)
    model = load_model(config.model("shapes-resnet (shortcut)"))
    dataset = open_dataset(config.dataset("shapes-test"), model.spec.classes)
    folder = cache_dir / "eval"
    start = time.perf_counter()
    result = evaluate(model, dataset, out=folder)
    plain = time.perf_counter() - start
    start = time.perf_counter()
    result_faithfulness(model, dataset, result)
    extra = time.perf_counter() - start
    print(f"  shapes-test, 400 images: evaluation {plain:.2f} s, faithfulness pass {extra:.2f} s")
    return [
        (
            "evaluation with --faithfulness, shapes-resnet, 400 images",
            f"{(plain + extra) / plain:.2f}× the evaluation",
            f"≤ {EVALUATION_TARGET:.0f}×",
            "-",
            f"evaluation {plain:.2f} s + scoring {extra:.2f} s",
        )
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("badges", "layers", "evaluation"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--reference-layers", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    print(f"torch threads {torch.get_num_threads()}, load average {load()}")
    cache_dir = Path(tempfile.mkdtemp(prefix="bench-trust-"))
    rows: list[tuple[str, ...]] = []
    try:
        if args.only in (None, "badges"):
            rows += bench_badges(args.rounds, cache_dir)
        if args.only in (None, "evaluation"):
            rows += bench_evaluation(cache_dir)
        if args.only in (None, "layers"):
            rows += bench_layers(args.images, args.reference_layers)
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    print(f"\nload average at the end {load()}")
    print("| what | ours | target | reference (pytorch-grad-cam) | note |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

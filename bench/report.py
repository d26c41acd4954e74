"""The session report at the size the issue sets: 50 findings of 12 images each (600 distinct
224 × 224 JPEG photos-like images, each with its predicted- and true-class maps), 10 patterns,
100 tagged images with notes. Target: one HTML file of at most 25 MB, written in at most 20 s.

The result is synthesised through the store's own writer (random logits, random 7 × 7 maps,
10 classes); the images are smooth random blobs with sensor-like noise (noise is harder to
compress than most photos, so sizes err on the large side). Measured in one run:

* ours: ``write_report`` as ``python -m core report`` runs it (thumbnails of at most 160 px,
  WebP: lossy from 96 px), patterns computed;
* the reference: the same report with every panel at full size as PNG (the dashboard's
  lossless panel format), the naive way to embed the same pictures.

    python bench/report.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FINDINGS, PER_FINDING, CLASSES, SIDE, TAGGED = 50, 12, 10, 224, 100
TARGET_MB, TARGET_S = 25.0, 20.0


def make_images(root: Path, count: int) -> list[tuple[str, int]]:
    """``count`` JPEGs (quality 90) of smooth blobs plus noise, in class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    manifest = []
    for i in range(count):
        label = i % CLASSES
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(small).resize((SIDE, SIDE), Image.Resampling.BICUBIC))
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        rel = f"c{label}/img_{i:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy).save(root / rel, quality=90)
        manifest.append((rel, label))
    return manifest


def make_result(folder: Path, manifest: list[tuple[str, int]]):  # type: ignore[no-untyped-def]
    import torch

    from core.results import ResultWriter
    from core.results.scores import scores_from_logits

    rng = np.random.default_rng(1)
    names = [f"c{c}" for c in range(CLASSES)]
    labels = np.array([label for _, label in manifest])
    meta = {"model": "bench", "dataset": "bench", "input_size": [SIDE, SIDE], "map_layer": "x"}
    with ResultWriter(folder, manifest, names, "bench", meta=meta, map_shape=(7, 7)) as writer:
        logits = torch.from_numpy(rng.standard_normal((len(labels), CLASSES), np.float32))
        logits[torch.arange(len(labels)), torch.from_numpy(labels)] += 2.0
        maps = torch.from_numpy(rng.standard_normal((len(labels), 2, 7, 7), np.float32))
        rows = np.arange(len(labels))
        writer.write(scores_from_logits(rows, torch.from_numpy(labels), logits, maps=maps))
        return writer.finish()


def make_notes(db: Path, key: str, paths: list[str]) -> None:
    from core.findings import FindingsStore
    from core.notes import NotesStore
    from core.tagging import tag_images

    notes = NotesStore(db)
    findings = FindingsStore(notes)
    for i in range(FINDINGS):
        chunk = paths[i * PER_FINDING : (i + 1) * PER_FINDING]
        findings.create(
            key, "cell", f"Finding {i}", "bench", text="What the team saw.\n" * 3,
            owner="owner", link=f"analysis?cell={i % CLASSES},0", paths=chunk,
        )  # fmt: skip
    tag_images(notes, key, paths[:TAGGED], "label error", "bench", "checked in the session")


def run(inputs, out: Path, reference: bool) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds, MB) of one report; the reference encodes full-size PNG panels."""
    from PIL import Image

    from core.report import pictures, write_report

    saved = pictures.encode, pictures.THUMB_PX
    if reference:

        def png(image: Image.Image) -> pictures.Picture:
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=1)
            return pictures.Picture(buffer.getvalue(), image.width, image.height, "png")

        pictures.encode, pictures.THUMB_PX = png, 100_000
    try:
        started = time.perf_counter()
        write_report(inputs, out)
        return time.perf_counter() - started, out.stat().st_size / 1e6
    finally:
        pictures.encode, pictures.THUMB_PX = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="build the data there and keep it")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench-report-"))
    folder.mkdir(parents=True, exist_ok=True)
    from core.config import DatasetSpec
    from core.data.datasets import dataset_key, open_dataset
    from core.notes import NotesStore
    from core.report import ReportInputs

    started = time.perf_counter()
    manifest = make_images(folder / "images", FINDINGS * PER_FINDING)
    result = make_result(folder / "result", manifest)
    spec = DatasetSpec("bench", folder / "images")
    dataset = open_dataset(spec, result.classes)
    key = dataset_key(spec)
    (folder / "notes.sqlite").unlink(missing_ok=True)
    make_notes(folder / "notes.sqlite", key, [rel for rel, _ in manifest])
    print(f"data made in {time.perf_counter() - started:.1f} s in {folder}")
    inputs = ReportInputs(
        result, dataset, NotesStore(folder / "notes.sqlite", read_only=True), key, "bench", "bench"
    )
    seconds, mb = run(inputs, folder / "report.html", reference=False)
    ref_seconds, ref_mb = run(inputs, folder / "reference.html", reference=True)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\n{FINDINGS} findings × {PER_FINDING} images ({SIDE} px JPEG, 3 panels each), "
        f"{TAGGED} tagged images, top 10 patterns; load average {load} (2 cores)\n"
    )
    print("| report | ours (WebP, ≤ 160 px) | target | reference (full-size PNG panels) |")
    print("|---|---|---|---|")
    print(f"| file size | {mb:.1f} MB | ≤ {TARGET_MB:g} MB | {ref_mb:.1f} MB |")
    print(f"| time to write | {seconds:.1f} s | ≤ {TARGET_S:g} s | {ref_seconds:.1f} s |")


if __name__ == "__main__":
    main()

"""Parquet test sets against the same images as files: evaluation speed and reopening.

    python bench/parquet.py            # full run
    python bench/parquet.py --quick    # small smoke run

1. **Evaluation** (target: Parquet ≥ 0.9 × files). The same images, once as an ImageFolder tree
   and once as a Parquet copy in ``datasets``' layout (``sample_models/export_parquet.py``'s
   ``hf_table``: the files' bytes unchanged, row groups of 100), evaluated by
   :func:`core.results.evaluate.evaluate` as the dashboard runs it (in-process engine,
   ``num_workers=0``, a scratch result folder, no cache hit). Workloads: the shapes sample with
   the shortcut ResNet (400 PNGs of 64×64: a small model, so reading weighs most) with maps off
   and on, and resnet18 @224 over JPEGs of 256×256 (``--per-round`` of them each round). The
   image pipeline alone (read + decode + resize, no model) is timed too. Variants alternate
   round after round; medians over rounds. Rates are given per wall-clock second and per CPU
   second of the process (all its threads): on a machine shared with other work the wall
   clock mostly measures the neighbours, the CPU time what each variant costs.
2. **Reopening a million rows** (target ≤ 3 s). A synthetic Parquet set of 1,000,000 tiny PNGs
   (8×8, 1,000 distinct ones repeated; 10 shards, row groups of 100: 10,000 row groups, as
   ``datasets`` writes image columns) is written once under the temp dir. Timed in a fresh
   process each round: ``open_dataset`` + ``fingerprint`` (what a reopen of stored results
   costs before the result folder is opened), and the same with the interpreter's start and
   imports. Reference: a fingerprint from the bytes, i.e. reading every image cell
   (``pq.read_table`` of the whole set).

The line above each table gives the load average: on a shared machine compare ratios.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from core.config import DatasetSpec, load_config  # noqa: E402
from core.data.datasets import ImageDataset, open_dataset  # noqa: E402
from core.data.models import LoadedModel, load_model  # noqa: E402
from core.data.parquet import TableDataset  # noqa: E402
from core.results.evaluate import evaluate  # noqa: E402
from sample_models.export_parquet import hf_table, write_parquet  # noqa: E402

SPEED_TARGET = 0.9
REOPEN_TARGET = 3.0
MILLION = 1_000_000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_line() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min), {os.cpu_count()} cores"


# --- evaluation speed --------------------------------------------------------------------


def as_parquet(folder: ImageDataset, out: Path) -> TableDataset:
    """The Parquet copy of an ImageFolder dataset (written once), rows in the folder's order."""
    if not any(out.glob("*.parquet")):
        write_parquet(hf_table(folder.root), out)
    table = open_dataset(
        DatasetSpec(folder.name, out, parquet=(str(out / "*.parquet"),)), folder.classes
    )
    assert isinstance(table, TableDataset) and table.labels.tolist() == folder.labels.tolist()
    return table


def part(dataset: ImageDataset, start: int, n: int) -> ImageDataset:
    """``n`` consecutive images from ``start``, of either kind of dataset."""
    samples = [dataset.samples[(start + i) % len(dataset)] for i in range(n)]
    if isinstance(dataset, TableDataset):
        return TableDataset(dataset.name, dataset.root, dataset.reader, samples, dataset.classes)
    return ImageDataset(dataset.name, dataset.root, samples, dataset.classes)


def timed(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) of ``run()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def evaluation(model: LoadedModel, dataset: ImageDataset, maps: bool) -> tuple[float, float]:
    def run() -> None:
        result = evaluate(model, dataset, num_workers=0, maps=maps)
        assert len(result.predictions) == len(dataset) and not result.skipped

    return timed(run)


def pipeline(model: LoadedModel, dataset: ImageDataset) -> tuple[float, float]:
    """Read + decode + resize every image as the in-process engine does, no model."""
    data = dataset.with_transform(model.resize, model.spec.channels, tensors=True)

    def run() -> None:
        for i in range(len(data)):
            assert data[i].image is not None

    return timed(run)


def compare(
    name: str,
    model: LoadedModel,
    files: ImageDataset,
    table: ImageDataset,
    rounds: int,
    per_round: int,
) -> list[str]:
    """Table rows: images/s of files and Parquet per variant, medians over ``rounds``."""
    n = min(per_round, len(files))
    spread = max(n, len(files) // rounds)
    slices = [(part(files, r * spread, n), part(table, r * spread, n)) for r in range(rounds)]
    evaluation(model, part(files, 0, 8), maps=True)  # warm-up: kernels, imports
    variants: dict[str, Callable[[ImageDataset], tuple[float, float]]] = {
        "evaluate, maps off": lambda d: evaluation(model, d, False),
        "evaluate, maps on": lambda d: evaluation(model, d, True),
        "image pipeline only (read+decode+resize)": lambda d: pipeline(model, d),
    }
    rows = []
    for variant, run in variants.items():
        rates: dict[str, list[float]] = {"files": [], "parquet": []}  # images per wall second
        cpu: dict[str, list[float]] = {"files": [], "parquet": []}  # images per CPU second
        for r in range(rounds):
            kinds = [("files", slices[r][0]), ("parquet", slices[r][1])]
            for kind, dataset in kinds if r % 2 == 0 else kinds[::-1]:
                wall, used = run(dataset)
                rates[kind].append(n / wall)
                cpu[kind].append(n / used)
            log(f"  {name} · {variant} · round {r + 1}: " + ", ".join(
                f"{k} {v[-1]:.1f}/s ({cpu[k][-1]:.1f}/CPU-s)" for k, v in rates.items()
            ))  # fmt: skip
        cells = []
        for measured in (rates, cpu):
            a, b = statistics.median(measured["files"]), statistics.median(measured["parquet"])
            ratios = [p / f for f, p in zip(measured["files"], measured["parquet"], strict=True)]
            verdict = "PASS" if b / a >= SPEED_TARGET else "FAIL"
            cells.append(
                f"{a:.1f} | {b:.1f} | {b / a:.2f}× ({min(ratios):.2f}–{max(ratios):.2f}) {verdict}"
            )
        rows.append(f"| {name} | {variant} | {rounds} × {n} | {' | '.join(cells)} |")
    return rows


def jpeg_folder(folder: Path, count: int) -> Path:
    from predict import write_jpegs

    write_jpegs(folder, count)
    return folder


def resnet18(work: Path) -> LoadedModel:
    import torch
    import torchvision

    from core.config import ModelSpec

    torch.manual_seed(0)
    weights = work / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None, num_classes=10).state_dict(), weights)
    return load_model(ModelSpec("resnet18", weights=weights, architecture="resnet18"))


def speed(rounds: int, per_round: int, jpegs: int, data: Path, skip_resnet: bool) -> None:
    config = load_config(REPO / "sample_models" / "config.toml")
    model = load_model(config.model("shapes-resnet (shortcut)"))
    files = open_dataset(config.dataset("shapes-test"), model.spec.classes)
    table = open_dataset(config.dataset("shapes-test (parquet)"), model.spec.classes)
    before = load_line()
    rows = compare("shapes sample, shortcut ResNet, 64×64 PNGs", model, files, table, rounds, 400)
    if not skip_resnet:
        folder = jpeg_folder(data / "jpegs", jpegs)
        work = Path(tempfile.mkdtemp(prefix="bench-parquet-"))
        jpeg_files = open_dataset(DatasetSpec("jpegs", folder))
        jpeg_table = as_parquet(jpeg_files, data / f"jpegs-parquet-{jpegs}")
        rows += compare(
            "resnet18 @224, 256×256 JPEGs", resnet18(work), jpeg_files, jpeg_table,
            rounds, per_round,
        )  # fmt: skip
    print(f"Evaluation, Parquet copy against the same files ({before} before, {load_line()} after)")
    print()
    print(
        "| workload | variant | images (rounds × n) | files img/s | Parquet img/s | "
        f"Parquet ÷ files (min–max), target ≥ {SPEED_TARGET}× | files img/CPU-s | "
        "Parquet img/CPU-s | Parquet ÷ files by CPU time |"
    )
    print("|---|---|---|---:|---:|---|---:|---:|---|")
    print("\n".join(rows))
    print()


# --- reopening a million rows --------------------------------------------------------------


def million_rows(folder: Path, rows: int = MILLION, shards: int = 10) -> Path:
    """``rows`` tiny PNG rows in ``shards`` Parquet files in datasets' layout, written once."""
    stamp = folder / f".complete-{rows}"
    if stamp.exists():
        return folder
    from PIL import Image

    log(f"writing {rows:,} rows into {folder} ...")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    pngs = []
    for _ in range(1000):
        out = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(out, format="PNG")
        pngs.append(out.getvalue())
    names = [f"class_{i}" for i in range(100)]
    meta = hf_table_metadata(names)
    per = rows // shards
    for s in range(shards):
        index = np.arange(s * per, (s + 1) * per)
        images = pa.array([pngs[i % 1000] for i in index.tolist()], pa.binary())
        paths = pa.array([f"img_{i:07d}.png" for i in index.tolist()], pa.string())
        table = pa.table(
            {
                "image": pa.StructArray.from_arrays([images, paths], ["bytes", "path"]),
                "label": pa.array(index % 100, pa.int64()),
            }
        ).replace_schema_metadata(meta)
        pq.write_table(table, folder / f"test-{s:05d}-of-{shards:05d}.parquet", row_group_size=100)
    stamp.touch()
    return folder


def hf_table_metadata(names: list[str]) -> dict[bytes, bytes]:
    import json

    features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


REOPEN = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, {repo!r})
from core.config import DatasetSpec
from core.data.datasets import open_dataset
t1, c1 = time.perf_counter(), time.process_time()
dataset = open_dataset(DatasetSpec("million", {folder!r}, parquet=({pattern!r},)))
key = dataset.fingerprint()
t2, c2 = time.perf_counter(), time.process_time()
assert len(dataset) == {rows}, len(dataset)
print(t2 - t1, t2 - t0 + {startup}, c2 - c1)
"""


def reopen(rounds: int, data: Path, rows: int) -> None:
    folder = million_rows(data / f"million-{rows}", rows)
    pattern = str(folder / "*.parquet")
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    startup = _python_startup()
    script = REOPEN.format(
        repo=str(REPO), folder=str(folder), pattern=pattern, rows=rows, startup=startup
    )
    before = load_line()
    opens, totals, cpus, reference = [], [], [], []
    for r in range(rounds):
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        open_s, total_s, cpu_s = (float(v) for v in out.stdout.split())
        opens.append(open_s)
        totals.append(total_s)
        cpus.append(cpu_s)
        start = time.perf_counter()
        import hashlib

        digest = hashlib.sha256()
        for shard in sorted(folder.glob("*.parquet")):
            for cell in pq.read_table(shard, columns=["image"]).column(0).chunks:
                digest.update(cell.field("bytes").buffers()[2])
        reference.append(time.perf_counter() - start)
        log(f"  reopen round {r + 1}: {open_s:.2f} s ({total_s:.2f} s with start-up); "
            f"bytes reference {reference[-1]:.2f} s")  # fmt: skip
    median = statistics.median(opens)
    print(
        f"Reopening {rows:,} Parquet rows ({len(list(folder.glob('*.parquet')))} files, "
        f"{size / 2**20:.0f} MiB, row groups of 100) in a fresh process "
        f"({before} before, {load_line()} after)"
    )
    print()
    print(f"| measure | runs (s) | median (s) | target ≤ {REOPEN_TARGET:g} s |")
    print("|---|---|---:|:---:|")
    verdict = "PASS" if median <= REOPEN_TARGET else "FAIL"
    print(f"| open_dataset + fingerprint | {_runs(opens)} | {median:.2f} | {verdict} |")
    print(f"| its CPU time (all threads) | {_runs(cpus)} | {statistics.median(cpus):.2f} | |")
    print(
        f"| the same + python start-up and imports | {_runs(totals)} | "
        f"{statistics.median(totals):.2f} | |"
    )
    print(
        f"| reference: hashing every image's bytes (pq.read_table) | {_runs(reference)} | "
        f"{statistics.median(reference):.2f} | |"
    )
    print()


def _python_startup() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    parser.add_argument("--rounds", type=int, help="rounds (default 3; quick 2)")
    parser.add_argument("--per-round", type=int, help="resnet18 images per round (default 128)")
    parser.add_argument("--jpegs", type=int, default=512, help="JPEGs for resnet18")
    parser.add_argument("--rows", type=int, help="rows of the reopened set (default 1,000,000)")
    parser.add_argument("--skip-resnet", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-reopen", action="store_true")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(tempfile.gettempdir()) / "core-bench-parquet",
        help="folder for the generated data (reused between runs)",
    )
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 3)
    per_round = args.per_round or (64 if args.quick else 128)
    rows = args.rows or (100_000 if args.quick else MILLION)
    if not args.skip_speed:
        speed(rounds, per_round, args.jpegs, args.data, args.skip_resnet)
    if not args.skip_reopen:
        reopen(rounds, args.data, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

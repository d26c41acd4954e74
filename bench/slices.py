"""Slices at scale: the Slices table, a slice applied to the matrix, the slice finder, and the
cost of measuring image properties in the evaluation.

Synthesises a 1,000,000-image × 1,000-class result through the store's own writer (forced
predictions, 8 % wrong) with its image properties (9 columns, written by the evaluation's
writer), 20 metadata columns in ``derived/metadata/`` (12 categorical of 2 to 200 values,
6 numeric with 5 % missing, 2 timestamps) and 50 embedding clusters in ``derived/clusters/``:
30 slice columns, plus the true class. A slice ``site = site07 ∧ scanner = S3`` of 1 % of
the rows is planted with five times the error rate (40 %).

Then, each in a fresh process:

* the whole Slices table: the columns read from the store, binned, counted, with Wilson
  intervals (``result_columns`` + ``slice_table``); reference: pandas ``groupby`` per column
  (``qcut`` for the numeric ones) on a DataFrame already built;
* a slice applied to the matrix (``Slice.mask`` + the confusion matrix of its rows);
  reference: pandas boolean indexing + ``groupby(["true", "pred"]).size()``;
* the finder (``find_slices``, the planted slice's rank), its time and its peak memory above
  the memory-mapped store (anonymous memory, sampled every 20 ms); reference: plain
  ``sliceline.Slicefinder`` (its own candidate evaluation) on the same binned columns ours
  searches, on a 2,000-row sample (its memory grows with rows ×
  candidates: 15.8 GB at 20,000 rows here);

and the evaluation of a folder of PNGs by the shapes ResNet with and without properties
(alternating, ``--runs`` each): the process's CPU time (all threads; what other jobs on a
shared machine disturb least), the wall time, and the time ``measure`` itself takes on the
same images (the direct cost).

    python bench/slices.py [--rows 1000000] [--classes 1000] [--images 2000] [--runs 3]
                           [--keep DIR] [--part all|store|properties]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PLANT = "site:site07;scanner:S3"
APPLIED = "site:site07;brightness:0.3..0.6"
BASE_ERROR, PLANT_ERROR = 0.08, 0.40
#: Plain sliceline's sample: its sparse candidate evaluation took 21 s and 3.9 GB at 5,000 rows
#: of 12 columns × 9 values here, 100 s and 15.8 GB at 20,000.
REFERENCE_ROWS = 2_000


def synthesise(folder: Path, rows: int, classes: int, chunk: int = 100_000) -> None:
    """The result folder (see the module)."""
    import torch

    from core.analysis.clusters import DERIVED, VERSION
    from core.data.metadata import ColumnSet, write_column_set
    from core.data.properties import PROPERTIES
    from core.results import ResultWriter, save_derived
    from core.results.scores import scores_from_logits

    rng = np.random.default_rng(0)
    meta = _metadata(rows, rng)
    site, scanner = meta["site"].values, meta["scanner"].values
    planted = (site == 7) & (scanner == 3)
    wrong = rng.random(rows) < np.where(planted, PLANT_ERROR, BASE_ERROR)
    labels = np.arange(rows) % classes
    pred = np.where(wrong, (labels + 1 + rng.integers(0, classes - 1, rows)) % classes, labels)
    names = [f"c{i:04d}" for i in range(classes)]
    manifest = [(f"{names[i % classes]}/{i:07d}.png", i % classes) for i in range(rows)]
    with ResultWriter(folder, manifest, names, "bench", properties=PROPERTIES) as writer:
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            logits = torch.zeros((stop - start, classes))
            logits[torch.arange(stop - start), torch.from_numpy(pred[start:stop])] = 6.0
            y = torch.from_numpy(labels[start:stop])
            props = _properties(stop - start, rng)
            writer.write(scores_from_logits(np.arange(start, stop), y, logits, None, None, props))
        result = writer.finish()
    write_column_set(folder / "derived" / "metadata", ColumnSet(list(meta.values())), "bench")
    label = np.minimum(rng.geometric(0.06, rows) - 1, 49).astype(np.int32)
    distance = rng.random(rows).astype(np.float32)
    save_derived(result, DERIVED, {"label": label, "distance": distance, "version": [VERSION]})


def _metadata(rows: int, rng: np.random.Generator) -> dict[str, object]:
    from core.data.metadata import Column

    out: dict[str, Column] = {}
    sizes = [10, 5, 2, 3, 4, 6, 8, 12, 20, 50, 100, 200]
    for i, size in enumerate(sizes):
        name = ["site", "scanner"][i] if i < 2 else f"meta{i:02d}"
        prefix = ["site", "S"][i] if i < 2 else "v"
        categories = tuple(f"{prefix}{j:02d}" if i == 0 else f"{prefix}{j}" for j in range(size))
        codes = rng.integers(0, size, rows).astype(np.int32)
        out[name] = Column(name, "categorical", codes, categories)
    site, scanner = out["site"].values, out["scanner"].values
    inside = np.flatnonzero((site == 7) & (scanner == 3))
    site[inside[rows // 100 :]] = rng.integers(0, 7, len(inside) - rows // 100)  # 1 % stays
    for i in range(6):
        values = rng.lognormal(i, 1.0, rows)
        values[rng.random(rows) < 0.05] = np.nan
        out[f"num{i}"] = Column(f"num{i}", "numeric", values)
    for i in range(2):
        out[f"time{i}"] = Column(f"time{i}", "timestamp", 1.7e9 + rng.uniform(0, 3e7, rows))
    return out


def _properties(n: int, rng: np.random.Generator) -> np.ndarray:
    width = rng.choice([224.0, 256.0, 640.0, 1024.0], n)
    height = rng.choice([224.0, 256.0, 480.0, 768.0], n)
    return np.column_stack(
        [
            width,
            height,
            width / height,
            rng.lognormal(11, 0.5, n),
            rng.choice([0.0, 1.0], n, p=[0.3, 0.7]),
            rng.beta(5, 5, n),
            rng.beta(2, 8, n),
            rng.lognormal(5, 1, n),
            (rng.random(n) < 0.05).astype(float),
        ]
    )


TABLE = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np, pandas as pd
t = time.perf_counter()
from core.results import open_results
from core.analysis.slice_columns import result_columns
from core.analysis.slices import Slice, slice_table
result = open_results(sys.argv[2])
columns = result_columns(result, clusters=False)
true, pred = result.true, result.pred
table = slice_table(columns, true, pred)
cold = time.perf_counter() - t
warm = []
for _ in range(3):
    t = time.perf_counter(); slice_table(columns, true, pred); warm.append(time.perf_counter() - t)
# reference: pandas groupby per column on a DataFrame built beforehand (not timed)
frame = {}
for c in columns:
    v = np.asarray(c.values)
    frame[c.name] = v if c.numeric else pd.Categorical.from_codes(v, list(c.categories))
frame = pd.DataFrame(frame)
frame["error"], frame["true"], frame["pred"] = true != pred, true, pred
t = time.perf_counter()
for c in columns:
    key = pd.qcut(frame[c.name], 5, duplicates="drop") if c.numeric else frame[c.name]
    frame.groupby(key, observed=True)["error"].agg(["size", "sum"])
pandas_s = time.perf_counter() - t
mask_s, ref_s = [], []
k = len(result.classes)
for _ in range(5):
    t = time.perf_counter()
    mask = Slice.parse(sys.argv[3]).mask(columns)
    matrix = np.bincount(true[mask] * k + pred[mask], minlength=k * k).reshape(k, k)
    mask_s.append(time.perf_counter() - t)
    t = time.perf_counter()
    sub = frame[(frame.site == "site07") & (frame.brightness >= 0.3) & (frame.brightness < 0.6)]
    ref = sub.groupby(["true", "pred"]).size()
    ref_s.append(time.perf_counter() - t)
assert matrix.sum() == len(sub) == int(ref.sum())
print(json.dumps({"cold_s": cold, "warm_s": sorted(warm)[1], "pandas_s": pandas_s,
    "mask_s": sorted(mask_s)[2], "mask_ref_s": sorted(ref_s)[2], "rows": int(len(table)),
    "columns": len(columns), "slice_images": int(mask.sum())}))
"""

MEMORY = r"""
import threading, time
def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
peak = [0.0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], anon_mb()); time.sleep(0.02)
"""

FINDER = (
    MEMORY
    + r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from core.results import open_results
from core.analysis.slice_columns import result_columns
from core.analysis.slice_finder import find_slices
result = open_results(sys.argv[2])
columns = result_columns(result, clusters=False)
true, pred = result.true, result.pred
base = anon_mb()
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
found = find_slices(columns, true, pred)
seconds = time.perf_counter() - t
stop.set(); peak[0] = max(peak[0], anon_mb())
params = [s.slice.to_param() for s in found.slices]
rank = params.index(sys.argv[3]) + 1 if sys.argv[3] in params else None
print(json.dumps({"seconds": seconds, "anon_peak_mb": peak[0] - base, "rank": rank,
    "top": params[:3], "found": len(params)}))
"""
)

REFERENCE = (
    MEMORY
    + r"""
import json, sys, warnings
sys.path.insert(0, sys.argv[1])
SAMPLE = int(sys.argv[3])
import numpy as np
from core.results import open_results
from core.analysis.slice_columns import result_columns
from core.analysis.slice_finder import _chosen_columns, _limited_codes
from core.analysis.slices import column_bins
result = open_results(sys.argv[2])
columns = result_columns(result, clusters=False)
errors = result.true != result.pred
every = [column_bins(c) for c in columns]
binned = [every[i] for i in _chosen_columns(every, errors)]  # the columns ours searches
rows = np.sort(np.random.default_rng(0).choice(len(errors), SAMPLE, replace=False))
x = np.column_stack([_limited_codes(b, errors)[rows] for b in binned]).astype(float)
from sliceline import Slicefinder
warnings.simplefilter("ignore")
e = errors[rows] * 1.0
Slicefinder(alpha=0.98, k=20, max_l=3, min_sup=20, verbose=False).fit(x[:500], e[:500])  # numba
base = anon_mb()
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
out = {}
try:
    finder = Slicefinder(alpha=0.98, k=20, max_l=3, min_sup=20, verbose=False)
    finder.fit(x, e)
    out["top"] = [
        ";".join(
            f"{binned[j].column.name}:{binned[j].values[int(v)]}"
            for j, v in enumerate(found) if v is not None and int(v) < len(binned[j].values)
        )
        for found in finder.top_slices_[:3]
    ]
except MemoryError:
    out["error"] = "MemoryError"
out["seconds"] = time.perf_counter() - t
stop.set(); peak[0] = max(peak[0], anon_mb())
out["anon_peak_mb"] = peak[0] - base
print(json.dumps(out))
"""
)


def run(script: str, *args: str, timeout: int = 900) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", script, str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def properties_overhead(images: int, runs: int = 3) -> dict[str, list[float]]:
    """Seconds (wall and CPU, all threads) of the shapes ResNet's evaluation of ``images``
    128×128 PNGs (resized to its 64×64 input), with and without properties, alternating."""
    from PIL import Image

    from core.config import DatasetSpec, load_config
    from core.data.datasets import open_dataset
    from core.data.models import load_model
    from core.results.evaluate import evaluate

    folder = Path(tempfile.mkdtemp(prefix="slices-props-"))
    rng = np.random.default_rng(0)
    try:
        classes = ["circle", "cross", "square", "star", "triangle"]
        for i in range(images):
            (folder / "set" / classes[i % 5]).mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            picture = Image.fromarray(small).resize((128, 128), Image.BILINEAR)
            picture.save(folder / "set" / classes[i % 5] / f"{i:05d}.png")
        config = load_config(REPO / "sample_models" / "config.toml")
        spec = config.model("shapes-resnet (shortcut)")
        dataset = open_dataset(DatasetSpec("bench", folder / "set"), spec.classes)
        model = load_model(spec)
        evaluate(model, dataset, out=folder / "warm", properties=False, num_workers=0)
        direct = _direct_cost(dataset.with_transform(model.resize, 3, True, True))
        times: dict[str, list[float]] = {
            k: [] for k in ("with", "without", "with_cpu", "without_cpu")
        }
        for i in range(runs):
            for label in ("without", "with") if i % 2 == 0 else ("with", "without"):
                out = folder / f"{label}{i}"
                t, cpu = time.perf_counter(), time.process_time()
                evaluate(model, dataset, out=out, properties=label == "with", num_workers=0)
                times[label].append(time.perf_counter() - t)
                times[f"{label}_cpu"].append(time.process_time() - cpu)
                shutil.rmtree(out)
        times["direct"] = [direct]
        return times
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _direct_cost(dataset: object) -> float:
    """Seconds ``measure`` and ``encoded`` take over the dataset's images (decoded first)."""
    import torch

    from core.data.properties import measure

    total = 0.0
    for i in range(len(dataset)):  # type: ignore[arg-type]
        sample = dataset[i]  # type: ignore[index]
        array = torch.as_tensor(sample.image).numpy()
        t = time.perf_counter()
        size, kind = dataset.encoded(i)  # type: ignore[attr-defined]
        measure(array, 128, 128, size, kind)
        total += time.perf_counter() - t
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--images", type=int, default=2_000)
    parser.add_argument("--runs", type=int, default=3, help="evaluations with and without")
    parser.add_argument("--keep", type=Path, help="write the store here and keep it (reused)")
    parser.add_argument("--part", choices=("all", "store", "properties"), default="all")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    folder = args.keep or Path(tempfile.mkdtemp(prefix="slices-bench-")) / "result"
    table: dict[str, object] = {}
    finder: dict[str, object] = {}
    reference: dict[str, object] = {}
    times: dict[str, list[float]] = {}
    try:
        if args.part == "properties":
            times = properties_overhead(args.images, args.runs)
        elif not (folder / "derived" / "clusters").exists():
            t = time.perf_counter()
            synthesise(folder, args.rows, args.classes)
            took = time.perf_counter() - t
            print(f"synthesised {args.rows:,} × {args.classes:,} in {took:.0f} s")
        if args.part != "properties":
            table = run(TABLE, str(folder), APPLIED)
            finder = run(FINDER, str(folder), PLANT)
            reference = run(REFERENCE, str(folder), str(REFERENCE_ROWS))
        if args.part == "all":
            times = properties_overhead(args.images, args.runs)
        report(args, table, finder, reference, times)
    finally:
        if args.keep is None:
            shutil.rmtree(folder.parent, ignore_errors=True)
    print(f"\nload average after: {os.getloadavg()}")


def report(args, table, finder, reference, times) -> None:  # type: ignore[no-untyped-def]
    print("\n| measure | ours | target | reference |")
    print("|---|---|---|---|")
    if table:
        _store_rows(args, table, finder, reference)
    if times:
        _properties_row(args, times)


def _store_rows(args, table, finder, reference) -> None:  # type: ignore[no-untyped-def]
    print(
        f"\n## {args.rows:,} rows × {args.classes:,} classes, {int(table.get('columns', 1)) - 1} "
        f"slice columns + class ({os.cpu_count()} cores)\n"
    )
    print(
        f"| the whole Slices table ({table.get('rows')} rows), store to table | "
        f"{table.get('cold_s', 0):.2f} s (table alone {table.get('warm_s', 0):.2f} s) | ≤ 3 s | "
        f"pandas groupby/qcut per column: {table.get('pandas_s', 0):.2f} s |"
    )
    print(
        f"| applying `{APPLIED}` to the matrix ({table.get('slice_images', 0):,} images) | "
        f"{table.get('mask_s', 0) * 1000:.0f} ms | ≤ 500 ms | "
        f"pandas filter + groupby: {table.get('mask_ref_s', 0) * 1000:.0f} ms |"
    )
    ref = (
        reference.get("error")
        or f"{reference.get('seconds', 0):.1f} s, {reference.get('anon_peak_mb', 0):,.0f} MB "
        f"on a {REFERENCE_ROWS:,}-row sample of the same columns; "
        f"top: {reference.get('top', [])[:1]}"
    )
    print(
        f"| the finder | {finder.get('seconds', 0):.1f} s, "
        f"{finder.get('anon_peak_mb', 0):,.0f} MB above the store | ≤ 60 s, ≤ 2,048 MB | "
        f"plain sliceline: {ref} |"
    )
    print(
        f"| planted `{PLANT}` (1 %, 5× errors): rank | {finder.get('rank')} "
        f"(top: {finder.get('top', [])}) | ≤ 3 | |"
    )
    if "error" in table or "error" in finder:
        print(f"\nerrors: table {table.get('error')}, finder {finder.get('error')}")


def _properties_row(args, times) -> None:  # type: ignore[no-untyped-def]
    fast = min(times["with"]) / min(times["without"])
    cpu = min(times["with_cpu"]) / min(times["without_cpu"])
    median = float(np.median(times["with"]) / np.median(times["without"]))
    direct = times["direct"][0] / min(times["without"])
    print(
        f"| evaluation with / without properties ({args.images:,} PNGs, 128 px → 64; "
        f"{args.runs} runs each) | CPU {cpu:.3f}×; wall {fast:.3f}× (fastest), {median:.3f}× "
        f"(medians); measuring itself {times['direct'][0]:.2f} s = {direct:.1%} of the "
        f"evaluation | ≤ 1.05× | without: {min(times['without']):.2f} s wall, "
        f"{min(times['without_cpu']):.2f} s CPU |"
    )


if __name__ == "__main__":
    main()

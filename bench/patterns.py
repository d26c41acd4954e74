"""Patterns at scale: rank every cell's Grad-CAM patterns of a 1,000,000-image × 1,000-class result.

Synthesises a result folder through the store's own writer (``bench/scale.py``'s recipe: random
logits about 60 % right, random 7×7 maps) and plants groups of maps with a fixed hot spot:

* one off-diagonal cell of 10,000 images, 3,000 of them planted;
* three off-diagonal cells of 400 images, 200 planted, each at another place;
* two diagonal cells, 200 of their images planted ("right for a wrong reason");
* one off-diagonal cell of 400 images, 200 at one corner and 200 at the opposite one: two
  places, which must stay two patterns.

Then, each in a fresh process: the whole ranking (``result_patterns``: read, cluster, score,
store), its time and peak memory above the memory-mapped store (the process's anonymous
memory, sampled every 20 ms, and its peak resident set for reference); the patterns of the
10,000-image cell alone, against scikit-learn's SpectralClustering on the same cell (the
reference, told the number of clusters); and how many of each planted group's images land in
one pattern.

    python bench/patterns.py [--rows 1000000] [--classes 1000] [--keep DIR]

``--keep DIR`` writes the store there and keeps it; a later run with the same DIR (and sizes)
reuses it and ranks afresh.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MAP = (7, 7)
BIG = (1, 2, 10_000, 3_000, (5, 5))  # true, pred, cell images, planted, hot spot (row, col)
GROUPS = [
    BIG,
    (3, 4, 400, 200, (1, 1)),
    (5, 6, 400, 200, (1, 5)),
    (7, 8, 400, 200, (5, 1)),
    (10, 10, 0, 200, (3, 3)),  # diagonal: planted among the cell's own images
    (11, 11, 0, 200, (0, 6)),
    (12, 13, 200, 200, (0, 0)),  # two places in one cell: they must stay two patterns
    (12, 13, 200, 200, (6, 6)),
]
TWO_PLACES = (len(GROUPS) - 2, len(GROUPS) - 1)  # the groups that share cell 12→13


def plan(rows: int, classes: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Labels, forced predictions (-1: random) and each planted group's rows."""
    labels = np.arange(rows) % classes
    forced = np.full(rows, -1, np.int64)
    groups = []
    start = rows - sum(max(size, planted) for _, _, size, planted, _ in GROUPS)
    for true, pred, size, planted, _ in GROUPS:
        block = np.arange(start, start + max(size, planted))
        labels[block], forced[block] = true, pred
        groups.append(block[:planted])
        start += len(block)
    return labels, forced, groups


def synthesise(folder: Path, rows: int, classes: int, chunk: int = 50_000) -> list[np.ndarray]:
    import torch

    from core.results import ResultWriter
    from core.results.scores import scores_from_logits

    rng = np.random.default_rng(0)
    labels, forced, groups = plan(rows, classes)
    spot = np.zeros(rows, np.int64) - 1
    for (_, _, _, _, (r, c)), members in zip(GROUPS, groups, strict=True):
        spot[members] = r * MAP[1] + c
    names = [f"c{i:04d}" for i in range(classes)]
    manifest = [(f"{names[lab]}/{i:07d}.png", int(lab)) for i, lab in enumerate(labels)]
    yy, xx = np.mgrid[0 : MAP[0], 0 : MAP[1]]
    blobs = np.stack(
        [
            np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 1.2)
            for r in range(MAP[0])
            for c in range(MAP[1])
        ]
    ).astype(np.float32)
    with ResultWriter(folder, manifest, names, "bench-patterns", map_shape=MAP, durable=False) as w:
        for start in range(0, rows, chunk):
            stop = min(start + chunk, rows)
            y = torch.from_numpy(labels[start:stop])
            logits = rng.standard_normal((stop - start, classes), np.float32)
            logits[np.arange(stop - start), labels[start:stop]] += 3.0  # about 60 % right
            hit = np.flatnonzero(forced[start:stop] >= 0)
            logits[hit, forced[start:stop][hit]] += 20.0
            maps = rng.standard_normal((stop - start, 2, *MAP), np.float32)
            planted = np.flatnonzero(spot[start:stop] >= 0)
            maps[planted, 0] = 4.0 * blobs[spot[start:stop][planted]] + 0.5 * maps[planted, 0]
            w.write(
                scores_from_logits(
                    np.arange(start, stop), y, torch.from_numpy(logits), torch.from_numpy(maps)
                )
            )
        w.finish()
    return groups


MEASURE = r"""
import json, sys, threading, time
sys.path.insert(0, sys.argv[1])
from core.results import open_results
from core.analysis.patterns import find_patterns, result_patterns

def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
peak = [0.0]
stop = threading.Event()
def sample():
    while not stop.is_set():
        peak[0] = max(peak[0], anon_mb()); time.sleep(0.02)
result = open_results(sys.argv[2])
_ = result.index, result.true, result.pred  # opening: not part of the ranking
base = anon_mb()
threading.Thread(target=sample, daemon=True).start()
t = time.perf_counter()
found = result_patterns(result)
whole_s = time.perf_counter() - t
stop.set(); peak[0] = max(peak[0], anon_mb())
hwm = [int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
true, pred = int(sys.argv[3]), int(sys.argv[4])
rows = result.index[(result.true == true) & (result.pred == pred)]
cell = []
for _ in range(3):
    t = time.perf_counter()
    find_patterns(result.true[rows], result.pred[rows], result.columns["maps"][rows], rows)
    cell.append(time.perf_counter() - t)
# reference: scikit-learn's SpectralClustering (kNN affinity, cluster_qr) on all of the cell's
# maps, as many clusters as ours found there (it cannot choose their number itself)
import numpy as np
from sklearn.cluster import SpectralClustering
from core.analysis.patterns import normalise_maps
feats = np.sqrt(normalise_maps(result.columns["maps"][rows, 0]))
k = max(2, len(found.of_cell(true, pred)))
t = time.perf_counter()
ref = SpectralClustering(k, affinity="nearest_neighbors", n_neighbors=10,
                         assign_labels="cluster_qr", random_state=0).fit_predict(feats)
ref_s = time.perf_counter() - t
planted = np.isin(rows, [int(r) for r in sys.argv[5].split(",")])
ref_share = float(np.bincount(ref[planted]).max() / planted.sum())
print(json.dumps({
    "whole_s": whole_s, "ref_s": ref_s, "ref_share": ref_share, "ref_k": k,
    "anon_peak_mb": peak[0] - base, "hwm_mb": hwm, "cell_s": cell, "cell_images": int(len(rows)),
    "patterns": len(found), "flagged": int((found.score >= 3).sum()),
}))
"""


def purity(folder: Path, groups: list[np.ndarray]) -> list[tuple[str, int, float, float, str]]:
    """Per planted group: its cell, size, share in its best pattern, that pattern's score/rank."""
    from core.analysis.patterns import Patterns
    from core.results import load_derived, open_results

    result = open_results(folder)
    stored = load_derived(result, "patterns")
    assert stored is not None, "the ranking was not stored"
    found = Patterns.from_arrays(stored)
    pattern_of = np.full(len(result.manifest), -1, np.int64)
    for i in range(len(found)):
        pattern_of[found.rows[found.offsets[i] : found.offsets[i + 1]]] = i
    out = []
    for (true, pred, _, _, spot), members in zip(GROUPS, groups, strict=True):
        ids, counts = np.unique(pattern_of[members], return_counts=True)
        best = int(ids[counts.argmax()])
        share = counts.max() / len(members)
        p = found[best] if best >= 0 else None
        where = (
            f"rank {best + 1}, score {p.score:.0f}, centroid ({p.centroid[0]:.2f}, "
            f"{p.centroid[1]:.2f}) for spot ({(spot[1] + 0.5) / 7:.2f}, {(spot[0] + 0.5) / 7:.2f}),"
            f" {p.images} images, {share * len(members) / p.images:.0%} of them planted"
            if p is not None
            else "no pattern"
        )
        out.append((f"{true}→{pred}", len(members), share, float(best), where))
    return out


def row(name: str, ours: str, target: str) -> None:
    print(f"| {name} | {ours} | {target} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--keep", type=Path, help="write the store here (or reuse it) and keep it")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-patterns-") as tmp:
        folder = args.keep or Path(tmp) / "result"
        if args.keep is not None and (folder / "result.json").exists():  # written by a last run
            groups = plan(args.rows, args.classes)[2]
        else:
            groups = synthesise(folder, args.rows, args.classes)
        shutil.rmtree(folder / "derived" / "patterns", ignore_errors=True)  # rank afresh
        true, pred = BIG[0], BIG[1]
        env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, str(REPO), str(folder), str(true), str(pred),
             ",".join(str(r) for r in groups[0])],
            capture_output=True, text=True, check=True, env=env,
        )  # fmt: skip
        m = json.loads(out.stdout.strip().splitlines()[-1])
        maps_mb = (folder / "maps.npy").stat().st_size / 1e6
        print(
            f"\n## {args.rows:,} images × {args.classes:,} classes, maps 2 × 7×7 float16 "
            f"({maps_mb:,.0f} MB), {len(GROUPS)} planted groups; load {os.getloadavg()}\n"
        )
        print("| what | ours | target |")
        print("|---|---|---|")
        row(
            "whole ranking (read, cluster every cell ≥ 5 images, score, store)",
            f"{m['whole_s']:.1f} s ({m['patterns']:,} patterns, {m['flagged']:,} flagged)",
            "≤ 60 s",
        )
        row(
            "peak memory above the memory-mapped store (anonymous)",
            f"{m['anon_peak_mb']:,.0f} MB (peak RSS incl. mapped pages {m['hwm_mb']:,.0f} MB)",
            "≤ 2,048 MB",
        )
        row(
            f"patterns of one {m['cell_images']:,}-image cell (3 runs)",
            ", ".join(f"{s:.2f} s" for s in m["cell_s"]),
            "≤ 0.5 s",
        )
        row(
            f"reference: scikit-learn SpectralClustering on that cell (k={m['ref_k']} given)",
            f"{m['ref_s']:.2f} s, {m['ref_share']:.1%} of its planted group in one cluster",
            "-",
        )
        found = purity(folder, groups)
        for cell, size, share, _, where in found:
            row(
                f"planted group {cell} ({size:,} images) in one pattern",
                f"{share:.1%} ({where})",
                "≥ 90 %",
            )
        a, b = (found[i] for i in TWO_PLACES)
        row(
            f"two places in cell {a[0]}: two patterns",
            "yes" if a[3] != b[3] and min(a[3], b[3]) >= 0 else "no (merged)",
            "two",
        )


if __name__ == "__main__":
    main()

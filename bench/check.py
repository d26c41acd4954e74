"""The regression gate at scale: ``check`` on two cached 1,000,000-image × 1,000-class results.

Synthesises two result folders through the store's own writer (no image files, no maps): a
baseline about 60 % right, and a candidate that is the baseline with symmetric churn everywhere
(2 % of the images flip either way), five classes broken (15 % of their right images turn
wrong), five classes fixed (15 % of their wrong images turn right) and one of 30 slices broken.
The slices are a synthetic metadata column with 30 values, as boolean masks.

Then, each in a fresh process and timed from its first import: open both results and run the
gate over overall + 1,000 classes + 30 slices (:func:`core.analysis.regression.check_results`),
and a reference in the same run (a plain per-group loop over a pandas table: merge on path,
groupby, ``scipy.stats.binomtest`` per group, Holm by hand), checking both name the same
regressions and improvements.

    python bench/check.py [--rows 1000000] [--classes 1000] [--slices 30] [--keep DIR]

``--keep DIR`` writes the two stores there and keeps them; a later run with the same DIR (and
sizes) reuses them.
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

BROKEN_CLASSES = (0, 1, 2, 3, 4)
FIXED_CLASSES = (5, 6, 7, 8, 9)
BROKEN_SLICE = 0
CHURN, PLANTED = 0.02, 0.15


def plan(rows: int, classes: int, slices: int) -> dict[str, np.ndarray]:
    """Labels, both models' predictions and a slice id per row."""
    rng = np.random.default_rng(0)
    labels = np.arange(rows) % classes
    site = rng.integers(0, slices, rows)
    right = rng.random(rows) < 0.6
    wrong = (labels + rng.integers(1, classes, rows)) % classes  # any class but the true one
    base = np.where(right, labels, wrong)
    flip = rng.random(rows) < CHURN
    flip |= np.isin(labels, BROKEN_CLASSES) & right & (rng.random(rows) < PLANTED)
    flip |= np.isin(labels, FIXED_CLASSES) & ~right & (rng.random(rows) < PLANTED)
    flip |= (site == BROKEN_SLICE) & right & (rng.random(rows) < PLANTED)
    cand = np.where(flip, np.where(right, wrong, labels), base)
    return {"labels": labels, "baseline": base, "candidate": cand, "site": site}


def write(folder: Path, labels: np.ndarray, pred: np.ndarray, classes: int, name: str) -> None:
    """One result folder of these predictions (scalar columns only; probabilities left unwritten,
    so the preallocated file stays sparse and reads as zeros)."""
    from core.results import BatchScores, ResultWriter

    names = [f"c{i:04d}" for i in range(classes)]
    manifest = [(f"{names[lab]}/{i:07d}.png", int(lab)) for i, lab in enumerate(labels)]
    meta = {"model": name, "dataset": "bench"}
    chunk = 200_000
    with ResultWriter(folder, manifest, names, name, meta=meta, durable=False) as writer:
        for start in range(0, len(labels), chunk):
            rows = np.arange(start, min(start + chunk, len(labels)))
            p = pred[rows].astype(np.int32)
            conf = np.full(len(rows), 0.5, np.float32)
            true_prob = np.where(p == labels[rows], 0.5, 0.1).astype(np.float32)
            writer.write(
                BatchScores(
                    rows=rows,
                    pred=p,
                    confidence=conf,
                    true_prob=true_prob,
                    loss=-np.log(true_prob),
                    runner_up=p,
                    runner_up_prob=conf,
                    probs=np.zeros((len(rows), 0), np.float16),  # written: nothing
                )
            )
        writer.finish()


OURS = r"""
import json, sys, time
t = time.perf_counter()
import numpy as np
sys.path.insert(0, sys.argv[1])
from core.results import open_results
from core.analysis.regression import check_results
site = np.load(sys.argv[4])
a, b = open_results(sys.argv[2]), open_results(sys.argv[3])
slices = {f"site={v}": site == v for v in range(int(site.max()) + 1)}
gate = check_results(a, b, slices=slices)
seconds = time.perf_counter() - t
t = gate.table
names = lambda v: sorted(f"{k}:{n}" for k, n in t.loc[t.verdict == v, ["group", "name"]].values)
print(json.dumps({"s": seconds, "groups": len(t), "regressions": names("regression"),
                  "improvements": names("improvement")}))
"""

# The reference: a plain per-group loop over a pandas table (merge on path, groupby), scipy's
# binomtest per group, Holm written out as a loop.
REFERENCE = r"""
import json, sys, time
t = time.perf_counter()
import numpy as np, pandas as pd
from scipy.stats import binomtest
sys.path.insert(0, sys.argv[1])
from core.results import open_results
site = np.load(sys.argv[4])
a, b = open_results(sys.argv[2]), open_results(sys.argv[3])
pa_, pb_ = a.predictions, b.predictions
frame = pa_[["path", "true", "pred"]].merge(pb_[["path", "pred"]], on="path", suffixes=("_a", "_b"))
frame["site"] = site[pa_["index"].to_numpy()]
frame["ra"], frame["rb"] = frame.pred_a == frame.true, frame.pred_b == frame.true
groups = [("overall", "overall", frame)]
groups += [("class", a.classes[k], part) for k, part in frame.groupby("true")]
groups += [("slice", f"site={v}", part) for v, part in frame.groupby("site")]
rows = []
for kind, name, part in groups:
    broken = int((part.ra & ~part.rb).sum()); fixed = int((~part.ra & part.rb).sum())
    p = binomtest(fixed, fixed + broken, 0.5).pvalue if fixed + broken else 1.0
    rows.append((kind, name, len(part), part.ra.mean(), part.rb.mean(), p))
t_ = pd.DataFrame(rows, columns=["group", "name", "n", "baseline", "candidate", "p"])
m, running, adj = len(t_), 0.0, {}
for i, idx in enumerate(t_.p.sort_values(kind="stable").index):
    running = max(running, min(1.0, (m - i) * t_.p[idx]))
    adj[idx] = running
t_["p_holm"] = pd.Series(adj)
drop = t_.baseline - t_.candidate
t_["verdict"] = np.where((drop >= 0.01) & (t_.p_holm < 0.05), "regression",
                np.where((-drop >= 0.01) & (t_.p_holm < 0.05), "improvement", ""))
seconds = time.perf_counter() - t
names = lambda v: sorted(f"{k}:{n}" for k, n in t_.loc[t_.verdict == v, ["group", "name"]].values)
print(json.dumps({"s": seconds, "groups": len(t_), "regressions": names("regression"),
                  "improvements": names("improvement")}))
"""


def measure(script: str, *args: Path) -> dict:
    """Run one side in a fresh process (its imports count) and read its JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", script, str(REPO), *map(str, args)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument(
        "--keep", type=Path, help="write the stores here (or reuse them), keep them"
    )
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-check-"))
    try:
        run(root, args)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def run(root: Path, args: argparse.Namespace) -> None:
    sizes = f"{args.rows}-{args.classes}-{args.slices}"
    folders = {side: root / f"{side}-{sizes}" for side in ("baseline", "candidate")}
    site_file = root / f"site-{sizes}.npy"
    if not all((f / "result.json").exists() for f in folders.values()) or not site_file.exists():
        data = plan(args.rows, args.classes, args.slices)
        for side, folder in folders.items():
            write(folder, data["labels"], data[side], args.classes, side)
        np.save(site_file, data["site"])
    ours = measure(OURS, *folders.values(), site_file)
    ref = measure(REFERENCE, *folders.values(), site_file)
    same = (ours["regressions"], ours["improvements"]) == (ref["regressions"], ref["improvements"])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"\n## `check` on two cached results: {args.rows:,} images × {args.classes:,} classes, "
        f"{ours['groups']:,} groups (overall + classes + {args.slices} slices)\n"
    )
    print("Each side in a fresh process, from its first import to the verdict.\n")
    print("| measure | ours | target | reference (pandas merge + groupby, scipy per group) |")
    print("|---|---|---|---|")
    print(
        f"| open both results, pair, count, McNemar, Holm | {ours['s']:.2f} s | ≤ 10 s | "
        f"{ref['s']:.2f} s |"
    )
    print(f"| same regressions and improvements as the reference | {same} | True | |")
    print(f"\nregressions: {', '.join(ours['regressions'])}")
    print(f"improvements: {', '.join(ours['improvements'])}")
    print(f"load average (1, 5, 15 min): {load}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()

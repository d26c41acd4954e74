"""Benchmark: label quality (scores + issue flags) at 1M rows × 1,000 classes, float16.

Run from the repository root: ``python bench/labels.py`` (about 1-2 minutes and ~4 GB of memory
on a 2-core machine) or ``python bench/labels.py --rows 100000 --classes 100`` (a smoke run).

It synthesises float16 probabilities (a softmax of noisy logits, the true class boosted, 5% of
the labels flipped), then times :func:`core.analysis.label_quality.label_quality` on all of
them against
the 20 s target, and cleanlab's ``get_label_quality_scores`` + ``find_label_issues`` (n_jobs=1)
on a float32 copy of the first ``--reference-rows`` rows as a reference, checking that both
flag the same images there.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from core.analysis.label_quality import label_quality  # noqa: E402

TARGET_S = 20.0


def synthesise(rows: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Given labels int64 [rows] and float16 probabilities [rows, classes], made chunk by chunk."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, rows)
    labels = truth.copy()
    flipped = rng.random(rows) < 0.05
    labels[flipped] = rng.integers(0, classes, int(flipped.sum()))
    probs = np.empty((rows, classes), np.float16)
    for start in range(0, rows, 50_000):
        stop = min(start + 50_000, rows)
        logits = rng.standard_normal((stop - start, classes), dtype=np.float32)
        logits[np.arange(stop - start), truth[start:stop]] += 6.0
        logits -= logits.max(axis=1, keepdims=True)
        np.exp(logits, out=logits)
        logits /= logits.sum(axis=1, keepdims=True)
        probs[start:stop] = logits
    return labels, probs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--classes", type=int, default=1_000)
    parser.add_argument("--reference-rows", type=int, default=200_000)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    labels, probs = synthesise(args.rows, args.classes)
    print(
        f"synthesised {args.rows:,} × {args.classes:,} float16 in "
        f"{time.perf_counter() - start:.1f} s ({probs.nbytes / 1e9:.1f} GB)"
    )

    start = time.perf_counter()
    ours = label_quality(labels, probs)
    elapsed = time.perf_counter() - start
    verdict = "meets" if elapsed <= TARGET_S else "MISSES"
    print(
        f"ours, {args.rows:,} × {args.classes:,} float16: {elapsed:.1f} s "
        f"(target {TARGET_S:.0f} s: {verdict}); {int(ours.is_issue.sum()):,} flagged"
    )

    n = min(args.reference_rows, args.rows)
    sub_labels, sub32 = labels[:n], probs[:n].astype(np.float32)
    start = time.perf_counter()
    scores = get_label_quality_scores(sub_labels, sub32)
    flags = find_label_issues(sub_labels, sub32, n_jobs=1)
    reference = time.perf_counter() - start
    print(
        f"cleanlab, {n:,} × {args.classes:,} float32 (scores + find_label_issues): "
        f"{reference:.1f} s"
    )
    start = time.perf_counter()
    mine = label_quality(sub_labels, probs[:n])
    print(
        f"ours, same {n:,} rows (float16): {time.perf_counter() - start:.1f} s; "
        f"same flags as cleanlab: {bool((mine.is_issue == flags).all())}, "
        f"max score difference {np.abs(mine.self_confidence - scores).max():.1e}"
    )


if __name__ == "__main__":
    main()

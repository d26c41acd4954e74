"""``python -m core label-issues | compare | patterns | similar``: analyses of stored results."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core.cli.common import Paths, arrays, results
from core.config import load_config
from core.errors import UserFacingError

__all__ = ["add_parsers"]


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    issues = commands.add_parser("label-issues", help="rank the suspected label errors")
    issues.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    issues.add_argument("--model", help="model name (default: the config's first)")
    issues.add_argument("--dataset", help="dataset name (default: the model's first)")
    issues.add_argument("--top", type=int, default=20, help="rows to print (default 20)")
    pair = commands.add_parser("compare", help="what model B fixed and broke relative to A")
    pair.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    pair.add_argument(
        "--model", action="append", required=True, help="give twice: --model A --model B"
    )
    pair.add_argument("--dataset", help="dataset name (default: the model's first)")
    pair.add_argument("--top", type=int, default=20, help="classes with the largest F1 change")
    found = commands.add_parser(
        "patterns",
        help="groups of a cell's images whose Grad-CAM maps agree, most suspicious first",
    )
    found.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    found.add_argument("--model", help="model name (default: the config's first)")
    found.add_argument("--dataset", help="dataset name (default: the model's first)")
    found.add_argument("--top", type=int, default=20, help="patterns to print (default 20)")
    found.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    near = commands.add_parser("similar", help="the images nearest to one in embedding space")
    near.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    near.add_argument("--model", help="model name (default: the config's first)")
    near.add_argument("--dataset", help="dataset name (default: the config's first)")
    near.add_argument(
        "--image", required=True, help="the image's path as the export lists it (under the root)"
    )
    near.add_argument("--top", type=int, default=10, help="how many neighbours (default 10)")
    near.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return {
        "label-issues": _label_issues,
        "compare": _compare,
        "patterns": _patterns,
        "similar": _similar,
    }


def _label_issues(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    result = results(config, args.model, args.dataset)
    rows = arrays(result)
    if not len(rows.true):
        raise UserFacingError("no image could be evaluated, so there is nothing to rank")
    from core.analysis.label_quality import result_label_quality  # cleanlab: only for this command

    quality = result_label_quality(result)  # computed once, then read from the result folder
    if quality.unsaved:
        print(f"note: computed, not saved ({quality.unsaved})", file=sys.stderr)
    ranked = quality.ranked_issues()
    print(
        f"{len(ranked)} of {len(rows.true)} images suspected of a wrong label "
        f"(cleanlab find_label_issues; score = self-confidence, lowest first)"
    )
    names = rows.classes
    frame = pd.DataFrame(
        {
            "path": rows.paths[ranked],
            "given": [names[i] for i in rows.true[ranked]],
            "suggested": [names[i] for i in quality.suggested[ranked]],
            "score": quality.self_confidence[ranked].round(4),
        }
    ).head(args.top)
    if len(frame):
        print(frame.to_string(index=False))
    return 0


def _compare(args: argparse.Namespace) -> int:
    if len(args.model) != 2:
        raise UserFacingError(f"compare takes --model exactly twice, got {len(args.model)}")
    config = load_config(args.config)
    from core.analysis.comparison import Agreement, compare

    a, b = (arrays(results(config, name, args.dataset)) for name in args.model)
    result = compare(a, b)
    counts = result.counts()
    print(f"A = {result.a}, B = {result.b}: {len(result.paths)} images matched by path")
    if result.only_a or result.only_b:
        print(f"  unmatched: {result.only_a} only in A, {result.only_b} only in B")
    print(result.table().to_string())
    for cell in Agreement:
        print(f"  {cell.label}: {counts[cell]}")
    print(f"McNemar's exact test (fixed vs newly broken): p = {result.p_value():.4g}")
    changes = result.top_class_changes(args.top)
    total = len(result.classes)
    print(f"per-class change (B - A), {len(changes)} largest F1 changes of {total} classes:")
    if len(changes):
        columns = ["class", "support", "recall_a", "recall_b", "recall_change", "f1_a"]
        print(changes[[*columns, "f1_b", "f1_change"]].round(3).to_string(index=False))
    return 0


def _patterns(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UserFacingError(f"--top must be at least 1, got {args.top}")
    config = load_config(args.config)
    result = results(config, args.model, args.dataset)
    from core.analysis.causal import stored_verdicts
    from core.analysis.patterns import FLAG_SCORE, result_patterns  # scipy: only this command

    found = result_patterns(result)  # computed once, then read from the result folder
    paths = result.manifest.column("path")
    records = found.to_records(result.classes, Paths(paths), args.top)
    for record, verdict in zip(records, stored_verdicts(result, found, args.top), strict=True):
        if verdict is not None:  # once `verify` (or the page) has tested the pattern
            record["verdict"] = verdict.verdict
    if args.json:
        print(json.dumps(records, ensure_ascii=False))
        return 0
    flagged = int((found.score >= FLAG_SCORE).sum())
    print(
        f"{len(found):,} patterns in cells of {result.predictions.shape[0]:,} images, "
        f"{flagged:,} flagged (score >= {FLAG_SCORE:g}: p <= {10**-FLAG_SCORE:g}); "
        "errors first, then correct predictions, most suspicious first"
    )
    if not records:
        return 0
    frame = pd.DataFrame(
        {
            "rank": [r["rank"] for r in records],
            "true": [r["true"] for r in records],
            "pred": [r["pred"] for r in records],
            "pattern": [f"{r['pattern']}/{r['patterns_in_cell']}" for r in records],
            "images": [f"{r['images']}/{r['cell_images']}" for r in records],
            "score": [f"{r['score']:.1f}" + (" *" if r["flagged"] else "") for r in records],
            "centroid x,y": [f"{r['centroid'][0]:.2f},{r['centroid'][1]:.2f}" for r in records],
            "example": [r["paths"][0] if r["paths"] else "" for r in records],
        }
    )
    if any("verdict" in r for r in records):
        frame["verdict"] = [r.get("verdict", "") for r in records]
    print(frame.to_string(index=False))
    print("images: in the pattern / in its cell; * flagged; centroid: fractions, 0,0 top left")
    return 0


def _similar(args: argparse.Namespace) -> int:
    from core.analysis.similar import similar_images

    config = load_config(args.config)
    result = results(config, args.model, args.dataset)
    table = similar_images(result, args.image, args.top)
    if args.json:
        import json

        rows = table[["path", "true", "pred", "distance"]].to_dict("records")
        print(json.dumps([{**r, "distance": round(float(r["distance"]), 6)} for r in rows]))
        return 0
    print(f"{len(table)} images nearest to {args.image} (Euclidean distance of embeddings):")
    if len(table):
        shown = table[["distance", "path", "true", "pred"]].round({"distance": 4})
        print(shown.to_string(index=False))
    return 0

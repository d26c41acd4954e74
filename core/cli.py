"""Command line: ``python -m core evaluate | label-issues | compare --config FILE ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from core.comparison import Agreement, ModelResults, compare
from core.config import ProjectConfig, load_config
from core.datasets import open_dataset
from core.errors import UserFacingError
from core.evaluate import evaluate
from core.label_quality import label_quality
from core.metrics import accuracy, confusion_matrix
from core.models import load_model
from core.predictions import Evaluation

__all__ = ["export_table", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a problem with the input)."""
    args = _parser().parse_args(argv)
    commands = {"evaluate": _evaluate, "label-issues": _label_issues, "compare": _compare}
    try:
        return commands[args.command](args)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("evaluate", help="predict a test set; print metrics; save a table")
    run.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    run.add_argument("--model", help="model name (default: the config's first)")
    run.add_argument("--dataset", help="dataset name (default: the config's first)")
    run.add_argument("--out", required=True, type=Path, help="predictions table, .csv or .parquet")
    run.add_argument("--workers", type=int, default=None, help="image loader processes")
    run.add_argument("--no-cache", action="store_true", help="recompute, ignore the cache")
    issues = commands.add_parser("label-issues", help="rank the suspected label errors")
    issues.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    issues.add_argument("--model", help="model name (default: the config's first)")
    issues.add_argument("--dataset", help="dataset name (default: the config's first)")
    issues.add_argument("--top", type=int, default=20, help="rows to print (default 20)")
    pair = commands.add_parser("compare", help="what model B fixed and broke relative to A")
    pair.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    pair.add_argument(
        "--model", action="append", required=True, help="give twice: --model A --model B"
    )
    pair.add_argument("--dataset", help="dataset name (default: the config's first)")
    pair.add_argument("--top", type=int, default=20, help="classes with the largest F1 change")
    return parser


def _evaluate(args: argparse.Namespace) -> int:
    if args.out.suffix not in (".csv", ".parquet"):
        raise UserFacingError(f"--out must end in .csv or .parquet, got {args.out.name!r}")
    config = load_config(args.config)
    model = load_model(config.model(args.model))
    for note in model.warnings:
        print(f"warning: {note}", file=sys.stderr)
    dataset = open_dataset(config.dataset(args.dataset), model.spec.classes)
    result = evaluate(
        model,
        dataset,
        cache_dir=None if args.no_cache else config.cache_dir,
        progress=_print_progress,
        num_workers=args.workers,
    )
    print(file=sys.stderr)
    _report(result)
    table = export_table(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.suffix == ".csv":
        table.to_csv(args.out, index=False)
    else:
        table.to_parquet(args.out, index=False)
    print(f"wrote {len(table)} rows to {args.out}")
    return 0


def _evaluation(config: ProjectConfig, model_name: str | None, dataset: str | None) -> Evaluation:
    model = load_model(config.model(model_name))
    for note in model.warnings:
        print(f"warning: {note}", file=sys.stderr)
    data = open_dataset(config.dataset(dataset), model.spec.classes)
    result = evaluate(model, data, cache_dir=config.cache_dir, progress=_print_progress)
    print(file=sys.stderr)
    return result


def _arrays(result: Evaluation) -> tuple[ModelResults, np.ndarray]:
    """The adapter from an evaluation to the arrays the analyses take, plus the probabilities
    [N, K] (the one place to re-point when the results store changes)."""
    table = result.predictions
    k = result.num_classes
    probs = np.stack(table["probs"].to_numpy()) if len(table) else np.zeros((0, k), np.float32)
    return ModelResults(
        model=result.meta["model"],
        dataset=result.meta["dataset"],
        classes=tuple(result.classes),
        paths=table["path"].to_numpy(dtype=str),
        true=table["true"].to_numpy(dtype=np.int64),
        pred=table["pred"].to_numpy(dtype=np.int64),
        true_prob=table["true_prob"].to_numpy(dtype=np.float32),
    ), probs


def _label_issues(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    rows, probs = _arrays(_evaluation(config, args.model, args.dataset))
    if not len(rows.true):
        raise UserFacingError("no image could be evaluated, so there is nothing to rank")
    quality = label_quality(rows.true, probs)
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
    a, b = (_arrays(_evaluation(config, name, args.dataset))[0] for name in args.model)
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


def export_table(result: Evaluation) -> pd.DataFrame:
    """The predictions table with class names and one ``prob_<class>`` column per class."""
    table = result.predictions
    names = list(result.classes)
    out = pd.DataFrame(
        {
            "path": table["path"],
            "true": [names[i] for i in table["true"]],
            "pred": [names[i] for i in table["pred"]],
            "confidence": table["confidence"],
            "true_prob": table["true_prob"],
            "loss": table["loss"],
        }
    )
    probs = pd.DataFrame(list(table["probs"]), columns=[f"prob_{n}" for n in names])
    return pd.concat([out, probs], axis=1)


def _report(result: Evaluation) -> None:
    table = result.predictions
    print(f"images: {len(table)}   skipped: {len(result.skipped)}")
    for skipped in result.skipped:
        print(f"  skipped {skipped.path}: {skipped.reason}")
    print(f"accuracy: {accuracy(table):.4f}")
    matrix = confusion_matrix(table, result.num_classes)
    names = list(result.classes)
    frame = pd.DataFrame(matrix, index=[f"true {n}" for n in names], columns=names)
    print("confusion matrix (rows: true class, columns: predicted class):")
    print(frame.to_string())


def _print_progress(done: int, total: int) -> None:
    print(f"\rpredicting: {done}/{total}", end="", file=sys.stderr, flush=True)

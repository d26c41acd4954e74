"""Command line: ``python -m core evaluate --config FILE --out FILE.csv|.parquet``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from core.config import load_config
from core.datasets import open_dataset
from core.errors import UserFacingError
from core.evaluate import evaluate
from core.metrics import accuracy, confusion_matrix
from core.models import load_model
from core.predictions import Evaluation

__all__ = ["export_table", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a problem with the input)."""
    args = _parser().parse_args(argv)
    try:
        return _evaluate(args)
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

"""``python -m core slices``: accuracy by metadata, image property, embedding cluster and class,
and the automatic slice finder (``--find``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core.analysis.slice_columns import result_columns
from core.analysis.slices import Condition, Slice, slice_table
from core.cli.common import dataset_of, results
from core.config import load_config
from core.data.datasets import open_dataset
from core.data.metadata import ColumnSet
from core.errors import UserFacingError

__all__ = ["add_parsers", "table_records"]


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    run = commands.add_parser(
        "slices",
        help="accuracy by metadata, image property, embedding cluster and class; "
        "--find: the slices where errors concentrate",
    )
    run.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    run.add_argument("--model", help="model name (default: the config's first)")
    run.add_argument("--dataset", help="dataset name (default: the model's first)")
    run.add_argument(
        "--by", nargs="+", metavar="COLUMN", help="only these columns (default: all of them)"
    )
    run.add_argument(
        "--find",
        action="store_true",
        help="the automatic slice finder: conjunctions of up to 3 conditions, best score first",
    )
    run.add_argument("--top", type=int, default=20, help="entries to print (default 20)")
    run.add_argument("--json", action="store_true", help="a JSON list, worst first")
    return {"slices": _slices}


def _slices(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UserFacingError(f"--top must be at least 1, got {args.top}")
    config = load_config(args.config)
    spec = config.model(args.model)
    dataset = open_dataset(
        config.dataset(dataset_of(config, spec.name, args.dataset)), spec.classes
    )
    result = results(config, args.model, args.dataset, dataset=dataset)
    columns = result_columns(result, dataset)
    if args.by:
        missing = [name for name in args.by if name not in columns]
        if missing:
            raise UserFacingError(
                f"no column {', '.join(map(repr, missing))}; columns: {', '.join(columns.names)}"
            )
    if args.find:
        return _find(args, result, columns)
    table = slice_table(columns, result.true, result.pred, by=args.by)
    if args.json:
        print(json.dumps(table_records(table, columns)[: args.top], ensure_ascii=False))
        return 0
    _print_table(table, float((result.true == result.pred).mean()))
    return 0


def table_records(table: pd.DataFrame, columns: ColumnSet) -> list[dict[str, Any]]:
    """The slice table as the JSON entries of ``--json``, worst accuracy first."""
    ordered = table.sort_values(["accuracy", "images"], ascending=[True, False], kind="stable")
    return [
        {
            "slice": Slice((Condition(row.column, row.value),)).to_json(columns),
            "param": row.param,
            "images": int(row.images),
            "errors": int(row.errors),
            "accuracy": float(row.accuracy),
            "ci": [float(row.ci_low), float(row.ci_high)],
            "below": bool(row.below),
        }
        for row in ordered.itertuples()
    ]


def _find(args: argparse.Namespace, result: Any, columns: ColumnSet) -> int:
    from core.analysis.slice_finder import result_slices

    searched = ColumnSet([columns[n] for n in args.by], columns.rows) if args.by else columns
    found = result_slices(result, columns) if not args.by else None
    if found is None:  # a restricted search is not stored
        from core.analysis.slice_finder import find_slices

        found = find_slices(searched, result.true, result.pred)
    records = found.to_records(columns, args.top)
    if args.json:
        print(json.dumps(records, ensure_ascii=False))
        return 0
    overall = float((result.true == result.pred).mean())
    print(
        f"{len(found)} slices where errors concentrate (sliceline over "
        f"{len(searched)} columns; overall accuracy {overall:.1%}), best score first:"
    )
    if not records:
        return 0
    frame = pd.DataFrame(
        {
            "score": [f"{r['score']:.2f}" for r in records],
            "images": [r["images"] for r in records],
            "errors": [r["errors"] for r in records],
            "accuracy": [f"{r['accuracy']:.1%}" for r in records],
            "95% CI": [_interval(r["ci"]) for r in records],
            "p": [f"{r['p_value']:.2g}" for r in records],
            "slice": [s.slice.label() for s in found.slices[: args.top]],
        }
    )
    print(frame.to_string(index=False))
    print("p: one-sided Fisher exact test of the slice's error rate against the rest")
    return 0


def _print_table(table: pd.DataFrame, overall: float) -> None:
    print(f"overall accuracy {overall:.1%}; * the 95% interval lies wholly below it")
    for name, rows in table.groupby("column", sort=False):
        spread = float(rows["spread"].iloc[0])
        print(f"\n{name} ({rows['kind'].iloc[0]}; accuracy varies by {spread:.3f})")
        marked = zip(rows.label, rows.below, strict=True)
        intervals = zip(rows.ci_low, rows.ci_high, strict=True)
        frame = pd.DataFrame(
            {
                "value": [f"{v} *" if below else str(v) for v, below in marked],
                "images": rows["images"].to_numpy(),
                "errors": rows["errors"].to_numpy(),
                "accuracy": [f"{a:.1%}" for a in rows["accuracy"]],
                "95% CI": [_interval(ci) for ci in intervals],
                "where": rows["param"].to_numpy(),
            }
        )
        print(frame.to_string(index=False))
    sys.stdout.flush()


def _interval(ci: Any) -> str:
    lo, hi = ci
    if math.isnan(lo):
        return ""
    return f"{lo:.1%} – {hi:.1%}"

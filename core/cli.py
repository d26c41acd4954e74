"""Command line: ``python -m core evaluate | label-issues | compare --config FILE ...``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.analysis.metrics import accuracy, confusion_matrix, per_class_metrics, top_confused_pairs
from core.config import ProjectConfig, load_config
from core.data.datasets import open_dataset
from core.errors import UserFacingError
from core.results import Results
from core.results.evaluate import evaluate, lookup

if TYPE_CHECKING:
    from core.analysis.comparison import ModelResults

# torch, the model, scipy and scikit-learn are imported by the commands that need them: reading
# stored results (a second `evaluate` on unchanged inputs) must not wait seconds for them.

__all__ = ["export_batches", "export_table", "main"]

FULL_MATRIX_UP_TO = 30  # classes; past this the report lists the most confused pairs instead
EXPORT_ROWS = 50_000  # rows per written block: the export's memory does not grow with the set


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a problem with the input)."""
    args = _parser().parse_args(argv)
    commands = {"evaluate": _evaluate, "label-issues": _label_issues, "compare": _compare}
    try:
        return commands[args.command](args)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the next run continues from the last saved batch", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("evaluate", help="predict a test set; print metrics; save results")
    run.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    run.add_argument("--model", help="model name (default: the config's first)")
    run.add_argument("--dataset", help="dataset name (default: the config's first)")
    run.add_argument(
        "--out",
        type=Path,
        help="a result folder the dashboard can open (DIR/), or a table (.csv / .parquet)",
    )
    run.add_argument("--workers", type=int, default=None, help="image loader processes")
    run.add_argument("--batch-size", type=int, default=None, help="images per forward pass")
    run.add_argument("--no-cache", action="store_true", help="recompute, ignore the cache")
    run.add_argument("--no-maps", action="store_true", help="do not store Grad-CAM maps")
    run.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: Ray Data, on a local Ray or --address",
    )
    run.add_argument(
        "--address",
        help="with --engine ray: a running Ray cluster (host:port; default $RAY_ADDRESS, "
        "else a local Ray is started)",
    )
    run.add_argument(
        "--commit-every",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often finished batches are synced to disk (what a killed run keeps)",
    )
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
    out: Path | None = args.out
    table_out = out is not None and out.suffix in (".csv", ".parquet")
    if out is not None and not table_out and out.suffix:
        raise UserFacingError(
            f"--out must be a folder (DIR/) or end in .csv or .parquet, got {out.name!r}"
        )
    config = load_config(args.config)
    result = _results(
        config,
        args.model,
        args.dataset,
        cache=not args.no_cache,
        out=out if out is not None and not table_out else None,
        maps=not args.no_maps,
        engine=_engine(args),
        num_workers=args.workers,
        batch_size=args.batch_size,
        commit_seconds=args.commit_every,
    )
    _report(result)
    if out is None:
        return 0
    if table_out:
        rows = _write_table(result, out)
        print(f"wrote {rows:,} rows to {out}")
    else:
        print(f"wrote the result folder {out} ({len(result.predictions):,} images)")
    return 0


def _engine(args: argparse.Namespace) -> Callable[..., None] | None:
    """The engine that fills the store; None: the in-process one."""
    if args.engine == "local":
        if args.address:
            raise UserFacingError("--address needs --engine ray")
        return None
    from core.results import ray_engine  # imports ray only when it runs

    return partial(ray_engine.predict, address=args.address)


def export_batches(result: Results, rows: int = EXPORT_ROWS) -> Iterator[pa.RecordBatch]:
    """The results as path, true, pred, confidence, true_prob, loss, ``prob_<class>``...

    Yields blocks of ``rows`` images, so a million-row export never holds the whole table.
    """
    table = result.predictions
    names = np.array(result.classes, dtype=object)
    prob_names = [f"prob_{n}" for n in result.classes]
    for start in range(0, max(len(table), 1), rows):
        block = table.iloc[start : start + rows]
        probs = result.probs(block["index"].to_numpy())
        columns = {
            "path": pa.array(block["path"].array),
            "true": pa.array(names[block["true"].to_numpy()], type=pa.string()),
            "pred": pa.array(names[block["pred"].to_numpy()], type=pa.string()),
            "confidence": pa.array(block["confidence"].to_numpy()),
            "true_prob": pa.array(block["true_prob"].to_numpy()),
            "loss": pa.array(block["loss"].to_numpy()),
        }
        columns.update({name: pa.array(probs[:, i]) for i, name in enumerate(prob_names)})
        yield pa.RecordBatch.from_pydict(columns)


def export_table(result: Results) -> pd.DataFrame:
    """The whole export as one DataFrame (for small results and tests)."""
    return pa.Table.from_batches(list(export_batches(result))).to_pandas()


def _write_table(result: Results, out: Path) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    batches = export_batches(result)
    first = next(batches)
    writer: pq.ParquetWriter | pa_csv.CSVWriter
    if out.suffix == ".csv":
        writer = pa_csv.CSVWriter(str(out), first.schema)
    else:
        writer = pq.ParquetWriter(str(out), first.schema)
    written = 0
    with writer:
        for batch in (first, *batches):
            writer.write_batch(batch)
            written += batch.num_rows
    return written


def _report(result: Results) -> None:
    # the two columns the report reads, not the whole table (gathered from disk: 0.3 s at 1M)
    table = pd.DataFrame({"true": result.true, "pred": result.pred}, copy=False)
    names = list(result.classes)
    print(f"images: {len(table):,}   skipped: {len(result.skipped):,}")
    for skipped in result.skipped[:20]:
        print(f"  skipped {skipped.path}: {skipped.reason}")
    if len(result.skipped) > 20:
        print(f"  ... and {len(result.skipped) - 20:,} more")
    print(f"accuracy: {accuracy(table):.4f}")
    if len(names) <= FULL_MATRIX_UP_TO:
        matrix = confusion_matrix(table, result.num_classes)
        frame = pd.DataFrame(matrix, index=[f"true {n}" for n in names], columns=names)
        print("confusion matrix (rows: true class, columns: predicted class):")
        print(frame.to_string())
        return
    pairs = top_confused_pairs(table, names, 20)
    print(f"most confused pairs (of {len(names):,} classes):")
    for row in pairs.itertuples():
        print(f"  {row.count:>8,}  true {row.true_name} → predicted {row.pred_name}")
    worst = per_class_metrics(table, names).sort_values(["recall", "class"]).head(10)
    print("lowest recall:")
    for name, recall, support in zip(
        worst["class"], worst["recall"], worst["support"], strict=True
    ):
        print(f"  {recall:8.2%}  {name} ({support:,} images)")


def _results(
    config: ProjectConfig,
    model_name: str | None,
    dataset_name: str | None,
    cache: bool = True,
    out: Path | None = None,
    maps: bool = True,
    **run: Any,
) -> Results:
    """The stored results of unchanged inputs (no model loaded), else a new evaluation."""
    spec = config.model(model_name)
    dataset = open_dataset(config.dataset(dataset_name), spec.classes)
    cache_dir = config.cache_dir if cache else None
    try:
        found = lookup(spec, dataset, cache_dir, out, maps)
    except OSError:  # e.g. missing weights or hf folder: loading the model says so clearly
        found = None
    if found is not None and found.result is not None:
        print(f"stored results of unchanged inputs: {found.folder}", file=sys.stderr)
        return found.result
    from core.data.models import load_model  # torch: only when there is something to compute

    model = load_model(spec)
    for note in model.warnings:
        print(f"warning: {note}", file=sys.stderr)
    try:
        return evaluate(
            model, dataset, cache_dir, _print_progress, out=out, maps=maps, found=found, **run
        )
    finally:
        print(file=sys.stderr)  # end the progress line, also before an error message


def _arrays(result: Results) -> ModelResults:
    """The per-image arrays the analyses take (scipy and scikit-learn: only these commands)."""
    from core.analysis.comparison import ModelResults

    return ModelResults.of(result)


def _label_issues(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    result = _results(config, args.model, args.dataset)
    rows = _arrays(result)
    if not len(rows.true):
        raise UserFacingError("no image could be evaluated, so there is nothing to rank")
    from core.analysis.label_quality import result_label_quality  # cleanlab: only for this command

    quality = result_label_quality(result)  # computed once, then read from the result folder
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

    a, b = (_arrays(_results(config, name, args.dataset)) for name in args.model)
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


def _print_progress(done: int, total: int) -> None:
    print(f"\rpredicting: {done}/{total}", end="", file=sys.stderr, flush=True)

"""``python -m core evaluate``: predict a test set, print its metrics, save or export the result."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from core.analysis.metrics import accuracy, confusion_matrix, per_class_metrics, top_confused_pairs
from core.cli.common import dataset_of, print_progress, results
from core.config import ProjectConfig, load_config
from core.data.datasets import dataset_key, open_dataset
from core.data.metadata import ColumnSet
from core.errors import UserFacingError
from core.results import Results
from core.results.store import write_error

__all__ = ["add_parsers", "export_batches", "export_table", "report"]

FULL_MATRIX_UP_TO = 30  # classes; past this the report lists the most confused pairs instead
EXPORT_ROWS = 50_000  # rows per written block: the export's memory does not grow with the set


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    run = commands.add_parser("evaluate", help="predict a test set; print metrics; save results")
    run.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    run.add_argument("--model", help="model name (default: the config's first)")
    run.add_argument("--dataset", help="dataset name (default: the model's first)")
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
        "--faithfulness",
        action="store_true",
        help="also score the stored maps' faithfulness (saved beside the result; "
        "as faithfulness = true in the model entry)",
    )
    run.add_argument(
        "--no-embeddings",
        action="store_true",
        help="do not store image embeddings (the Map page and similar images need them)",
    )
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
    return {"evaluate": _evaluate}


def _evaluate(args: argparse.Namespace) -> int:
    out: Path | None = args.out
    table_out = out is not None and out.suffix in (".csv", ".parquet")
    if out is not None and not table_out and out.suffix:
        raise UserFacingError(
            f"--out must be a folder (DIR/) or end in .csv or .parquet, got {out.name!r}"
        )
    config = load_config(args.config)
    result = results(
        config,
        args.model,
        args.dataset,
        cache=not args.no_cache,
        out=out if out is not None and not table_out else None,
        maps=not args.no_maps,
        embeddings=not args.no_embeddings,
        engine=_engine(args),
        num_workers=args.workers,
        batch_size=args.batch_size,
        commit_seconds=args.commit_every,
    )
    report(result)
    if args.faithfulness or config.model(args.model).faithfulness:
        _score_maps(config, args.model, args.dataset, result)
    if out is None:
        return 0
    if table_out:
        corrected = _corrected(config, args.model, args.dataset, result)
        extra = _slice_columns(config, args.model, args.dataset, result)
        rows = _write_table(result, out, corrected, extra)
        print(f"wrote {rows:,} rows to {out}")
    else:
        print(f"wrote the result folder {out} ({len(result.predictions):,} images)")
    return 0


def _corrected(
    config: ProjectConfig, model: str | None, dataset: str | None, result: Results
) -> np.ndarray:
    """The labels after the team's corrections (core.corrections), one per evaluated row;
    all -1 (an empty column) with a warning where the notes database cannot be read."""
    from core.corrections import stored_overlay
    from core.notes import NotesError, NotesStore

    name = config.dataset(dataset_of(config, config.model(model).name, dataset))
    try:
        notes = NotesStore(config.notes_db, read_only=True)
        return stored_overlay(notes, dataset_key(name), result).true
    except NotesError as exc:
        print(f"warning: the corrected column is left empty: {exc}", file=sys.stderr)
        return np.full(len(result.index), -1, np.int64)


def _slice_columns(
    config: ProjectConfig, model: str | None, dataset: str | None, result: Results
) -> ColumnSet:
    """The metadata and image property columns (and stored embedding clusters) to export,
    one row per evaluated image; not the true class (already ``true``)."""
    from core.analysis.slice_columns import CLASS, result_columns

    spec = config.model(model)
    opened = open_dataset(config.dataset(dataset_of(config, spec.name, dataset)), spec.classes)
    columns = result_columns(result, opened, clusters=False)
    return ColumnSet([c for c in columns if c.name != CLASS], columns.rows)


def _score_maps(
    config: ProjectConfig, model_name: str | None, dataset_name: str | None, result: Results
) -> None:
    """Score the faithfulness of the maps the evaluation stored (once; saved beside it)."""
    from core.analysis.trust import result_faithfulness, stored_faithfulness

    scores = stored_faithfulness(result)
    if scores is None:
        from core.data.models import load_model

        spec = config.model(model_name)
        dataset = open_dataset(config.dataset(dataset_name), spec.classes)
        progress = partial(print_progress, what="scoring maps")
        try:
            scores = result_faithfulness(load_model(spec), dataset, result, progress=progress)
        finally:
            print(file=sys.stderr)
    pred, other = np.nanmedian(scores[:, 0]), np.nanmedian(scores[:, 1])
    print(
        f"map faithfulness (share of the class's probability lost without the map's region), "
        f"median: predicted class {pred:.3f}, true class / runner-up {other:.3f}"
    )


def _engine(args: argparse.Namespace) -> Callable[..., None] | None:
    """The engine that fills the store; None: the in-process one."""
    if args.engine == "local":
        if args.address:
            raise UserFacingError("--address needs --engine ray")
        return None
    from core.results import ray_engine  # imports ray only when it runs

    return partial(ray_engine.predict, address=args.address)


def export_batches(
    result: Results,
    rows: int = EXPORT_ROWS,
    corrected: np.ndarray | None = None,
    extra: ColumnSet | None = None,
) -> Iterator[pa.RecordBatch]:
    """The results as path, true, pred, confidence, true_prob, loss, ``prob_<class>``...
    and, given ``corrected`` (class indices aligned with the evaluated rows, -1 unknown), the
    label after the team's corrections (``corrected``), and the ``extra`` columns (metadata,
    image properties; rows aligned with the evaluated rows; a name the export uses already
    gets ``_meta`` appended).

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
        if corrected is not None:
            fixed = corrected[start : start + rows]
            columns["corrected"] = pa.array(names[fixed], pa.string(), mask=fixed < 0)
        columns.update({name: pa.array(probs[:, i]) for i, name in enumerate(prob_names)})
        for column in extra or ():
            name = column.name
            while name in columns:
                name += "_meta"
            columns[name] = column.to_arrow(start, start + rows)
        yield pa.RecordBatch.from_pydict(columns)


def export_table(result: Results) -> pd.DataFrame:
    """The whole export as one DataFrame (for small results and tests)."""
    return pa.Table.from_batches(list(export_batches(result))).to_pandas()


def _write_table(
    result: Results,
    out: Path,
    corrected: np.ndarray | None = None,
    extra: ColumnSet | None = None,
) -> int:
    try:
        return _write_batches(result, out, corrected, extra)
    except OSError as exc:  # a full or read-only disk: say so; a partial table is removed
        with contextlib.suppress(OSError):  # a read-only disk refuses even that
            out.unlink(missing_ok=True)
        fix = "Free space or choose a writable folder for --out"
        raise write_error(exc, out, "the table", fix) from None


def _write_batches(
    result: Results,
    out: Path,
    corrected: np.ndarray | None = None,
    extra: ColumnSet | None = None,
) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    batches = export_batches(result, corrected=corrected, extra=extra)
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


def report(result: Results) -> None:
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

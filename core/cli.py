"""Command line: ``python -m core evaluate | label-issues | compare | patterns | similar
| faithfulness | sanity --config FILE ...``."""

from __future__ import annotations

import argparse
import contextlib
import json
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
from core.results.store import write_error

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
    commands = {
        "evaluate": _evaluate,
        "label-issues": _label_issues,
        "compare": _compare,
        "patterns": _patterns,
        "faithfulness": _faithfulness,
        "sanity": _sanity,
        "similar": _similar,
    }
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
    _trust_parsers(commands)
    near = commands.add_parser("similar", help="the images nearest to one in embedding space")
    near.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    near.add_argument("--model", help="model name (default: the config's first)")
    near.add_argument("--dataset", help="dataset name (default: the config's first)")
    near.add_argument(
        "--image", required=True, help="the image's path as the export lists it (under the root)"
    )
    near.add_argument("--top", type=int, default=10, help="how many neighbours (default 10)")
    near.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    return parser


def _trust_parsers(commands: Any) -> None:
    faith = commands.add_parser(
        "faithfulness", help="how far to trust the maps of images: scores vs a random map"
    )
    faith.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    faith.add_argument("--model", help="model name (default: the config's first)")
    faith.add_argument("--dataset", help="dataset name (default: the config's first)")
    which = faith.add_mutually_exclusive_group(required=True)
    which.add_argument("--cell", help="TRUE,PRED: the images of a cell (class names or indices)")
    which.add_argument("--image", action="append", help="an image path (relative to the root)")
    faith.add_argument(
        "--method", default="grad-cam", help="grad-cam (default), grad-cam++, cam, saliency"
    )
    faith.add_argument("--layer", help="target layer (default: the model's)")
    faith.add_argument("--limit", type=int, default=100, help="at most this many images of a cell")
    faith.add_argument("--json", action="store_true", help="print a JSON list")
    check = commands.add_parser(
        "sanity", help="model-randomisation check: do the maps depend on the weights?"
    )
    check.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    check.add_argument("--model", help="model name (default: the config's first)")
    check.add_argument("--dataset", help="dataset name (default: the config's first)")
    check.add_argument("--layer", help="target layer (default: the model's)")
    check.add_argument(
        "--method", default="grad-cam", help="grad-cam (default), grad-cam++, cam, saliency"
    )
    check.add_argument("--images", type=int, default=64, help="seeded sample size (default 64)")
    check.add_argument("--json", action="store_true", help="print JSON")


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
        embeddings=not args.no_embeddings,
        engine=_engine(args),
        num_workers=args.workers,
        batch_size=args.batch_size,
        commit_seconds=args.commit_every,
    )
    _report(result)
    if args.faithfulness or config.model(args.model).faithfulness:
        _score_maps(config, args.model, args.dataset, result)
    if out is None:
        return 0
    if table_out:
        rows = _write_table(result, out)
        print(f"wrote {rows:,} rows to {out}")
    else:
        print(f"wrote the result folder {out} ({len(result.predictions):,} images)")
    return 0


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
        progress = partial(_print_progress, what="scoring maps")
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
    try:
        return _write_batches(result, out)
    except OSError as exc:  # a full or read-only disk: say so; a partial table is removed
        with contextlib.suppress(OSError):  # a read-only disk refuses even that
            out.unlink(missing_ok=True)
        fix = "Free space or choose a writable folder for --out"
        raise write_error(exc, out, "the table", fix) from None


def _write_batches(result: Results, out: Path) -> int:
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
    embeddings: bool = True,
    **run: Any,
) -> Results:
    """The stored results of unchanged inputs (no model loaded), else a new evaluation."""
    spec = config.model(model_name)
    dataset = open_dataset(
        config.dataset(_dataset_of(config, spec.name, dataset_name)), spec.classes
    )
    cache_dir = config.cache_dir if cache else None
    try:
        found = lookup(spec, dataset, cache_dir, out, maps, embeddings)
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
            model,
            dataset,
            cache_dir,
            _print_progress,
            out=out,
            maps=maps,
            found=found,
            embeddings=embeddings,
            **run,
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


def _patterns(args: argparse.Namespace) -> int:
    if args.top < 1:
        raise UserFacingError(f"--top must be at least 1, got {args.top}")
    config = load_config(args.config)
    result = _results(config, args.model, args.dataset)
    from core.analysis.patterns import FLAG_SCORE, result_patterns  # scipy: only this command

    found = result_patterns(result)  # computed once, then read from the result folder
    paths = result.manifest.column("path")
    records = found.to_records(result.classes, _Paths(paths), args.top)
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
    print(frame.to_string(index=False))
    print("images: in the pattern / in its cell; * flagged; centroid: fractions, 0,0 top left")
    return 0


class _Paths:
    """Manifest paths by row, read one at a time (no list of a million strings)."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self.column = column

    def __getitem__(self, row: int) -> str:
        return str(self.column[row].as_py())


def _faithfulness(args: argparse.Namespace) -> int:
    import json

    from core.analysis.trust import load_images, method_name, score_images
    from core.data.models import load_model

    config = load_config(args.config)
    method = method_name(args.method)
    spec = config.model(args.model)
    dataset_name = _dataset_of(config, spec.name, args.dataset)
    result = _results(config, spec.name, dataset_name)
    dataset = open_dataset(config.dataset(dataset_name), spec.classes)
    table = result.predictions
    if args.cell:
        true, pred = _cell(args.cell, result.classes)
        rows = table[(table["true"] == true) & (table["pred"] == pred)].head(max(args.limit, 0))
    else:
        rows = table[table["path"].isin(args.image)]
        missing = sorted(set(args.image) - set(rows["path"]))
        if missing:
            raise UserFacingError(f"not among the evaluated images of {dataset.name!r}: {missing}")
    model = load_model(spec)
    images, kept, failed = load_images(model, dataset, list(rows["path"]))
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    rows = rows.iloc[kept]
    found = score_images(
        model,
        images,
        list(rows["path"]),
        rows["pred"].tolist(),
        rows["true"].tolist(),
        result.classes,
        method,
        args.layer,
    )
    if args.json:
        print(json.dumps([f.to_dict() for f in found], indent=1))
        return 0
    print(
        f"{len(found)} image(s), {method}: score = share of the class's probability lost when the "
        "map's region is removed (higher = more faithful); random = the map's cells shuffled"
    )
    frame = pd.DataFrame(
        {
            "path": [f.path for f in found],
            "pred": [f.pred["class"] for f in found],
            "pred score": [round(f.pred["score"], 3) for f in found],
            "true": [f.true["class"] for f in found],
            "true score": [round(f.true["score"], 3) for f in found],
            "random score": [round(f.random["score"], 3) for f in found],
        }
    )
    if len(frame):
        print(frame.to_string(index=False))
        print(
            f"median: pred {frame['pred score'].median():.3f}, true "
            f"{frame['true score'].median():.3f}, random {frame['random score'].median():.3f}"
        )
    return 0


def _dataset_of(config: ProjectConfig, model: str, name: str | None) -> str:
    """The dataset asked for, else the model's first (its ``datasets`` list, else the config's)."""
    if name is not None:
        return config.dataset(name).name
    return (config.datasets_for(model) or [config.dataset().name])[0]


def _cell(text: str, classes: Sequence[str]) -> tuple[int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise UserFacingError(f"--cell takes TRUE,PRED, got {text!r}")
    found = []
    for part in parts:
        if part in classes:
            found.append(list(classes).index(part))
        elif part.isdigit() and int(part) < len(classes):
            found.append(int(part))
        else:
            raise UserFacingError(f"unknown class {part!r}; classes: {', '.join(classes)}")
    return found[0], found[1]


def _sanity(args: argparse.Namespace) -> int:
    import json

    from core.analysis.trust import method_name, model_sanity
    from core.data.models import load_model

    config = load_config(args.config)
    spec = config.model(args.model)
    dataset = open_dataset(
        config.dataset(_dataset_of(config, spec.name, args.dataset)), spec.classes
    )
    model = load_model(spec)
    report = model_sanity(model, dataset, method_name(args.method), args.layer, args.images)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(
        f"{report.method} at {report.layer or 'the input'}: Spearman rank correlation of the maps "
        "with the original model's, as the weights are randomised from the head down"
    )
    for stage in report.stages:
        print(f"  {stage.spearman:+.3f}  up to {stage.randomised}")
    verdict = "passes" if report.passes else "FAILS"
    print(
        f"{verdict}: with every weight random the correlation is "
        f"{report.stages[-1].spearman:+.3f} (passes below {report.threshold})"
    )
    return 0


def _print_progress(done: int, total: int, what: str = "predicting") -> None:
    print(f"\r{what}: {done}/{total}", end="", file=sys.stderr, flush=True)


def _similar(args: argparse.Namespace) -> int:
    from core.analysis.similar import similar_images

    config = load_config(args.config)
    result = _results(config, args.model, args.dataset)
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

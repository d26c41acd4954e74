"""``python -m core export-labels | import-labels | tag``: the relabelling round trip and bulk
tagging, through the notes database the dashboard uses."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.cli.common import dataset_of, results
from core.config import ProjectConfig, load_config
from core.corrections import CorrectionsStore
from core.data.datasets import ImageDataset, dataset_key, open_dataset
from core.errors import UserFacingError
from core.findings import FindingsStore
from core.labelstudio import (
    Answer,
    image_url,
    labelling_config,
    read_answers,
    resolve,
    tasks_csv,
    tasks_for,
)
from core.notes import NotesStore
from core.results import Results
from core.tagging import tag_images

__all__ = ["add_parsers", "dataset_name", "select_paths"]


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    out = commands.add_parser(
        "export-labels", help="images to relabel, for Label Studio (with the model's class) or CSV"
    )
    _common(out, model=True)
    which = out.add_mutually_exclusive_group(required=True)
    which.add_argument("--tag", help="the images carrying this tag")
    which.add_argument("--finding", type=int, metavar="ID", help="the images of a finding")
    which.add_argument(
        "--label-issues", action="store_true", help="the suspected label errors, most suspect first"
    )
    out.add_argument(
        "--top",
        type=int,
        help="at most this many images; with --label-issues, the N most suspect (default: the "
        "flagged ones)",
    )
    out.add_argument("--format", choices=("labelstudio", "csv"), default="labelstudio")
    out.add_argument("--out", required=True, type=Path, help="the file to write (.json / .csv)")
    where = out.add_mutually_exclusive_group()
    where.add_argument(
        "--image-root", metavar="URL", help="images are served at URL/<path> (http(s)://...)"
    )
    where.add_argument(
        "--document-root",
        metavar="DIR",
        help="Label Studio local files: the dataset root's path under Label Studio's "
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: its absolute path, for a root of /)",
    )
    back = commands.add_parser(
        "import-labels", help="store corrected labels from a Label Studio export or a CSV"
    )
    _common(back, model=False)
    back.add_argument(
        "--from", dest="source", required=True, type=Path, help="Label Studio JSON export or CSV"
    )
    back.add_argument("--author", required=True, help="who the corrections are recorded as")
    back.add_argument("--dry-run", action="store_true", help="check and list; store nothing")
    tag = commands.add_parser("tag", help="tag images (and note them) in the dashboard's store")
    _common(tag, model=False)
    tag.add_argument("--tag", required=True, help="the tag to add")
    tag.add_argument("--note", help="also add this note to each image")
    tag.add_argument("--author", required=True, help="who the tags are recorded as")
    tag.add_argument("paths", nargs="+", metavar="PATH", help="image paths under the root")
    return {"export-labels": _export, "import-labels": _import, "tag": _tag}


def _common(parser: argparse.ArgumentParser, model: bool) -> None:
    parser.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    if model:
        parser.add_argument("--model", help="model name (default: the config's first)")
    parser.add_argument("--dataset", help="dataset name (default: the model's first)")


def dataset_name(config: ProjectConfig, dataset: str | None) -> str:
    """The dataset's name: the one asked for, else the first model's first."""
    return dataset_of(config, config.model().name, dataset)


# ------------------------------------------------------------------------------ export


def _export(args: argparse.Namespace) -> int:
    if args.top is not None and args.top < 1:
        raise UserFacingError(f"--top must be at least 1, got {args.top}")
    if args.image_root and not args.image_root.startswith(("http://", "https://", "/")):
        raise UserFacingError(f"--image-root must be an http(s) URL, got {args.image_root!r}")
    config = load_config(args.config)
    model = config.model(args.model).name
    name = dataset_of(config, model, args.dataset)
    result = results(config, model, name)
    paths = select_paths(config, name, result, args.tag, args.finding, args.label_issues, args.top)
    if not paths:
        raise UserFacingError("no image to export: the selection is empty")
    spec = config.dataset(name)
    root = args.document_root if args.document_root is not None else str(spec.root.resolve())

    def url(path: str) -> str:
        return image_url(path, args.image_root, None if args.image_root else root)

    rows = tasks_for(result, paths, model, url)
    out: Path = args.out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if args.format == "csv":
            out.write_text(tasks_csv(rows), encoding="utf-8", newline="")
        else:
            out.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
            beside = out.with_name(out.stem + ".config.xml")
            beside.write_text(labelling_config(result.classes), encoding="utf-8")
            print(f"wrote the labelling config (Choices of the classes) to {beside}")
    except OSError as exc:
        raise UserFacingError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {len(rows):,} tasks to {out}")
    return 0


def select_paths(
    config: ProjectConfig,
    dataset: str,
    result: Results,
    tag: str | None = None,
    finding: int | None = None,
    label_issues: bool = False,
    top: int | None = None,
) -> list[str]:
    """The image paths one of --tag, --finding or --label-issues picks, in order, at most
    ``top``. Label issues are cleanlab's flagged images, most suspect first; with ``top``,
    the next most suspect (lowest probability of their label) fill up to ``top``."""
    key = dataset_key(config.dataset(dataset))
    notes = NotesStore(config.notes_db, read_only=True)
    if tag is not None:
        found = sorted(notes.paths_with_tag(key, tag))
        if not found:
            raise UserFacingError(f"no image of dataset {dataset!r} carries the tag {tag!r}")
        return found[:top]
    if finding is not None:
        item = FindingsStore(notes).get(finding)
        if item.dataset != key:
            raise UserFacingError(f"finding {finding} is about another dataset than {dataset!r}")
        if item.more:
            print(
                f"note: finding {finding} holds {len(item.paths)} of its {item.images:,} "
                "images; those are exported",
                file=sys.stderr,
            )
        return list(item.paths)[:top]
    if not label_issues:
        raise UserFacingError("choose the images: --tag, --finding or --label-issues")
    from core.analysis.label_quality import result_label_quality  # cleanlab: only here

    quality = result_label_quality(result)
    if quality.unsaved:
        print(f"note: computed, not saved ({quality.unsaved})", file=sys.stderr)
    order = quality.ranked_issues()
    if top is not None and top > len(order):
        rest = np.setdiff1d(np.arange(len(quality)), order)
        rest = rest[np.lexsort((rest, quality.self_confidence[rest]))]
        order = np.concatenate([order, rest])
    rows = np.asarray(result.index)[order[:top]]
    column = result.manifest.column("path")
    return [str(p) for p in column.take(pa.array(rows)).to_pylist()]


# ------------------------------------------------------------------------------ import


def _import(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    name = dataset_name(config, args.dataset)
    dataset = _open(config, name)
    answers, problems = read_answers(args.source)
    kept, unknown = resolve(answers, dataset.paths, dataset.classes)
    problems += unknown
    store = CorrectionsStore(NotesStore(config.notes_db, read_only=args.dry_run))
    key = dataset_key(config.dataset(name))
    changes, same = _changes(store, key, dataset, kept)
    stored = 0
    if changes and not args.dry_run:
        stored = store.add(key, changes, args.author, source=f"import {args.source.name}")
    verb = "would store" if args.dry_run else "stored"
    print(
        f"{verb} {len(changes) if args.dry_run else stored:,} corrections of {name!r} as "
        f"{args.author!r}; {same:,} answers kept the current label; {len(problems):,} skipped"
    )
    for problem in problems:
        print(f"  skipped {problem.ref}: {problem.path or '(no path)'}: {problem.reason}")
    return 0


def _changes(
    store: CorrectionsStore, key: str, dataset: ImageDataset, answers: list[Answer]
) -> tuple[list[tuple[str, str, str]], int]:
    """(path, label before, label after) for each answer that changes an image's current
    label (its latest correction, else the dataset's), in order; and how many did not."""
    if not answers:
        return [], 0
    wanted = pa.array([a.path for a in answers], pa.string())
    rows = pc.index_in(wanted, value_set=pa.array(dataset.paths, pa.string()))
    labels = np.asarray(dataset.labels)[rows.to_numpy(zero_copy_only=False).astype(np.int64)]
    current = {c.path: c.new for c in store.latest(key)}
    changes, same = [], 0
    for answer, label in zip(answers, labels, strict=True):
        before = current.get(answer.path, dataset.classes[int(label)])
        if answer.label == before:
            same += 1
            continue
        changes.append((answer.path, before, answer.label))
        current[answer.path] = answer.label
    return changes, same


def _open(config: ProjectConfig, name: str) -> ImageDataset:
    """The dataset, with the class order of a model evaluated on it (as the results have)."""
    classes = next(
        (m.classes for m in config.models if m.classes and name in config.datasets_for(m.name)),
        None,
    )
    return open_dataset(config.dataset(name), classes)


# ------------------------------------------------------------------------------ tag


def _tag(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    name = dataset_name(config, args.dataset)
    dataset = _open(config, name)
    known = set(dataset.paths)
    paths = [p.replace("\\", "/") for p in args.paths]
    unknown = [p for p in paths if p not in known]
    good = [p for p in paths if p in known]
    if not good:
        raise UserFacingError(f"none of the paths is an image of {name!r}, e.g. {paths[0]!r}")
    store = NotesStore(config.notes_db, default_tags=config.tags)
    key = dataset_key(config.dataset(name))
    done = tag_images(store, key, good, args.tag, args.author, args.note or "")
    print(
        f"tagged {done.tagged:,} images {args.tag!r} ({done.had_it:,} already had it)"
        + (f", {done.noted:,} notes added" if done.noted else "")
    )
    for path in unknown:
        print(f"  skipped {path}: not an image of this dataset")
    return 0

"""Opening a labelled test set: an ImageFolder tree or a CSV manifest (``path,label``, plus
any metadata columns); Parquet and Arrow tables are read by :mod:`core.data.parquet`. The
listed set is an :class:`~core.data.image_dataset.ImageDataset`.

Listing and fingerprinting import neither torch nor OpenCV: reopening stored results of a
million-image set must not wait for them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.config import DatasetSpec
from core.data.image_dataset import EXTENSIONS, ImageDataset, SampleColumns
from core.data.listing import walk_folders
from core.data.metadata import match_paths, normalised_paths, read_text_csv
from core.errors import DatasetError

__all__ = ["EXTENSIONS", "ImageDataset", "SampleColumns", "dataset_key", "open_dataset"]


def dataset_key(spec: DatasetSpec) -> str:
    """A stable identity of a dataset (its root and manifest), for keying notes and tags.

    Unlike :meth:`ImageDataset.fingerprint` it does not change when a file is added or edited,
    so notes written on an image are never orphaned by an unrelated change.
    """
    where = f"{spec.root.resolve()}\0{spec.csv.resolve() if spec.csv else ''}"
    if spec.parquet or spec.arrow is not None:  # a table dataset: its files name it
        where += f"\0{spec.parquet}\0{spec.arrow}"
    return hashlib.sha256(where.encode()).hexdigest()[:16]


def open_dataset(spec: DatasetSpec, classes: Sequence[str] | None = None) -> ImageDataset:
    """List the images of a dataset entry; ``classes`` (e.g. from the model) fixes the order.

    Class order is the config's explicit list, else ``classes``, else sorted folder names
    (torchvision's convention) or sorted manifest labels.
    """
    if spec.classes is not None and classes is not None and list(spec.classes) != list(classes):
        raise DatasetError(
            f"dataset {spec.name!r} lists classes {list(spec.classes)} but the model's config "
            f"lists {list(classes)}"
        )
    explicit = list(spec.classes or classes or []) or None
    if spec.parquet or spec.arrow is not None:
        from core.data.parquet import open_table_dataset  # pyarrow.parquet: only for tables

        return open_table_dataset(spec, explicit)
    if not spec.root.is_dir():
        raise DatasetError(f"dataset {spec.name!r}: folder not found: {spec.root}")
    stats = None
    metadata: list[tuple[pa.Table, np.ndarray | None]] = []
    sources = []
    if spec.csv is not None:
        samples, names, extra = _from_manifest(spec, explicit)
        metadata.append((extra, None))
        sources.append(_stamp(spec.csv))
    else:
        samples, names, stats = _from_folders(spec, explicit)
    if not samples.paths:
        raise DatasetError(
            f"dataset {spec.name!r} has no images under {spec.root} "
            f"(looked for {', '.join(EXTENSIONS)})"
        )
    if spec.metadata is not None:
        metadata.append(_metadata_file(spec, samples.paths))
        sources.append(_stamp(spec.metadata))
    return ImageDataset(
        spec.name,
        spec.root,
        samples,
        names,
        link_roots=spec.link_roots,
        max_pixels=spec.max_pixels,
        stats=stats,
        metadata=[(table, rows) for table, rows in metadata if table.num_columns],
        metadata_source=";".join(sources),
    )


def _stamp(path: Path) -> str:
    """A file's identity for :attr:`ImageDataset.metadata_source`: path, size, mtime."""
    try:
        info = os.stat(path)
    except OSError:
        return f"{path}:gone"
    return f"{path}:{info.st_size}:{info.st_mtime_ns}"


def _metadata_file(spec: DatasetSpec, paths: Sequence[str]) -> tuple[pa.Table, np.ndarray | None]:
    """The ``metadata`` CSV's columns (besides ``path``) and each listed image's row in it
    (matched by path; -1 where it does not list the image)."""
    assert spec.metadata is not None
    where = f"dataset {spec.name!r}: metadata {spec.metadata}"
    try:
        table = read_text_csv(spec.metadata)
    except FileNotFoundError:
        raise DatasetError(f"{where}: file not found") from None
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{where}: cannot read it: {exc}") from None
    if "path" not in table.column_names:
        raise DatasetError(f"{where} needs a path column; found {table.column_names}")
    rows = match_paths(table.column("path"), paths, os.fspath(spec.root))
    return table.drop_columns(["path"]), rows


def _from_folders(
    spec: DatasetSpec, explicit: list[str] | None
) -> tuple[SampleColumns, list[str], np.ndarray]:
    """torchvision's ImageFolder listing (``find_classes`` and ``make_dataset``: the same files
    in the same order) without importing torchvision, which costs seconds; with the files'
    stats, taken as they are listed."""
    try:
        with os.scandir(spec.root) as entries:
            folders = sorted(entry.name for entry in entries if entry.is_dir())
    except OSError as exc:
        raise DatasetError(f"dataset {spec.name!r}: cannot list {spec.root}: {exc}") from None
    if not folders:
        raise DatasetError(
            f"dataset {spec.name!r}: {spec.root} has no class sub-folders (expected an "
            "ImageFolder tree: root/<class>/<image>)"
        )
    names = explicit or folders
    extra = sorted(set(folders) - set(names))
    if extra:
        raise DatasetError(
            f"dataset {spec.name!r}: folder(s) {extra} are not in the class list {names}"
        )
    index = {name: i for i, name in enumerate(names)}
    # sorted by name, as make_dataset does, whatever the class order
    listed = walk_folders(os.fspath(spec.root), folders, EXTENSIONS)
    rels = [rel for folder_rels, _ in listed for rel in folder_rels]
    counts = [len(folder_rels) for folder_rels, _ in listed]
    labels = np.repeat(np.array([index[folder] for folder in folders], np.int64), counts)
    stats = np.concatenate([stats for _, stats in listed])
    return SampleColumns(rels, labels), names, stats


def _from_manifest(
    spec: DatasetSpec, explicit: list[str] | None
) -> tuple[SampleColumns, list[str], pa.Table]:
    """The manifest's paths and labels, and its other columns (metadata, as text)."""
    assert spec.csv is not None
    where = f"dataset {spec.name!r}"
    try:
        table = read_text_csv(spec.csv)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DatasetError(f"{where}: cannot read {spec.csv}: {exc}") from None
    if table.num_rows and not {"path", "label"} <= set(table.column_names):
        raise DatasetError(
            f"{where}: {spec.csv} needs the columns path,label; found {table.column_names}"
        )
    if not table.num_rows:
        return SampleColumns([], np.zeros(0, np.int64)), list(explicit or []), table
    label = table.column("label").combine_chunks()
    names = explicit or sorted(pc.unique(label).to_pylist())
    index = pc.index_in(label, value_set=pa.array(names, pa.string()))
    if index.null_count:
        first = int(np.flatnonzero(pc.is_null(index).to_numpy(zero_copy_only=False))[0])
        raise DatasetError(
            f"{where}: {spec.csv.name} line {first + 2}: label {label[first].as_py()!r} is "
            f"not in the class list {names}"
        )
    # kept as written (normalised): a path that leaves the root, or is no file, is listed
    # and skipped with its reason when read, like any other unreadable file
    paths = normalised_paths(table.column("path"), os.fspath(spec.root))
    labels = index.to_numpy(zero_copy_only=False).astype(np.int64)
    return SampleColumns(paths, labels), names, table.drop_columns(["path", "label"])

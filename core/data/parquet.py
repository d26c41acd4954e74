"""Image test sets stored as tables: Parquet files and ``save_to_disk`` folders, as Hugging Face
``datasets`` writes them.

The image column is a struct ``{bytes, path}`` (or plain binary); the label column holds class
indices, named by the ``ClassLabel`` in the schema's ``huggingface`` metadata, or class names as
strings. An image is named ``<file>#<row>``, its file relative to the dataset root (the folder
holding the tables). Nothing is copied into a cache and no file is decoded whole: opening reads
each file's footer and its label column; an image is read with its row group (a record batch of
a memory-mapped Arrow file), a few of which are kept in memory, and decoded alone, through the
same decoders and ``max_pixels`` check as image files. The ``datasets`` library is not needed.

A dataset's fingerprint hashes each file's size, modification time and row count and the labels,
not the image bytes: reopening stored results of a million rows reads no image. The split's
other columns of plain types (numbers, text, booleans, dates) are its metadata
(:mod:`core.data.metadata`), read with the labels.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.config import DEFAULT_MAX_PIXELS, DatasetSpec
from core.data.image_dataset import ImageDataset, SampleColumns
from core.errors import DatasetError, ImageRefusedError

if TYPE_CHECKING:
    import torch

__all__ = ["TableDataset", "TableFile", "TableReader", "open_table_dataset"]

#: Row groups (record batches) kept in memory per reader, and at most this many bytes of them.
CACHED_GROUPS = 8
CACHED_BYTES = 256 * 2**20


@dataclass(frozen=True)
class TableFile:
    """One Parquet or Arrow file of a dataset, as listed."""

    path: str  # absolute
    rel: str  # relative to the dataset root: its images are named "<rel>#<row>"
    size: int
    mtime_ns: int
    starts: np.ndarray  # first row of each row group (record batch), then the row count

    @property
    def rows(self) -> int:
        return int(self.starts[-1])


class TableReader:
    """Reads single images out of table files, a row group at a time (picklable: the open files
    and cached groups stay in the process that made them)."""

    def __init__(
        self,
        files: Sequence[TableFile],
        image_column: str,
        arrow: bool,
        allowed: Sequence[str],
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.files = tuple(files)
        self.image_column = image_column
        self.arrow = arrow
        self.allowed = tuple(
            allowed
        )  # real folders (with a trailing separator) path-only cells may use
        self.max_pixels = max_pixels
        self._index = {f.rel: i for i, f in enumerate(self.files)}
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._handles: dict[int, Any] = {}  # file index -> ParquetFile or memory-mapped Table
        self._groups: OrderedDict[tuple[int, int], tuple[pa.Array, pa.Array | None, int]] = (
            OrderedDict()
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for name in ("_lock", "_handles", "_groups", "_pid"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    def locate(self, rel: str) -> tuple[int, int]:
        """(file index, row) of image ``rel``; :class:`ImageRefusedError` if it is not listed."""
        name, _, row = rel.rpartition("#")
        index = self._index.get(name)
        if index is None or not row.isdigit() or int(row) >= self.files[index].rows:
            raise ImageRefusedError(f"{rel!r} is not an image of this dataset")
        return index, int(row)

    def cell(self, rel: str) -> tuple[bytes | None, str | None]:
        """The image cell of ``rel``: its encoded bytes and its embedded path (either may be
        None)."""
        index, row = self.locate(rel)
        file = self.files[index]
        group = int(np.searchsorted(file.starts, row, side="right")) - 1
        images, paths, _ = self._group(index, group)
        at = row - int(file.starts[group])
        data = images[at].as_py()
        path = paths[at].as_py() if paths is not None else None
        return data, path

    def load_array(self, rel: str, channels: int = 3) -> np.ndarray:
        """Image ``rel`` as a uint8 array [H, W, C], by the rules of image files."""
        from core.data import images

        data, path = self.cell(rel)
        if data is not None:
            return images.decode_array(data, channels, self.max_pixels)
        if not path:
            raise ImageRefusedError("the image cell is empty (no bytes, no path)")
        return images.load_array(self._referenced(rel, path), channels, self.max_pixels)

    def origin(self, rel: str) -> str | None:
        """The path embedded in image ``rel``'s cell (where it came from), if any."""
        return self.cell(rel)[1] or None

    def _referenced(self, rel: str, path: str) -> str:
        """A cell that names a file instead of holding its bytes: that file, if it is a regular
        file under the dataset root or its link_roots (relative paths: from the table's folder)."""
        folder = os.path.dirname(self.files[self.locate(rel)[0]].path)
        real = os.path.realpath(os.path.join(folder, path))
        if not real.startswith(self.allowed):
            raise ImageRefusedError(
                f"its cell names a file outside the dataset root and its link_roots: {real}"
            )
        try:
            info = os.stat(real)
        except OSError as exc:
            raise ImageRefusedError(
                f"its cell names {path}, which cannot be read: {exc.strerror or exc}"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise ImageRefusedError(f"its cell names {path}, which is not a regular file")
        return real

    def _group(self, index: int, group: int) -> tuple[pa.Array, pa.Array | None, int]:
        if self._pid != os.getpid():  # a forked loader process: open the files afresh
            self._reset()
        key = (index, group)
        with self._lock:
            found = self._groups.get(key)
            if found is not None:
                self._groups.move_to_end(key)
                return found
            column = self._read_group(index, group)
            found = _cells(column, self.image_column)
            self._groups[key] = found
            while len(self._groups) > 1 and (
                len(self._groups) > CACHED_GROUPS
                or sum(n for _, _, n in self._groups.values()) > CACHED_BYTES
            ):
                self._groups.popitem(last=False)
            return found

    def _read_group(self, index: int, group: int) -> pa.Array | pa.ChunkedArray:
        file = self.files[index]
        try:  # one stat per row group read: a file changed since listed is never misread
            info = os.stat(file.path)
        except OSError as exc:
            raise ImageRefusedError(f"{file.rel} cannot be read: {exc.strerror or exc}") from None
        if (info.st_size, info.st_mtime_ns) != (file.size, file.mtime_ns):
            self._handles.pop(index, None)
            raise ImageRefusedError(f"{file.rel} changed since it was listed")
        handle = self._handles.get(index)
        if handle is None:
            handle = _memory_mapped(file.path) if self.arrow else pq.ParquetFile(file.path)
            self._handles[index] = handle
        if self.arrow:
            return handle.column(self.image_column).chunk(group)
        # one column chunk, read on this thread: no Arrow thread pool beside the model's threads
        columns = [self.image_column]
        return handle.read_row_group(group, columns=columns, use_threads=False).column(0)


def _cells(column: pa.Array | pa.ChunkedArray, name: str) -> tuple[pa.Array, pa.Array | None, int]:
    """(bytes, path or None, size in bytes) of an image column: a struct {bytes, path} or binary."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_struct(column.type):
        names = [column.type.field(i).name for i in range(column.type.num_fields)]
        if "bytes" not in names:
            raise ImageRefusedError(f"column {name!r} is a struct without a 'bytes' field")
        fields = dict(zip(names, column.flatten(), strict=True))  # a null cell: null fields
        return fields["bytes"], fields.get("path"), column.nbytes
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        return column, None, column.nbytes
    raise ImageRefusedError(f"column {name!r} holds {column.type}, not encoded images")


def _memory_mapped(path: str) -> pa.Table:
    """An Arrow IPC file (``datasets`` writes the stream format) as a table over a memory map:
    nothing is read until a cell is."""
    source = pa.memory_map(path)
    try:
        return pa.ipc.open_stream(source).read_all()
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source).read_all()


class TableDataset(ImageDataset):
    """An :class:`ImageDataset` whose images are rows of table files (see the module).

    ``paths`` are ``<file>#<row>``; every read goes through :class:`TableReader`.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        reader: TableReader,
        samples: Sequence[tuple[str, int]] | SampleColumns,
        classes: Sequence[str],
        transform: Callable[[Any], torch.Tensor] | None = None,
        channels: int = 3,
        tensors: bool = False,
        link_roots: Sequence[Path] = (),
        metadata: Sequence[tuple[pa.Table, np.ndarray | None]] = (),
        metadata_source: str = "",
    ) -> None:
        super().__init__(
            name,
            root,
            samples,
            classes,
            transform,
            channels,
            tensors,
            link_roots,
            reader.max_pixels,
            metadata=metadata,
            metadata_source=metadata_source,
        )
        self.reader = reader

    def encoded(self, index: int) -> tuple[float, int]:
        """The image cell's size in bytes and format (from its first bytes); a cell that names
        a file instead: NaN and the format of its name."""
        from core.data.properties import format_of_bytes, format_of_name

        data, path = self.reader.cell(self.paths[index])
        if data is None:
            return float("nan"), format_of_name(path or "")
        return float(len(data)), format_of_bytes(data[:16])

    def with_transform(
        self,
        transform: Callable[[Any], torch.Tensor],
        channels: int,
        tensors: bool = False,
        properties: bool = False,
    ) -> TableDataset:
        dataset = TableDataset(
            self.name,
            self.root,
            self.reader,
            SampleColumns(self.paths, self.labels),
            self.classes,
            transform,
            channels,
            tensors,
            self.link_roots,
        )
        dataset.measure = properties
        return dataset

    def load_array(self, rel: str, channels: int | None = None) -> np.ndarray:
        return self.reader.load_array(rel, channels or self.channels)

    def path(self, rel: str) -> Path:
        """The table file holding image ``rel``."""
        return Path(self.reader.files[self.reader.locate(rel)[0]].path)

    def display_name(self, rel: str) -> str:
        """``rel``, with the path embedded in its cell when there is one."""
        try:
            origin = self.reader.origin(rel)
        except Exception:  # shown with its reason where the image is drawn
            origin = None
        return f"{rel} ({origin})" if origin else rel

    @property
    def stats(self) -> np.ndarray:
        """Each image's [size, mtime in ns]: those of its file, as listed."""
        files = self.reader.files
        per_file = np.array([[f.size, f.mtime_ns] for f in files], dtype=np.int64).reshape(-1, 2)
        return np.repeat(per_file, [f.rows for f in files], axis=0)

    def fingerprint(self) -> str:
        """A hash of the read limits, the class list, the columns, each file's name, size,
        modification time and row groups, and every label (no image is read)."""
        reader = self.reader
        files = [(f.rel, f.size, f.mtime_ns, f.starts.tolist()) for f in reader.files]
        limits = (
            "table",
            self.classes,
            [os.fspath(p) for p in self.link_roots],
            reader.max_pixels,
            reader.image_column,
            reader.arrow,
            files,
        )
        digest = hashlib.sha256(repr(limits).encode())
        digest.update(self.labels.astype(np.int64, copy=False).tobytes())
        return digest.hexdigest()


def open_table_dataset(spec: DatasetSpec, explicit: list[str] | None) -> TableDataset:
    """List the rows of a ``parquet`` or ``arrow`` dataset entry (see the module).

    Class order is ``explicit`` (the config's or the model's list), else the ClassLabel names,
    else sorted label strings (or the indices, as text, of an integer column without names).
    """
    where = f"dataset {spec.name!r}"
    arrow = spec.arrow is not None
    paths = _arrow_files(spec, where) if arrow else _parquet_files(spec, where)
    root = os.path.commonpath([os.path.dirname(p) for p in paths])
    files, columns, names, extras = [], [], None, []
    for path in paths:
        file, labels, file_names, extra = _list_file(path, root, spec, arrow, where)
        extras.append(extra)
        if file_names is not None and names is not None and file_names != names:
            raise DatasetError(
                f"{where}: {file.rel} names its classes {file_names}, another file {names}"
            )
        names = names or file_names
        files.append(file)
        columns.append(labels)
    if arrow and names is None:
        names = _info_names(Path(root), spec.label_column)
    chunks = [chunk for column in columns for chunk in column.chunks]  # one per row group
    label_type = columns[0].type if columns else pa.int64()
    classes, labels = _labels(pa.chunked_array(chunks, label_type), names, explicit, where)
    if not len(labels):
        raise DatasetError(f"{where} has no rows in {', '.join(f.rel for f in files)}")
    folders = [root, *(os.fspath(p) for p in spec.link_roots)]
    allowed = [os.path.join(os.path.realpath(p), "") for p in folders]
    reader = TableReader(files, spec.image_column, arrow, allowed, spec.max_pixels)
    rels = [f"{f.rel}#{row}" for f in files for row in range(f.rows)]
    metadata = _metadata(extras)
    source = ";".join(f"{f.rel}:{f.size}:{f.mtime_ns}" for f in files)
    return TableDataset(
        spec.name,
        Path(root),
        reader,
        SampleColumns(rels, labels),
        classes,
        link_roots=spec.link_roots,
        metadata=[(metadata, None)] if metadata is not None else (),
        metadata_source=f"{source};{metadata.column_names if metadata else []}",
    )


def _metadata(extras: list[pa.Table]) -> pa.Table | None:
    """The files' metadata columns as one table (a column one file lacks is null there);
    None when there are none, or when files give one column types that do not combine."""
    if not extras or not any(t.num_columns for t in extras):
        return None
    try:
        return pa.concat_tables(extras, promote_options="permissive").combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _metadata_names(schema: pa.Schema, spec: DatasetSpec) -> list[str]:
    """The columns besides image and label whose type can be metadata (numbers, text,
    booleans, dates and times, dictionaries of those)."""
    plain = (
        pa.types.is_integer,
        pa.types.is_floating,
        pa.types.is_decimal,
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_boolean,
        pa.types.is_timestamp,
        pa.types.is_date,
        pa.types.is_dictionary,
    )
    skip = {spec.image_column, spec.label_column}
    return [
        field.name
        for field in schema
        if field.name not in skip and any(test(field.type) for test in plain)
    ]


def _parquet_files(spec: DatasetSpec, where: str) -> list[str]:
    found: list[str] = []
    for pattern in spec.parquet:
        matches = sorted(glob.glob(pattern, recursive=True))
        if not matches:
            raise DatasetError(f"{where}: no file matches {pattern}")
        found.extend(os.path.abspath(m) for m in matches if os.path.abspath(m) not in found)
    return found


def _arrow_files(spec: DatasetSpec, where: str) -> list[str]:
    """The data files of a ``save_to_disk`` folder: as its state.json lists them, else
    ``data-*.arrow``."""
    assert spec.arrow is not None
    folder = spec.arrow
    if not folder.is_dir():
        raise DatasetError(f"{where}: folder not found: {folder}")
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        names = [str(entry["filename"]) for entry in state["_data_files"]]
    except FileNotFoundError:
        names = sorted(p.name for p in folder.glob("data-*.arrow"))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DatasetError(f"{where}: cannot read {folder / 'state.json'}: {exc}") from None
    if not names:
        raise DatasetError(
            f"{where}: {folder} holds no data-*.arrow file (expected a folder written by "
            "datasets' save_to_disk)"
        )
    return [os.fspath(folder / name) for name in names]


def _list_file(
    path: str, root: str, spec: DatasetSpec, arrow: bool, where: str
) -> tuple[TableFile, pa.ChunkedArray, list[str] | None, pa.Table]:
    """One file's listing, its label column, its ClassLabel names (None if it has none) and
    its metadata columns."""
    rel = Path(os.path.relpath(path, root)).as_posix()
    try:
        info = os.stat(path)
        if arrow:
            table = _memory_mapped(path)
            schema = table.schema
            starts = np.cumsum([0, *(len(c) for c in _first_column(table).chunks)])
        else:
            parquet = pq.ParquetFile(path)
            schema = parquet.schema_arrow
            meta = parquet.metadata
            starts = np.cumsum(
                [0, *(meta.row_group(i).num_rows for i in range(meta.num_row_groups))]
            )
        for column in (spec.image_column, spec.label_column):
            if column not in schema.names:
                raise DatasetError(
                    f"{where}: {rel} has no column {column!r} (columns: {schema.names}); "
                    "set image_column / label_column"
                )
        wanted = [spec.label_column, *_metadata_names(schema, spec)]
        read = table.select(wanted) if arrow else parquet.read(columns=wanted)
    except DatasetError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"{where}: cannot read {rel}: {exc}") from None
    file = TableFile(path, rel, info.st_size, info.st_mtime_ns, starts.astype(np.int64))
    labels, extra = read.column(0), read.drop_columns([spec.label_column])
    return file, labels, _class_names(schema, spec.label_column), extra


def _first_column(table: pa.Table) -> pa.ChunkedArray:
    return table.column(0) if table.num_columns else pa.chunked_array([], pa.null())


def _class_names(schema: pa.Schema, label: str) -> list[str] | None:
    """The ClassLabel names of column ``label`` in the schema's ``huggingface`` metadata."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        features = json.loads(raw)["info"]["features"]
    except (ValueError, KeyError, TypeError):
        return None
    return _feature_names(features, label)


def _feature_names(features: Any, label: str) -> list[str] | None:
    feature = features.get(label) if isinstance(features, dict) else None
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        names = feature.get("names")
        if isinstance(names, list):
            return [str(n) for n in names]
    return None


def _info_names(folder: Path, label: str) -> list[str] | None:
    """ClassLabel names from a save_to_disk folder's dataset_info.json."""
    try:
        info = json.loads((folder / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return _feature_names(info.get("features") if isinstance(info, dict) else None, label)


def _labels(
    column: pa.ChunkedArray, names: list[str] | None, explicit: list[str] | None, where: str
) -> tuple[list[str], np.ndarray]:
    """The class list and each row's class index (vectorised: no Python object per row)."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if column.null_count:
        raise DatasetError(f"{where}: {column.null_count:,} row(s) have no label")
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        classes = explicit or sorted(pc.unique(column).to_pylist())
        index = pc.index_in(column, value_set=pa.array(classes, column.type))
        if index.null_count:
            unknown = sorted(set(pc.unique(column).to_pylist()) - set(classes))
            raise DatasetError(
                f"{where}: label(s) {unknown[:10]} are not in the class list {classes}"
            )
        return classes, index.to_numpy().astype(np.int64)
    if not pa.types.is_integer(column.type):
        raise DatasetError(f"{where}: the label column holds {column.type}, not classes")
    values = column.to_numpy().astype(np.int64)
    if len(values) and values.min() < 0:
        raise DatasetError(
            f"{where}: {int((values < 0).sum()):,} row(s) have no label ({int(values.min())})"
        )
    top = int(values.max()) if len(values) else -1
    if names is None:
        classes = explicit or [str(i) for i in range(top + 1)]
        if top >= len(classes):
            raise DatasetError(f"{where}: label {top} is past the class list {classes}")
        return classes, values
    if top >= len(names):
        raise DatasetError(f"{where}: label {top} is past its ClassLabel names {names}")
    if explicit is None or explicit == names:
        return names, values
    order = {name: i for i, name in enumerate(explicit)}
    lookup = np.array([order.get(name, -1) for name in names], dtype=np.int64)
    mapped = lookup[values]
    if (mapped < 0).any():
        missing = sorted({names[v] for v in np.unique(values[mapped < 0])})
        raise DatasetError(f"{where}: class(es) {missing} are not in the class list {explicit}")
    return explicit, mapped

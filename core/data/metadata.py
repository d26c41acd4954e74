"""Metadata columns: a test set's own attributes (site, scanner, date, annotator...), typed once.

Every column of a CSV manifest or a Parquet split besides the image (or path) and the label is
a metadata column; so is every column of an ImageFolder's ``metadata`` CSV besides ``path``.
Each becomes a :class:`Column` of one of three kinds, held as one NumPy array:

- ``categorical``: int32 codes into a sorted category list; -1 is missing;
- ``numeric``: float64; NaN is missing;
- ``timestamp``: numeric, in seconds since 1970-01-01 UTC (times without a zone are read as
  UTC), shown and binned as dates.

Typing, per column and vectorised (no Python object per row): Arrow numbers are numeric,
booleans categorical (``false``, ``true``), dates and times timestamps. In text, blank cells
are missing; a column where at least :data:`NUMERIC_SHARE` of the other cells read as numbers
is numeric (the rest, text in a numeric column, become missing, never an error); else one
where that share reads as ISO 8601 dates or times is a timestamp; else it is categorical.
Binary, list and struct columns are left out.

A :class:`ColumnSet` is stored as a folder (:func:`write_column_set`): ``columns.json``
(``format`` ``cam-columns/1``, ``rows``, ``source``, and per column ``name``, ``kind``,
``file`` and, when categorical, ``categories``) and one ``.npy`` file per column.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "KINDS",
    "MISSING",
    "NUMERIC_SHARE",
    "Column",
    "ColumnSet",
    "match_paths",
    "normalised_paths",
    "read_column_set",
    "read_text_csv",
    "typed_column",
    "typed_columns",
    "write_column_set",
]

KINDS = ("categorical", "numeric", "timestamp")
MISSING = "(missing)"  # how a missing value is written (table rows, slice conditions)
NUMERIC_SHARE = 0.95  # share of a text column's non-blank cells that must read as numbers
FORMAT = "cam-columns/1"
_SAMPLE = 2_000  # cells tried first: a column of names is not parsed whole as numbers
_UNUSUAL_PATH = r"(^/|^\./|/\./|//|\.\.|\\|/$)"  # paths that need os.path.normpath


@dataclass(frozen=True, eq=False)
class Column:
    """One typed column: ``values`` are int32 codes into ``categories`` (-1 missing) for a
    categorical column, float64 (NaN missing) otherwise."""

    name: str
    kind: str
    values: np.ndarray
    categories: tuple[str, ...] = ()

    @property
    def numeric(self) -> bool:
        """Numeric or timestamp (binned by value), as opposed to categorical."""
        return self.kind != "categorical"

    def missing(self) -> np.ndarray:
        """bool [rows]: where the value is missing."""
        return np.isnan(self.values) if self.numeric else self.values < 0

    def take(self, rows: np.ndarray) -> Column:
        """The column at ``rows`` (-1 in ``rows``: a missing value)."""
        rows = np.asarray(rows, dtype=np.int64)
        values = np.asarray(self.values)[np.maximum(rows, 0)]
        if (rows < 0).any():
            values = values.copy()
            values[rows < 0] = np.nan if self.numeric else -1
        return Column(self.name, self.kind, values, self.categories)

    def renamed(self, name: str) -> Column:
        return Column(name, self.kind, self.values, self.categories)

    def to_arrow(self, start: int = 0, stop: int | None = None) -> pa.Array:
        """Rows ``start:stop`` as Arrow: text (categorical), float64 or a UTC timestamp in
        seconds (timestamp); nulls where missing."""
        values = np.asarray(self.values[start:stop])
        if not self.numeric:
            names = np.array([*self.categories, ""], dtype=object)  # code -1 -> the last
            return pa.array(names[values], pa.string(), mask=values < 0)
        missing = np.isnan(values)
        if self.kind == "timestamp":
            seconds = np.where(missing, 0, np.round(values)).astype(np.int64)
            return pa.array(seconds, pa.timestamp("s", tz="UTC"), mask=missing)
        return pa.array(values, pa.float64(), mask=missing)


class ColumnSet:
    """Typed columns of equal length, in order, by name (``rows`` rows even when empty).

    ``source`` says where the values came from (files and their stamps): two sets with the
    same non-empty source hold the same values, so results computed from one hold for both.
    """

    def __init__(
        self, columns: Sequence[Column] = (), rows: int | None = None, source: str = ""
    ) -> None:
        self.source = source
        self._columns = {c.name: c for c in columns}
        if len(self._columns) != len(columns):
            raise ValueError(f"duplicate column names in {[c.name for c in columns]}")
        lengths = {len(c.values) for c in columns}
        if len(lengths) > 1 or (rows is not None and lengths - {rows}):
            raise ValueError(f"columns of {sorted(lengths)} rows (expected {rows})")
        self.rows = rows if rows is not None else (lengths.pop() if lengths else 0)

    def __len__(self) -> int:
        return len(self._columns)

    def __iter__(self) -> Iterator[Column]:
        return iter(self._columns.values())

    def __contains__(self, name: object) -> bool:
        return name in self._columns

    def __getitem__(self, name: str) -> Column:
        return self._columns[name]

    @property
    def names(self) -> list[str]:
        return list(self._columns)

    def take(self, rows: np.ndarray) -> ColumnSet:
        """Every column at ``rows`` (-1: missing values)."""
        return ColumnSet([c.take(rows) for c in self], len(rows), self.source)

    def merged(self, other: ColumnSet, suffix: str = "_meta") -> ColumnSet:
        """These columns then ``other``'s; a name of ``self`` that ``other`` also uses gets
        ``suffix`` (``other``'s names are the fixed ones, e.g. image properties)."""
        if other.rows != self.rows and len(self) and len(other):
            raise ValueError(f"{self.rows} rows merged with {other.rows}")
        taken = set(other.names)
        mine = []
        for column in self:
            name = column.name
            while name in taken:
                name += suffix
            taken.add(name)
            mine.append(column.renamed(name))
        rows = self.rows if len(self) else other.rows
        return ColumnSet([*mine, *other], rows, f"{self.source}|{other.source}")


def typed_columns(table: pa.Table) -> ColumnSet:
    """Every column of ``table`` that can be typed (see the module), in order."""
    found = (typed_column(name, table.column(name)) for name in table.column_names)
    return ColumnSet([c for c in found if c is not None], table.num_rows)


def typed_column(name: str, data: pa.Array | pa.ChunkedArray) -> Column | None:
    """``data`` as a categorical, numeric or timestamp column; None for binary, list and
    struct columns."""
    array = data.combine_chunks() if isinstance(data, pa.ChunkedArray) else data
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return Column(name, "numeric", _floats(pc.cast(array, pa.float64())))
    if pa.types.is_boolean(kind):
        codes = pc.cast(array, pa.int32()).fill_null(-1).to_numpy(zero_copy_only=False)
        return Column(name, "categorical", codes.astype(np.int32), ("false", "true"))
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        return Column(name, "timestamp", _seconds(array))
    if pa.types.is_null(kind):
        return Column(name, "categorical", np.full(len(array), -1, np.int32))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _typed_text(name, array)
    return None


def _floats(array: pa.Array) -> np.ndarray:
    values = np.asarray(array.to_numpy(zero_copy_only=False), dtype=np.float64)
    return np.where(np.isfinite(values), values, np.nan)


def _seconds(array: pa.Array) -> np.ndarray:
    """Seconds since the epoch (UTC) of a date or timestamp array, NaN where null."""
    if pa.types.is_date(array.type):
        array = pc.cast(pc.cast(array, pa.date32()), pa.timestamp("s"))
    unit = array.type.unit
    scale = {"s": 1.0, "ms": 1e3, "us": 1e6, "ns": 1e9}[unit]
    raw = pc.cast(array.cast(pa.timestamp(unit)), pa.int64())  # the zone's UTC instants
    return _floats(pc.cast(raw, pa.float64())) / scale


def _typed_text(name: str, array: pa.Array) -> Column:
    text = pc.utf8_trim_whitespace(array)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)  # blank: missing
    present = len(text) - text.null_count
    if present:
        sample = pc.drop_null(text).slice(0, _SAMPLE)
        if _share(_numbers(sample), len(sample)) >= NUMERIC_SHARE:
            values = _numbers(text)
            if _share(values, present) >= NUMERIC_SHARE:
                return Column(name, "numeric", values)
        if _share(_times(sample), len(sample)) >= NUMERIC_SHARE:
            values = _times(text)
            if _share(values, present) >= NUMERIC_SHARE:
                return Column(name, "timestamp", values)
    return _categorical(name, text)


def _share(values: np.ndarray, present: int) -> float:
    return float(np.count_nonzero(~np.isnan(values))) / max(present, 1)


def _numbers(text: pa.Array) -> np.ndarray:
    """Each cell as a number, NaN where it is missing or not a number."""
    try:
        return _floats(pc.cast(text, pa.float64()))  # Arrow's parser: fast, all or nothing
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        import pandas as pd

        cells = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
        return _floats(pa.array(pd.to_numeric(cells, errors="coerce"), pa.float64()))


def _times(text: pa.Array) -> np.ndarray:
    """Each cell as ISO 8601 seconds since the epoch (UTC), NaN where it is not one."""
    import pandas as pd

    cells = pd.Series(text.to_numpy(zero_copy_only=False), dtype=object)
    stamps = pd.to_datetime(cells, errors="coerce", utc=True, format="ISO8601")
    seconds = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
    return np.asarray(seconds, dtype=np.float64)


def _categorical(name: str, text: pa.Array) -> Column:
    encoded = pc.dictionary_encode(text)
    names = [str(v) for v in encoded.dictionary.to_pylist()]
    order = np.argsort(np.array(names, dtype=object), kind="stable")
    rank = np.empty(len(names), np.int32)
    rank[order] = np.arange(len(names), dtype=np.int32)
    index = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    codes = np.where(index >= 0, rank[np.maximum(index, 0)] if len(rank) else -1, -1)
    return Column(name, "categorical", codes.astype(np.int32), tuple(names[i] for i in order))


# ------------------------------------------------------------------------------ reading CSV


def read_text_csv(path: Path) -> pa.Table:
    """A CSV file with a header, every column as text (blank cells as ""); raises OSError or
    ValueError (pyarrow's ArrowInvalid) naming the problem."""
    import pyarrow.csv as pa_csv

    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    if len(set(header)) != len(header):
        raise ValueError(f"repeated column names in the header {header}")
    convert = pa_csv.ConvertOptions(
        column_types=dict.fromkeys(header, pa.string()),
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    return pa_csv.read_csv(path, convert_options=convert)


def normalised_paths(paths: pa.Array | pa.ChunkedArray, root: str) -> list[str]:
    """Paths relative to ``root`` as a manifest lists them: normalised, with ``/``. Most
    paths already are; only the others pass through ``os.path`` one by one."""
    if isinstance(paths, pa.ChunkedArray):
        paths = paths.combine_chunks()
    out = [p or "" for p in paths.to_pylist()]
    unusual = pc.match_substring_regex(pc.fill_null(paths, ""), _UNUSUAL_PATH)
    blank = pc.equal(pc.fill_null(paths, ""), "")
    for i in np.flatnonzero(pc.or_(unusual, blank).to_numpy(zero_copy_only=False)):
        joined = os.path.normpath(os.path.join(root, out[i]))
        out[i] = Path(os.path.relpath(joined, root)).as_posix()
    return out


def match_paths(column: pa.Array | pa.ChunkedArray, paths: Sequence[str], root: str) -> np.ndarray:
    """For each of ``paths``, the row of ``column`` (paths, normalised) that names it (the
    first of a repeated one), -1 where none does."""
    theirs = pa.array(normalised_paths(column, root), pa.string())
    index = pc.index_in(pa.array(paths, pa.string()), value_set=theirs)
    return np.asarray(index.fill_null(-1).to_numpy(zero_copy_only=False), np.int64)


# ------------------------------------------------------------------------------ storage


def write_column_set(folder: Path, columns: ColumnSet, source: str = "") -> None:
    """Store ``columns`` in ``folder`` (replaced whole: a reader sees the old set or the new
    one); raises OSError."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        entries = []
        for i, column in enumerate(columns):
            entry: dict[str, object] = {"name": column.name, "kind": column.kind}
            entry["file"] = f"c{i:03d}.npy"
            if not column.numeric:
                entry["categories"] = list(column.categories)
            dtype = np.float64 if column.numeric else np.int32
            np.save(tmp / str(entry["file"]), np.asarray(column.values, dtype=dtype))
            entries.append(entry)
        header = {"format": FORMAT, "rows": columns.rows, "source": source, "columns": entries}
        (tmp / "columns.json").write_text(json.dumps(header), encoding="utf-8")
        _swap_in(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _swap_in(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``, moving an existing ``folder`` aside first."""
    old = None
    if folder.exists():
        old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.old."))
        os.replace(folder, old / folder.name)
    try:
        os.replace(tmp, folder)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def read_column_set(folder: Path) -> tuple[ColumnSet, str] | None:
    """The column set stored in ``folder`` and its ``source``; None when there is none or it
    is damaged (memory-mapped: nothing is read until a value is)."""
    try:
        header = json.loads((folder / "columns.json").read_text(encoding="utf-8"))
        if header.get("format") != FORMAT:
            return None
        rows = int(header["rows"])
        found = []
        for entry in header["columns"]:
            kind = str(entry["kind"])
            if kind not in KINDS or not re.fullmatch(r"c\d+\.npy", str(entry["file"])):
                return None
            values = np.load(folder / str(entry["file"]), mmap_mode="r")
            categories = tuple(str(c) for c in entry.get("categories", ()))
            found.append(Column(str(entry["name"]), kind, values, categories))
        source = str(header.get("source", ""))
        return ColumnSet(found, rows, source), source
    except (OSError, ValueError, KeyError, TypeError):
        return None

"""Slices of a test set: conditions on its columns, their URL form, and the slice table.

A :class:`Slice` is one or more conditions, each ``column = value`` or ``column in [lo, hi)``,
over the typed columns of a result (:func:`core.analysis.slice_columns.result_columns`:
metadata, image properties, embedding cluster, true class). Its URL form (``where=`` on every
page) writes a condition as ``column:value`` and joins several with ``;``::

    site:B                      a category (or a number: width:64)
    brightness:0.1..0.3         0.1 <= brightness < 0.3
    brightness:..0.1            brightness < 0.1;  sharpness:250.. is sharpness >= 250
    captured:2024-03-01..2024-04-01   a timestamp column's range, in ISO 8601 (UTC)
    site:(missing)              the rows where the value is missing
    site:B;brightness:0.1..0.3  both

A ``\\`` escapes the next character (``;`` in a value, ``:`` in a column name).

:func:`slice_table` gives, for every column, one row per value (categorical, or a numeric
column of at most :data:`FEW_VALUES` distinct values) or per quantile bin (numeric, edges
rounded to few digits): images, errors, accuracy with its Wilson interval, and a flag where the
interval lies wholly below the overall accuracy. Columns come in the order of how much accuracy
varies across their values. Everything is vectorised: one ``bincount`` per column.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from core.data.metadata import MISSING, Column, ColumnSet
from core.errors import UserFacingError

__all__ = [
    "BINS",
    "CONFIDENCE",
    "FEW_VALUES",
    "MAX_VALUES",
    "Bins",
    "Condition",
    "Slice",
    "SliceError",
    "column_bins",
    "slice_table",
    "wilson_interval",
]

BINS = 5  # quantile bins of a numeric column
FEW_VALUES = 10  # a numeric column with at most this many distinct values: a row per value
MAX_VALUES = 50  # a categorical column's largest values that get a row (and can be found)
CONFIDENCE = 0.95
_QUANTILE_SAMPLE = 200_000  # quantile edges from a seeded sample of at most this many values
_TIME_UNITS = (86_400.0, 3_600.0, 60.0, 1.0)  # a day, an hour, a minute, a second
_TABLE_COLUMNS = [
    "column", "kind", "value", "label", "param", "images", "errors", "accuracy",
    "ci_low", "ci_high", "below", "spread",
]  # fmt: skip


class SliceError(UserFacingError):
    """A slice that cannot be read or does not fit the columns (the message says why)."""


@dataclass(frozen=True)
class Condition:
    """``column = value``, or ``column in [lo, hi)`` when ``value`` is ``lo..hi`` (either side
    may be empty: no bound); ``value`` is :data:`~core.data.metadata.MISSING` for rows
    without a value."""

    column: str
    value: str

    @property
    def is_range(self) -> bool:
        return ".." in self.value and self.value != MISSING

    def to_param(self) -> str:
        return f"{_escape(self.column, ':;')}:{_escape(self.value, ';')}"

    def label(self) -> str:
        """How a chip reads: ``site = B``, ``brightness 0.1 – 0.3``, ``width < 64``."""
        if not self.is_range:
            return f"{self.column} = {self.value}"
        lo, _, hi = self.value.partition("..")
        if not lo:
            return f"{self.column} < {hi}"
        return f"{self.column} ≥ {lo}" if not hi else f"{self.column} {lo} – {hi}"

    def bounds(self, column: Column) -> tuple[float, float]:
        """[lo, hi) of a range condition on a numeric ``column`` (±inf where open)."""
        lo, _, hi = self.value.partition("..")
        low = _number(lo, column) if lo else -math.inf
        high = _number(hi, column) if hi else math.inf
        return low, high

    def mask(self, column: Column) -> np.ndarray:
        """bool [rows]: the rows of ``column`` that meet the condition; :class:`SliceError`
        when the value does not fit the column."""
        values = np.asarray(column.values)
        if self.value == MISSING:
            return column.missing()
        if not column.numeric:
            if self.value not in column.categories:
                shown = ", ".join(column.categories[:12])
                more = " ..." if len(column.categories) > 12 else ""
                raise SliceError(f"{column.name} has no value {self.value!r} ({shown}{more})")
            return values == column.categories.index(self.value)
        if self.is_range:
            low, high = self.bounds(column)
            return (values >= low) & (values < high)
        return values == _number(self.value, column)

    def to_json(self, column: Column | None = None) -> object:
        """The value as JSON: a category, a number, ``[lo, hi]`` (null where open; dates as
        text) or null for the missing value."""
        if self.value == MISSING:
            return None
        if column is not None and not column.numeric:
            return self.value  # a category, even one with ".." in it
        if self.is_range:
            lo, _, hi = self.value.partition("..")
            return [_json_number(lo, column), _json_number(hi, column)]
        if column is not None:
            return _json_number(self.value, column)
        return self.value


@dataclass(frozen=True)
class Slice:
    """Rows meeting every one of ``conditions`` (at most one per column)."""

    conditions: tuple[Condition, ...]

    @classmethod
    def parse(cls, text: str) -> Slice:
        """A slice from its URL form (see the module); :class:`SliceError` says what is wrong."""
        parts = [p for p in _split(text.strip(), ";") if p.strip()]
        if not parts:
            raise SliceError("an empty slice: give column:value, e.g. site:B")
        conditions = []
        for part in parts:
            pieces = _split(part, ":", 1)
            if len(pieces) != 2 or not pieces[0].strip() or not pieces[1].strip():
                raise SliceError(
                    f"{part!r} is not column:value (e.g. site:B or brightness:0.1..0.3)"
                )
            column, value = (_unescape(p.strip()) for p in pieces)
            if value.count("..") > 1 or value.strip() == "..":
                raise SliceError(f"{part!r}: a range is lo..hi, e.g. brightness:0.1..0.3")
            conditions.append(Condition(column, value))
        columns = [c.column for c in conditions]
        if len(set(columns)) != len(columns):
            raise SliceError(f"{text!r} names a column twice")
        return cls(tuple(conditions))

    @classmethod
    def from_param(cls, text: str | None) -> Slice | None:
        """:meth:`parse`, or None for a missing, empty or malformed parameter."""
        if not text:
            return None
        try:
            return cls.parse(text)
        except SliceError:
            return None

    @classmethod
    def of(cls, **values: object) -> Slice:
        """A slice from keyword conditions: ``Slice.of(site="B", brightness=(0.1, 0.3))``."""
        return cls(tuple(Condition(k, _value_text(v)) for k, v in values.items()))

    def to_param(self) -> str:
        return ";".join(c.to_param() for c in self.conditions)

    def label(self) -> str:
        return " · ".join(c.label() for c in self.conditions)

    def check(self, columns: ColumnSet) -> None:
        """Raise :class:`SliceError` unless every condition fits ``columns``."""
        for condition in self.conditions:
            if condition.column not in columns:
                shown = ", ".join(columns.names)
                raise SliceError(f"no column {condition.column!r} (columns: {shown})")

    def mask(self, columns: ColumnSet) -> np.ndarray:
        """bool [rows of ``columns``]: the rows in the slice (vectorised)."""
        self.check(columns)
        out = np.ones(columns.rows, dtype=bool)
        for condition in self.conditions:
            out &= condition.mask(columns[condition.column])
        return out

    def without(self, column: str) -> Slice | None:
        """This slice without its condition on ``column`` (None when nothing is left)."""
        kept = tuple(c for c in self.conditions if c.column != column)
        return Slice(kept) if kept else None

    def with_condition(self, condition: Condition) -> Slice:
        """This slice with ``condition`` (replacing one on the same column)."""
        kept = tuple(c for c in self.conditions if c.column != condition.column)
        return Slice((*kept, condition))

    def to_json(self, columns: ColumnSet | None = None) -> dict[str, object]:
        """``{"column": value or [lo, hi]}``, as the CLI prints it."""
        return {
            c.column: c.to_json(columns[c.column] if columns and c.column in columns else None)
            for c in self.conditions
        }


def _escape(text: str, special: str) -> str:
    out = text.replace("\\", "\\\\")
    for char in special:
        out = out.replace(char, "\\" + char)
    return out


def _split(text: str, separator: str, limit: int = -1) -> list[str]:
    """``text`` split at unescaped ``separator`` (escapes kept for :func:`_unescape`)."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            current.append(char)
            escaped = True
        elif char == separator and (limit < 0 or len(parts) < limit):
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _number(text: str, column: Column) -> float:
    """A bound or value of a numeric column: a number, or for a timestamp an ISO date/time."""
    try:
        return float(text)
    except ValueError:
        pass
    if column.kind == "timestamp":
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
            return moment.timestamp()
        raise SliceError(f"{column.name}: {text!r} is not a date (e.g. 2024-03-01)")
    raise SliceError(f"{column.name}: {text!r} is not a number")


def _json_number(text: str, column: Column | None) -> object:
    if not text:
        return None
    if column is not None and column.kind == "timestamp":
        return text
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _value_text(value: object) -> str:
    if value is None:
        return MISSING
    if isinstance(value, tuple | list) and len(value) == 2:
        lo, hi = value
        return f"{'' if lo is None else number_text(lo)}..{'' if hi is None else number_text(hi)}"
    return number_text(value) if isinstance(value, int | float) else str(value)


def number_text(value: object) -> str:
    """A number as the shortest text that reads back as the same float (``64``, ``0.1``)."""
    number = float(value)  # type: ignore[arg-type]
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


# ------------------------------------------------------------------------------ bins


@dataclass(frozen=True)
class Bins:
    """A column's rows grouped for the table and the finder: ``codes`` [rows] index
    ``values`` (condition values) and ``labels`` (how they read); -1 where a row is in no
    group (a rare category beyond :data:`MAX_VALUES`)."""

    column: Column
    codes: np.ndarray  # int32 [rows]
    values: list[str]
    labels: list[str]

    def condition(self, code: int) -> Condition:
        return Condition(self.column.name, self.values[code])


def column_bins(column: Column, bins: int = BINS, max_values: int = MAX_VALUES) -> Bins:
    """``column``'s values (categorical: its :data:`MAX_VALUES` largest) or quantile bins
    (numeric), then its missing values if any."""
    if column.numeric:
        return _numeric_bins(column, bins)
    return _categorical_bins(column, max_values)


def _categorical_bins(column: Column, max_values: int) -> Bins:
    codes = np.asarray(column.values)
    counts = np.bincount(codes.astype(np.int64) + 1, minlength=len(column.categories) + 1)
    present = np.flatnonzero(counts[1:])
    kept = present[np.argsort(-counts[1:][present], kind="stable")][:max_values]
    kept = np.array(sorted(kept, key=lambda i: _natural(column.categories[i])), np.int64)
    lookup = np.full(len(column.categories) + 1, -1, np.int32)  # old code + 1 -> bin
    lookup[kept + 1] = np.arange(len(kept), dtype=np.int32)
    values = [column.categories[i] for i in kept]
    if counts[0]:
        lookup[0] = len(values)
        values.append(MISSING)
    return Bins(column, lookup[codes.astype(np.int64) + 1], values, list(values))


def _natural(text: str) -> tuple[object, ...]:
    """Sort key reading digit runs as numbers: ``cluster 2`` before ``cluster 10``."""
    return tuple(int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", text))


def _numeric_bins(column: Column, bins: int) -> Bins:
    values = np.asarray(column.values, dtype=np.float64)
    missing = np.isnan(values)
    finite = values[~missing] if missing.any() else values
    rng = np.random.default_rng(0)
    sample = finite if len(finite) <= _QUANTILE_SAMPLE else rng.choice(finite, _QUANTILE_SAMPLE)
    distinct = np.unique(sample)
    if len(distinct) <= FEW_VALUES:
        distinct = np.unique(finite)  # exact (the sample may miss a rare value)
    if len(distinct) <= FEW_VALUES:
        codes = np.searchsorted(distinct, values).astype(np.int32)
        params = [_value_param(v, column) for v in distinct]
        texts = list(params)
    else:
        edges = _readable_edges(sample, bins, column)
        codes = np.searchsorted(edges, values, side="right").astype(np.int32)
        params, texts = _range_texts(edges, column)
    if missing.any():
        codes[missing] = len(params)
        params.append(MISSING)
        texts.append(MISSING)
    return Bins(column, codes, params, texts)


def _readable_edges(sample: np.ndarray, bins: int, column: Column) -> np.ndarray:
    """Inner quantile edges of ``sample``, rounded to as few digits as keep them apart (a
    timestamp: to the day, hour or minute), strictly above the minimum."""
    raw = np.unique(np.quantile(sample, np.linspace(0, 1, bins + 1)[1:-1]))
    low = float(sample.min())
    for digits in range(2, 8):
        edges = np.unique([_round_edge(e, digits, column, sample) for e in raw])
        edges = edges[edges > low]
        if len(edges) >= len(raw[raw > low]):
            return edges
    return raw[raw > low]


def _round_edge(value: float, digits: int, column: Column, sample: np.ndarray) -> float:
    """``value`` to ``digits`` significant digits; a timestamp to a day, hour, minute or
    second (the coarsest that suits the sample's span first, finer with more digits)."""
    if column.kind == "timestamp":
        span = float(sample.max() - sample.min())
        first = 0 if span >= 3 * 86_400 else 1 if span >= 3 * 3_600 else 2
        unit = _TIME_UNITS[min(first + digits - 2, len(_TIME_UNITS) - 1)]
        return float(round(value / unit) * unit)
    return float(f"{value:.{digits}g}")


def _range_texts(edges: np.ndarray, column: Column) -> tuple[list[str], list[str]]:
    """Condition values and labels of the bins ``..e1``, ``e1..e2``, ..., ``ek..``."""
    shown = [_value_param(e, column) for e in edges]
    bounds = ["", *shown, ""]
    params = [f"{lo}..{hi}" for lo, hi in itertools.pairwise(bounds)]
    labels = [Condition(column.name, p).label().removeprefix(column.name + " ") for p in params]
    return params, labels


def _value_param(value: float, column: Column) -> str:
    if column.kind != "timestamp":
        return number_text(value)
    moment = datetime.fromtimestamp(float(value), UTC)
    if moment.second or moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.hour or moment.minute:
        return moment.strftime("%Y-%m-%dT%H:%M")
    return moment.strftime("%Y-%m-%d")


# ------------------------------------------------------------------------------ the table


def wilson_interval(
    successes: np.ndarray | int, n: np.ndarray | int, confidence: float = CONFIDENCE
) -> tuple[np.ndarray, np.ndarray]:
    """The Wilson score interval of ``successes`` of ``n`` (vectorised; the same numbers as
    ``scipy.stats.binomtest(k, n).proportion_ci(confidence, method="wilson")``); NaN where
    ``n`` is 0."""
    from scipy.special import ndtri

    k = np.asarray(successes, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = float(ndtri(0.5 + 0.5 * confidence))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        denom = 2 * (n + z**2)
        center = (2 * n * p + z**2) / denom
        delta = z / denom * np.sqrt(4 * n * p * (1 - p) + z**2)
        low = np.where(k == 0, 0.0, center - delta)
        high = np.where(k == n, 1.0, center + delta)
    empty = n == 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def slice_table(
    columns: ColumnSet,
    true: np.ndarray,
    pred: np.ndarray,
    by: Sequence[str] | None = None,
    bins: int = BINS,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """One row per value or bin of each column of ``by`` (default: every column), rows of
    ``columns`` aligned with ``true`` and ``pred``.

    Columns of the frame: ``column``, ``kind``, ``value`` (the condition's value), ``label``,
    ``param`` (the one-condition slice's URL form), ``images``, ``errors``, ``accuracy``,
    ``ci_low``, ``ci_high`` (Wilson), ``below`` (the interval lies wholly below the overall
    accuracy) and ``spread`` (the size-weighted standard deviation of accuracy across the
    column's values: the column order, largest first). Raises :class:`SliceError` for a
    column that does not exist.
    """
    names = list(by) if by is not None else columns.names
    for name in names:
        if name not in columns:
            raise SliceError(f"no column {name!r} (columns: {', '.join(columns.names)})")
    correct = np.asarray(true) == np.asarray(pred)
    overall = float(correct.mean()) if len(correct) else math.nan
    parts = [
        _column_rows(column_bins(columns[n], bins), correct, overall, confidence) for n in names
    ]
    if not parts:
        return pd.DataFrame({name: [] for name in _TABLE_COLUMNS})
    frame = pd.concat(parts, ignore_index=True)
    order = (
        frame.groupby("column", sort=False)["spread"]
        .first()
        .sort_values(ascending=False, kind="stable")
    )
    rank = {name: i for i, name in enumerate(order.index)}
    frame["_rank"] = frame["column"].map(rank)
    frame = frame.sort_values("_rank", kind="stable").drop(columns="_rank")
    return frame.reset_index(drop=True)


def _column_rows(
    found: Bins, correct: np.ndarray, overall: float, confidence: float
) -> pd.DataFrame:
    size = len(found.values)
    shifted = found.codes.astype(np.int64) + 1  # -1 (in no group) -> 0, dropped
    images = np.bincount(shifted, minlength=size + 1)[1:]
    right = np.bincount(shifted, weights=correct, minlength=size + 1)[1:].round().astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = right / images
    low, high = wilson_interval(right, images, confidence)
    kept = images > 0
    weights = images[kept]
    spread = 0.0
    if weights.sum():
        mean = float(np.average(accuracy[kept], weights=weights))
        spread = float(np.sqrt(np.average((accuracy[kept] - mean) ** 2, weights=weights)))
    name = found.column.name
    return pd.DataFrame(
        {
            "column": name,
            "kind": found.column.kind,
            "value": found.values,
            "label": found.labels,
            "param": [Condition(name, v).to_param() for v in found.values],
            "images": images,
            "errors": images - right,
            "accuracy": accuracy,
            "ci_low": low,
            "ci_high": high,
            "below": high < overall,
            "spread": spread,
        }
    )[kept].reset_index(drop=True)

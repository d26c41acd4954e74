"""The results store: one folder per (model, dataset, inputs), streamed to disk, memory-mapped back.

Layout of a result folder::

    result.json       classes, model, dataset, fingerprint, row count; "complete" once finished
    manifest.arrow    Arrow IPC: path (relative to the dataset root), label - in row order
    pred.npy ...      one NumPy file per column, a row per image of the manifest:
                      pred, runner_up (int32), confidence, true_prob, loss, runner_up_prob
                      (float32),
                      probs (float16 [N, K]), maps (float16 [N, 2, h, w], optional),
                      embeddings (float16 [N, 128], optional: the classifier head's input)
    done.log          committed rows, a line "start stop" per batch (append-only)
    skipped.jsonl     images that could not be read, with the reason

Why this layout: every column is preallocated at its final size and written in place with
``pwrite`` (no memory grows with the set; page cache is not process memory), then read back with
``np.load(mmap_mode="r")`` and Arrow memory maps: opening a million-row result costs a few
milliseconds and no per-row Python object. Probabilities are float16 (2 bytes each: 2 GB at
1M × 1,000) and the per-image scalars the gallery sorts on are exact float32.

Crash safety: a batch's rows are listed in ``done.log`` only after their data is synced to disk,
so after Ctrl-C, an OOM kill or a lost machine a rerun continues from the last committed batch.
``result.json`` says ``"complete": true`` only when every row is done; it is replaced atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from core.errors import UserFacingError

__all__ = [
    "BatchScores",
    "ResultWriter",
    "Results",
    "SkippedFile",
    "StoreError",
    "load_derived",
    "open_results",
    "save_derived",
]

FORMAT = "cam-results/1"
_SCALARS = {
    "pred": np.int32,
    "runner_up": np.int32,
    "confidence": np.float32,
    "runner_up_prob": np.float32,
    "true_prob": np.float32,
    "loss": np.float32,
}


class StoreError(UserFacingError):
    """A result folder is missing, incomplete, damaged or of another format."""


@dataclass(frozen=True)
class BatchScores:
    """Per-image results of one batch, ready for :meth:`ResultWriter.write`."""

    rows: np.ndarray  # int64 [n] dataset indices
    pred: np.ndarray  # int32 [n]
    confidence: np.ndarray  # float32 [n] probability of the predicted class
    true_prob: np.ndarray  # float32 [n]
    loss: np.ndarray  # float32 [n] cross-entropy of the true class
    runner_up: np.ndarray  # int32 [n] second most probable class (the predicted one if K = 1)
    runner_up_prob: np.ndarray  # float32 [n]
    probs: np.ndarray  # float16 [n, K]
    maps: np.ndarray | None = None  # float16 [n, 2, h, w] raw maps (predicted, true/runner-up)
    embeddings: np.ndarray | None = None  # float16 [n, D] (core.explain.embeddings)


@dataclass(frozen=True)
class SkippedFile:
    """A test image that could not be read, and why."""

    path: str
    reason: str


def _atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path.parent} is not a result folder (no result.json)") from None
    except (OSError, ValueError) as exc:
        raise StoreError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise StoreError(f"{path} is not a result of this tool (format {FORMAT})")
    return data


class _Column:
    """A preallocated ``.npy`` file written in place, row blocks at a time."""

    def __init__(self, path: Path, dtype: Any, shape: tuple[int, ...], create: bool) -> None:
        if create:
            np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape).flush()
        self.fd = os.open(path, os.O_RDWR)
        with os.fdopen(os.dup(self.fd), "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found, _, found_dtype = read_header(handle)
            self.offset = handle.tell()
        if tuple(found) != shape or np.dtype(found_dtype) != np.dtype(dtype):
            os.close(self.fd)
            raise StoreError(f"{path} holds {found} {found_dtype}, expected {shape} {dtype}")
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * np.dtype(dtype).itemsize
        self.dtype = np.dtype(dtype)

    def write(self, start: int, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=self.dtype).tobytes()
        os.pwrite(self.fd, data, self.offset + start * self.row_bytes)

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class ResultWriter:
    """Streams an evaluation into a result folder; resumes a folder left half-way.

    ``fingerprint`` identifies the inputs (weights, files, transform): a folder holding another
    fingerprint is started afresh, never mixed. Use as a context manager: leaving it commits what
    was written, also on Ctrl-C.
    """

    def __init__(
        self,
        folder: Path,
        manifest: Sequence[tuple[str, int]],
        classes: Sequence[str],
        fingerprint: str,
        meta: dict[str, str] | None = None,
        map_shape: tuple[int, int] | None = None,
        commit_seconds: float = 2.0,
        durable: bool = True,
        embedding_dim: int | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.n, self.k = len(manifest), len(classes)
        self.map_shape = map_shape
        self.embedding_dim = embedding_dim  # None: no embeddings column
        self.commit_seconds = commit_seconds
        self.durable = durable  # False: no fsync (a scratch folder that no crash must survive)
        self._header = {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "classes": list(classes),
            "rows": self.n,
            "maps": list(map_shape) if map_shape else None,
            "embeddings": embedding_dim,
            "meta": dict(meta or {}),
        }
        resume = self._can_resume()
        if not resume:
            self._create(manifest)
        shapes = self._shapes()
        self._columns = {
            name: _Column(self.folder / f"{name}.npy", dtype, shapes[name], create=not resume)
            for name, dtype in self._dtypes().items()
        }
        self._done = _read_done(self.folder / "done.log", self.n)
        self._pending: list[tuple[int, int]] = []
        self._skipped: list[dict[str, Any]] = []
        self._last_commit = time.monotonic()

    # -- creation / resumption -------------------------------------------------------------

    def _dtypes(self) -> dict[str, Any]:
        dtypes: dict[str, Any] = {**_SCALARS, "probs": np.float16}
        if self.map_shape is not None:
            dtypes["maps"] = np.float16
        if self.embedding_dim is not None:
            dtypes["embeddings"] = np.float16
        return dtypes

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {name: (self.n,) for name in _SCALARS}
        shapes["probs"] = (self.n, self.k)
        if self.map_shape is not None:
            shapes["maps"] = (self.n, 2, *self.map_shape)
        if self.embedding_dim is not None:
            shapes["embeddings"] = (self.n, self.embedding_dim)
        return shapes

    def _can_resume(self) -> bool:
        try:
            found = _read_json(self.folder / "result.json")
        except StoreError:
            return False
        same = {k: found.get(k) for k in self._header if k != "meta"}
        if same != {k: v for k, v in self._header.items() if k != "meta"}:
            return False
        try:  # every file there, at its full size (a damaged folder is started afresh)
            manifest = pa.ipc.open_file(pa.memory_map(str(self.folder / "manifest.arrow")))
            shapes = self._shapes()
            sized = all(
                np.load(self.folder / f"{name}.npy", mmap_mode="r").shape == shapes[name]
                for name in self._dtypes()
            )
            return sized and manifest.read_all().num_rows == self.n
        except (OSError, ValueError, pa.ArrowException):
            return False

    def _create(self, manifest: Sequence[tuple[str, int]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in ("done.log", "skipped.jsonl", "maps.npy", "embeddings.npy"):
            (self.folder / stale).unlink(missing_ok=True)
        paths = pa.array([p for p, _ in manifest], type=pa.string())
        labels = pa.array(np.fromiter((lab for _, lab in manifest), np.int32, len(manifest)))
        table = pa.table({"path": paths, "label": labels})
        with (
            pa.OSFile(str(self.folder / "manifest.arrow"), "wb") as sink,
            pa.ipc.new_file(sink, table.schema) as out,
        ):
            out.write_table(table)
        _atomic_write_text(
            self.folder / "result.json",
            json.dumps({**self._header, "complete": False}),
            self.durable,
        )

    # -- writing ------------------------------------------------------------------------------

    def todo(self) -> np.ndarray:
        """Row indices not yet committed, ascending."""
        return np.flatnonzero(~self._done)

    @property
    def done_count(self) -> int:
        return int(self._done.sum())

    def write(self, scores: BatchScores) -> None:
        """Store one batch (its rows must be consecutive and ascending)."""
        rows = scores.rows
        if len(rows) == 0:
            return
        start = int(rows[0])
        if not np.array_equal(rows, np.arange(start, start + len(rows))):
            for run in _runs(rows):  # non-consecutive rows: write each run separately
                self.write(_subset(scores, np.isin(rows, run)))
            return
        for name in _SCALARS:
            self._columns[name].write(start, getattr(scores, name))
        self._columns["probs"].write(start, scores.probs)
        if "maps" in self._columns and scores.maps is not None:
            self._columns["maps"].write(start, scores.maps)
        if "embeddings" in self._columns and scores.embeddings is not None:
            self._columns["embeddings"].write(start, scores.embeddings)
        self._pending.append((start, start + len(rows)))
        self._maybe_commit()

    def skip(self, row: int, path: str, reason: str) -> None:
        """Record an image that could not be read (committed with the next batch)."""
        self._skipped.append({"row": int(row), "path": path, "reason": reason})
        self._pending.append((int(row), int(row) + 1))
        self._maybe_commit()

    def _maybe_commit(self) -> None:
        if time.monotonic() - self._last_commit >= self.commit_seconds:
            self.commit()

    def commit(self) -> None:
        """Sync written data to disk, then list its rows as done (the order makes it safe)."""
        if not self._pending:
            return
        if self.durable:
            for column in self._columns.values():
                column.sync()
        if self._skipped:
            lines = (json.dumps(s) for s in self._skipped)
            _append(self.folder / "skipped.jsonl", lines, self.durable)
        _append(self.folder / "done.log", (f"{a} {b}" for a, b in self._pending), self.durable)
        for a, b in self._pending:
            self._done[a:b] = True
        self._pending, self._skipped = [], []
        self._last_commit = time.monotonic()

    def finish(self) -> Results:
        """Commit, mark the folder complete (atomically) and open it for reading."""
        self.commit()
        if not self._done.all():
            missing = int((~self._done).sum())
            raise StoreError(f"{self.folder}: {missing} rows were never written")
        self.close()
        _atomic_write_text(
            self.folder / "result.json",
            json.dumps({**self._header, "complete": True}),
            self.durable,
        )
        return open_results(self.folder)

    def close(self) -> None:
        for column in self._columns.values():
            column.close()
        self._columns = {}

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._columns:
            self.commit()
            self.close()


def _runs(rows: np.ndarray) -> list[np.ndarray]:
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return np.split(rows, breaks)


def _subset(scores: BatchScores, mask: np.ndarray) -> BatchScores:
    values = {
        name: (value[mask] if isinstance(value, np.ndarray) else value)
        for name, value in vars(scores).items()
    }
    return BatchScores(**values)


def _append(path: Path, lines: Iterable[str], durable: bool = True) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
        handle.flush()
        if durable:
            os.fsync(handle.fileno())


def _read_done(path: Path, n: int) -> np.ndarray:
    """Rows listed in ``done.log``; a torn last line (killed mid-write) is ignored."""
    done = np.zeros(n, dtype=bool)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return done
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            a, b = int(parts[0]), int(parts[1])
            if 0 <= a < b <= n:
                done[a:b] = True
    return done


# ------------------------------------------------------------------------------ reading


@dataclass(frozen=True, eq=False)
class Results:
    """A finished evaluation, memory-mapped: share one per server, treat it as read-only.

    :attr:`predictions` holds one row per evaluated image (``index`` is its row in the
    manifest); probabilities and maps stay on disk and are read for the rows asked for.
    """

    folder: Path
    classes: tuple[str, ...]
    fingerprint: str
    meta: dict[str, str]
    manifest: pa.Table
    columns: dict[str, np.ndarray] = field(repr=False)
    skipped: tuple[SkippedFile, ...] = ()
    skipped_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    notes: tuple[str, ...] = ()  # what differs from the dataset it was opened against

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def has_maps(self) -> bool:
        return "maps" in self.columns

    @property
    def has_embeddings(self) -> bool:
        return "embeddings" in self.columns

    @property
    def embeddings(self) -> np.ndarray:
        """Embeddings [N, D] float16 of every manifest row, memory-mapped (skipped rows hold
        zeros; use :attr:`index`). Raises if none were stored."""
        if not self.has_embeddings:
            raise StoreError(f"{self.folder} holds no embeddings")
        return self.columns["embeddings"]

    @cached_property
    def index(self) -> np.ndarray:
        """Manifest rows that were evaluated (not skipped), ascending."""
        keep = np.ones(len(self.manifest), dtype=bool)
        keep[self.skipped_rows] = False
        return np.flatnonzero(keep)

    @cached_property
    def true(self) -> np.ndarray:
        """True class of each evaluated image (int32)."""
        labels = self.manifest.column("label").to_numpy()
        return labels[self.index]

    @cached_property
    def pred(self) -> np.ndarray:
        """Predicted class of each evaluated image (int32)."""
        return self.columns["pred"][self.index]

    @cached_property
    def predictions(self) -> pd.DataFrame:
        """index, path, true, pred, confidence, true_prob, loss, runner_up, runner_up_prob:
        one row per evaluated image.

        Built once per object from the memory-mapped columns (paths stay Arrow strings).
        """
        index = self.index
        paths = self.manifest.column("path").take(pa.array(index))
        return pd.DataFrame(
            {
                "index": index,
                "path": pd.Series(pd.arrays.ArrowStringArray(paths.combine_chunks())),
                "true": self.true,
                "pred": self.pred,
                **{
                    name: self.columns[name][index]
                    for name in ("confidence", "true_prob", "loss", "runner_up", "runner_up_prob")
                },
            }
        )

    def probs(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Probabilities [len(rows), K] (float32) of manifest ``rows``."""
        return np.asarray(self.columns["probs"][np.asarray(rows, dtype=np.int64)], np.float32)

    def maps(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw maps [len(rows), 2, h, w] (float32) of manifest ``rows``: predicted class, then
        true class (runner-up where the prediction is right). Raises if none were stored."""
        if not self.has_maps:
            raise StoreError(f"{self.folder} holds no maps")
        return np.asarray(self.columns["maps"][np.asarray(rows, dtype=np.int64)], np.float32)


def _read_skipped(folder: Path) -> list[dict[str, Any]]:
    try:
        lines = (folder / "skipped.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    found: dict[int, dict[str, Any]] = {}
    for line in lines:
        try:
            item = json.loads(line)
            found[int(item["row"])] = item
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a killed run: that row was redone
    return [found[row] for row in sorted(found)]


def open_results(folder: str | Path) -> Results:
    """Open a complete result folder (memory-mapped; milliseconds at a million rows)."""
    folder = Path(folder)
    header = _read_json(folder / "result.json")
    if not header.get("complete"):
        raise StoreError(f"{folder} is an unfinished evaluation; run it again to complete it")
    try:
        manifest = pa.ipc.open_file(pa.memory_map(str(folder / "manifest.arrow"))).read_all()
        names = [*_SCALARS, "probs", *(["maps"] if header.get("maps") else [])]
        names += ["embeddings"] if header.get("embeddings") else []
        columns = {name: np.load(folder / f"{name}.npy", mmap_mode="r") for name in names}
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise StoreError(f"result folder {folder} is damaged: {exc}") from None
    n, k = int(header["rows"]), len(header["classes"])
    if len(manifest) != n or columns["probs"].shape != (n, k):
        raise StoreError(f"result folder {folder} is damaged: sizes do not match result.json")
    found = _read_skipped(folder)
    skipped = tuple(SkippedFile(s["path"], s["reason"]) for s in found)
    return Results(
        folder=folder,
        classes=tuple(header["classes"]),
        fingerprint=str(header["fingerprint"]),
        meta=dict(header.get("meta") or {}),
        manifest=manifest,
        columns=columns,
        skipped=skipped,
        skipped_rows=np.array([int(s["row"]) for s in found], dtype=np.int64),
    )


def load_derived(result: Results, name: str) -> dict[str, np.ndarray] | None:
    """Arrays computed once from ``result`` and saved beside it (``derived/<name>/``), or None."""
    folder = result.folder / "derived" / name
    try:
        return {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))} or None
    except (OSError, ValueError):
        return None


def save_derived(result: Results, name: str, arrays: dict[str, np.ndarray]) -> bool:
    """Save arrays computed from ``result`` beside it, atomically (a folder renamed into place);
    False where the result folder is read-only (then callers keep them in memory)."""
    target = result.folder / "derived" / name
    try:
        target.parent.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
        for key, value in arrays.items():
            np.save(tmp / f"{key}.npy", np.asarray(value))
        os.replace(tmp, target)
    except OSError:
        return False
    return True

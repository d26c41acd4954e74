"""The results store: one folder per (model, dataset, inputs), streamed to disk, memory-mapped back.

Layout of a result folder::

    result.json       classes, model, dataset, fingerprint, row count; "complete" once finished
    manifest.arrow    Arrow IPC: path (relative to the dataset root), label - in row order
    pred.npy ...      one NumPy file per column, a row per image of the manifest:
                      pred, runner_up (int32), confidence, true_prob, loss, runner_up_prob
                      (float32),
                      probs (float16 [N, K]), maps (float16 [N, 2, h, w], optional),
                      embeddings (float16 [N, 128], optional: the classifier head's input),
                      properties (float64 [N, P], optional: core.data.properties)
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

A bad machine: before a result is written its size (known up front: the columns are
preallocated) is checked against the free space; a write that fails anyway (a full disk, a
read-only or vanished folder) raises :class:`StoreWriteError` naming the folder and the fix, and
leaves a folder the next run resumes. Files are never truncated in place (a rewrite unlinks
first), and a :class:`Results` checks its files are the ones it mapped before reading them: a
reader never touches a memory map whose file was cut short under it (that would be a SIGBUS).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
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
    "DiskFullError",
    "ResultWriter",
    "Results",
    "SkippedFile",
    "StoreError",
    "StoreWriteError",
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


class StoreWriteError(StoreError):
    """Something could not be written: a read-only or vanished folder, no permission, ..."""


class DiskFullError(StoreWriteError):
    """The disk holding a result folder has (or had, mid-write) too little free space."""


_WRITE_FIX = "set cache_dir in the config to a writable folder (or write elsewhere with --out DIR/)"


def size_text(n: float) -> str:
    """Bytes for people: ``12.3 MB``."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer can still use on the disk holding ``path`` (or its nearest
    existing parent)."""
    for folder in (path, *path.parents):
        try:
            stats = os.statvfs(folder)
        except OSError:
            continue
        return stats.f_bavail * stats.f_frsize
    return 0


def write_error(
    exc: OSError,
    folder: Path,
    what: str = "the result folder",
    fix: str | None = None,
) -> StoreWriteError:
    """A failed write as a one-line message in the user's terms: what, where, how to fix."""
    code = exc.errno or next(  # libraries (Arrow) may put the OS error in the text only
        (n for n in (errno.ENOSPC, errno.EROFS, errno.EACCES) if os.strerror(n) in str(exc)), None
    )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"The disk holding {folder} is full: {what} could not be written "
            f"({size_text(free_bytes(folder))} is free). {fix or f'Free space, or {_WRITE_FIX}'}."
        )
    fix = fix or f"Stored results still open; to save new ones, {_WRITE_FIX}"
    if code == errno.EROFS:
        why = "its file system is read-only"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied"
    elif code == errno.ENOENT:
        why = "the folder was deleted while it was written"
    else:
        why = exc.strerror or str(exc)
    return StoreWriteError(f"Cannot write {what} {folder}: {why}. {fix}.")


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
    properties: np.ndarray | None = None  # float64 [n, P] image properties (core.data.properties)


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
        if create:  # a new file, never one truncated in place: readers may map the old one
            path.unlink(missing_ok=True)
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
        data = memoryview(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        at = self.offset + start * self.row_bytes
        while len(data):  # a short write (the disk filled up) is retried, then raises ENOSPC
            written = os.pwrite(self.fd, data, at)
            if written <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            data, at = data[written:], at + written

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
        properties: Sequence[str] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.n, self.k = len(manifest), len(classes)
        self.map_shape = map_shape
        self.embedding_dim = embedding_dim  # None: no embeddings column
        self.properties = tuple(properties) if properties else None  # None: no properties
        self.commit_seconds = commit_seconds
        self.durable = durable  # False: no fsync (a scratch folder that no crash must survive)
        self._header = {
            "format": FORMAT,
            "fingerprint": fingerprint,
            "classes": list(classes),
            "rows": self.n,
            "maps": list(map_shape) if map_shape else None,
            "embeddings": embedding_dim,
            "properties": list(self.properties) if self.properties else None,
            "meta": dict(meta or {}),
        }
        self._columns: dict[str, _Column] = {}
        resume = self._can_resume()
        self._check_space(manifest, resume)
        shapes = self._shapes()
        try:
            if not resume:
                self._create(manifest)
            for name, dtype in self._dtypes().items():
                path = self.folder / f"{name}.npy"
                self._columns[name] = _Column(path, dtype, shapes[name], create=not resume)
        except OSError as exc:
            self.close()
            raise write_error(exc, self.folder) from None
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
        if self.properties is not None:
            dtypes["properties"] = np.float64
        return dtypes

    def _shapes(self) -> dict[str, tuple[int, ...]]:
        shapes: dict[str, tuple[int, ...]] = {name: (self.n,) for name in _SCALARS}
        shapes["probs"] = (self.n, self.k)
        if self.map_shape is not None:
            shapes["maps"] = (self.n, 2, *self.map_shape)
        if self.embedding_dim is not None:
            shapes["embeddings"] = (self.n, self.embedding_dim)
        if self.properties is not None:
            shapes["properties"] = (self.n, len(self.properties))
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

    def needed_bytes(self, manifest: Sequence[tuple[str, int]], resume: bool = False) -> int:
        """Disk space this result still needs: its preallocated columns (less what a resumed
        folder already holds), the manifest and the logs."""
        needed, dtypes = 0, self._dtypes()
        for name, shape in self._shapes().items():
            size = 128 + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtypes[name]).itemsize
            if resume:
                size -= _allocated(self.folder / f"{name}.npy")
            needed += max(size, 0)
        if not resume:
            needed += sum(len(p.encode()) + 8 for p, _ in manifest) + 64 * 1024
        return needed + 16 * 1024  # result.json, done.log

    def _check_space(self, manifest: Sequence[tuple[str, int]], resume: bool) -> None:
        needed, free = self.needed_bytes(manifest, resume), free_bytes(self.folder)
        if needed > free:
            raise DiskFullError(
                f"The disk holding {self.folder} is full: the result needs "
                f"{size_text(needed)}, {size_text(free)} is free. Free space, or {_WRITE_FIX}."
            )

    def _create(self, manifest: Sequence[tuple[str, int]]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        stale_files = ("maps.npy", "embeddings.npy", "properties.npy", "manifest.arrow")
        for stale in ("done.log", "skipped.jsonl", *stale_files):
            (self.folder / stale).unlink(missing_ok=True)  # new files: readers may map old ones
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
        try:
            for name in _SCALARS:
                self._columns[name].write(start, getattr(scores, name))
            self._columns["probs"].write(start, scores.probs)
            if "maps" in self._columns and scores.maps is not None:
                self._columns["maps"].write(start, scores.maps)
            if "embeddings" in self._columns and scores.embeddings is not None:
                self._columns["embeddings"].write(start, scores.embeddings)
            if "properties" in self._columns and scores.properties is not None:
                self._columns["properties"].write(start, scores.properties)
        except OSError as exc:
            raise self._failed(exc) from None
        self._pending.append((start, start + len(rows)))
        self._maybe_commit()

    def _failed(self, exc: OSError) -> StoreWriteError:
        """A write that failed mid-way: what was saved, and that a rerun continues from it."""
        error = write_error(exc, self.folder)
        if isinstance(error, DiskFullError):
            done = self.done_count
            missing = self.needed_bytes([], resume=True)
            return DiskFullError(
                f"The disk holding {self.folder} filled up while the result was written "
                f"({done:,} of {self.n:,} images saved): about {size_text(missing)} more is "
                f"needed, {size_text(free_bytes(self.folder))} is free. Free space and run it "
                f"again (it continues from the last saved batch), or {_WRITE_FIX}."
            )
        return error

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
        try:
            if self.durable:
                for column in self._columns.values():
                    column.sync()
            if self._skipped:
                lines = (json.dumps(s) for s in self._skipped)
                _append(self.folder / "skipped.jsonl", lines, self.durable)
            done = (f"{a} {b}" for a, b in self._pending)
            _append(self.folder / "done.log", done, self.durable)
        except OSError as exc:
            self._pending, self._skipped = [], []  # not committed: a rerun redoes them
            raise self._failed(exc) from None
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
        try:
            _atomic_write_text(
                self.folder / "result.json",
                json.dumps({**self._header, "complete": True}),
                self.durable,
            )
        except OSError as exc:
            raise self._failed(exc) from None
        return open_results(self.folder)

    def close(self) -> None:
        for column in self._columns.values():
            column.close()
        self._columns = {}

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, kind: object, *exc: object) -> None:
        if not self._columns:
            return
        try:
            self.commit()
        except StoreWriteError:
            if kind is None:
                raise
            # already failing (e.g. the disk filled up): the first error is the one to report
        finally:
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


class _Mapped:
    """A mapped file, held open: its size can be checked however it is renamed or deleted."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size
        self.handle = path.open("rb")  # closed with this object
        if os.fstat(self.handle.fileno()).st_size < size:
            self.handle.close()
            raise ValueError(f"{path.name} is cut short")

    def cut_short(self) -> bool:
        """Whether the mapped file is now shorter than the map (reading past its end: SIGBUS)."""
        return os.fstat(self.handle.fileno()).st_size < self.size

    def replaced(self) -> bool:
        """Whether the path now names another file, or none."""
        try:
            now = os.stat(self.path)
        except OSError:
            return True
        held = os.fstat(self.handle.fileno())
        return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


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
    files: dict[str, _Mapped] = field(default_factory=dict, repr=False)  # what is mapped
    properties: tuple[str, ...] = ()  # names of the columns of properties.npy (none: absent)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def changed_on_disk(self) -> bool:
        """Whether the folder's files are no longer the ones mapped (deleted, replaced, cut
        short): then open it again (or evaluate again). A stat per file."""
        return any(m.replaced() or m.cut_short() for m in self.files.values())

    def _column(self, name: str) -> np.ndarray:
        """A mapped column, after checking its file was not cut short: reading a map past the
        end of its file would kill the process (SIGBUS), so this raises instead. (A deleted or
        replaced file keeps its data while it is mapped.)"""
        mapped = self.files.get(f"{name}.npy")
        if mapped is not None and mapped.cut_short():
            raise StoreError(
                f"the result folder {self.folder} changed on disk while it was open (deleted, "
                "replaced or cut short); reload the page or run again to reopen or recompute it"
            )
        return self.columns[name]

    @property
    def has_maps(self) -> bool:
        return "maps" in self.columns

    @property
    def has_embeddings(self) -> bool:
        return "embeddings" in self.columns

    @property
    def has_properties(self) -> bool:
        """Whether image properties were measured in the evaluation (``properties.npy``)."""
        return "properties" in self.columns

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
        return self._column("pred")[self.index]

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
                    name: self._column(name)[index]
                    for name in ("confidence", "true_prob", "loss", "runner_up", "runner_up_prob")
                },
            }
        )

    def probs(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Probabilities [len(rows), K] (float32) of manifest ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(self._column("probs")[rows], np.float32)

    def maps(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Raw maps [len(rows), 2, h, w] (float32) of manifest ``rows``: predicted class, then
        true class (runner-up where the prediction is right). Raises if none were stored."""
        if not self.has_maps:
            raise StoreError(f"{self.folder} holds no maps")
        rows = np.asarray(rows, dtype=np.int64)
        return np.asarray(self._column("maps")[rows], np.float32)


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
    n, k = int(header["rows"]), len(header["classes"])
    maps = header.get("maps")
    shapes: dict[str, tuple[int, ...]] = {name: (n,) for name in _SCALARS}
    shapes["probs"] = (n, k)
    if maps:
        shapes["maps"] = (n, 2, *maps)
    if header.get("embeddings"):
        shapes["embeddings"] = (n, int(header["embeddings"]))
    properties = tuple(str(name) for name in header.get("properties") or ())
    if properties:
        shapes["properties"] = (n, len(properties))
    files: dict[str, _Mapped] = {}
    try:
        path = folder / "manifest.arrow"
        source = pa.memory_map(str(path))
        files[path.name] = _Mapped(path, source.size())
        manifest = pa.ipc.open_file(source).read_all()
        columns = {}
        for name, shape in shapes.items():
            path = folder / f"{name}.npy"
            columns[name] = np.load(path, mmap_mode="r")
            if not isinstance(columns[name], np.memmap) or columns[name].shape != shape:
                raise ValueError(f"{path.name} holds {columns[name].shape}, expected {shape}")
            files[path.name] = _Mapped(path, columns[name].offset + columns[name].nbytes)
    except (OSError, ValueError, TypeError, pa.ArrowException) as exc:
        raise StoreError(f"result folder {folder} is damaged: {exc}") from None
    if len(manifest) != n:
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
        files=files,
        properties=properties,
    )


def _allocated(path: Path) -> int:
    """Bytes a file holds on disk (a preallocated column is sparse until written); 0 if gone."""
    try:
        return os.stat(path).st_blocks * 512
    except OSError:
        return 0


def load_derived(result: Results, name: str) -> dict[str, np.ndarray] | None:
    """Arrays computed once from ``result`` and saved beside it (``derived/<name>/``), or None."""
    folder = result.folder / "derived" / name
    try:
        return {p.stem: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))} or None
    except (OSError, ValueError):
        return None


def save_derived(
    result: Results, name: str, arrays: dict[str, np.ndarray], strict: bool = False
) -> bool:
    """Save arrays computed from ``result`` beside it, atomically (a folder renamed into place).

    False where they cannot be saved (a read-only, full or vanished folder; nothing half-written
    is left): callers keep them in memory. ``strict``: raise :class:`StoreWriteError` saying
    what could not be written, where and why instead.
    """
    target = result.folder / "derived" / name
    tmp: Path | None = None
    try:
        target.parent.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}."))
        for key, value in arrays.items():
            np.save(tmp / f"{key}.npy", np.asarray(value))
        if target.exists():  # recomputed (another version): renaming onto a full folder fails
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{name}.old."))
            os.replace(target, old / name)
            shutil.rmtree(old, ignore_errors=True)  # open memory maps keep their data
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if strict:
            what = f"the {name.replace('_', ' ')} into"
            fix = "Give the result folder a writable disk with free space to keep it"
            raise write_error(exc, target.parent, what, fix) from None
        return False
    return True

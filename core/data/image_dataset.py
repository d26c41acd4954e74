"""One labelled test set as listed: :class:`ImageDataset`, a list of (relative path, class
index) under a root folder, with the one read decision every image goes through.

Evaluation and display read an image through the same call (:meth:`ImageDataset.load`), so
they take the same decision on it: a file that is missing, not a regular file, linked outside
the dataset root and its ``link_roots``, larger than ``max_pixels`` or undecodable is not fatal;
it is skipped and reported with its path and reason.

Listing and fingerprinting import neither torch nor OpenCV (decoding lives in
:mod:`core.data.images`, imported on the first decode): reopening stored results of a
million-image set must not wait for them. Opening a dataset (ImageFolder tree, CSV manifest,
Parquet or Arrow tables) is :func:`core.data.datasets.open_dataset`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from PIL import Image

from core.config import DEFAULT_MAX_PIXELS
from core.data.listing import file_stats
from core.data.metadata import Column, ColumnSet, typed_columns
from core.errors import ImageRefusedError, reason_of

if TYPE_CHECKING:
    import torch

    from core.data.images import Sample

__all__ = ["EXTENSIONS", "ImageDataset", "SampleColumns"]

#: torchvision's ImageFolder extensions (``IMG_EXTENSIONS``) plus ``.tif``, ``.tiff``, ``.gif``.
EXTENSIONS = (
    ".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp",
)  # fmt: skip


def _images() -> ModuleType:
    """:mod:`core.data.images`, imported on the first decode (it imports torch and OpenCV)."""
    from core.data import images

    return images


@dataclass(frozen=True)
class SampleColumns:
    """(path, label) pairs as two columns: a million-file listing builds no tuple per file."""

    paths: list[str]
    labels: np.ndarray  # int64


class ImageDataset:
    """A list of (relative path, class index) under one root folder, as of one moment.

    ``samples`` are (path, label) pairs, or :class:`SampleColumns`; either way they are kept
    as the columns :attr:`paths` and :attr:`labels`.

    ``stats`` holds each file's [size, mtime in ns] when it was listed (:func:`open_dataset`
    passes them); without them the files are stat'ed on the first :meth:`fingerprint`. Either
    way the object is a snapshot: open the dataset again to see changed files.

    Every read of an image, for evaluation or display, goes through :meth:`load` and takes the
    same decision: the file must be a regular file whose resolved target lies under ``root`` or
    one of ``link_roots``, with at most ``max_pixels`` pixels, and it must decode.

    ``metadata`` holds the dataset's own columns as read: tables (a manifest's or a Parquet
    split's columns besides path and label, a ``metadata`` CSV's besides path), each with the
    table row of every image (None: row ``i`` is image ``i``; -1: none). :attr:`metadata`
    types each table's columns (over all its rows) on first use, then picks the images' rows;
    a name two tables use is the first one's. ``metadata_source`` names where they came from
    (files, sizes, mtimes): a stored copy made from another source is stale. Neither is part
    of the :meth:`fingerprint` (metadata does not change a prediction), and
    :meth:`with_transform` leaves them behind (loader processes need no metadata).
    """

    def __init__(
        self,
        name: str,
        root: Path,
        samples: Sequence[tuple[str, int]] | SampleColumns,
        classes: Sequence[str],
        transform: Callable[[Any], torch.Tensor] | None = None,
        channels: int = 3,
        tensors: bool = False,
        link_roots: Sequence[Path] = (),
        max_pixels: int = DEFAULT_MAX_PIXELS,
        stats: np.ndarray | None = None,
        metadata: Sequence[tuple[pa.Table, np.ndarray | None]] = (),
        metadata_source: str = "",
    ) -> None:
        if not isinstance(samples, SampleColumns):
            pairs = list(samples)
            labels = np.array([label for _, label in pairs], dtype=np.int64)
            samples = SampleColumns([path for path, _ in pairs], labels)
        if len(samples.paths) != len(samples.labels):
            raise ValueError(f"{len(samples.paths)} paths but {len(samples.labels)} labels")
        if stats is not None and stats.shape != (len(samples.paths), 2):
            raise ValueError(f"stats of shape {stats.shape} for {len(samples.paths)} files")
        for table, rows in metadata:
            if (table.num_rows if rows is None else len(rows)) != len(samples.paths):
                raise ValueError(f"metadata rows for {len(samples.paths)} files do not match")
        self.name = name
        self.root = root
        self.paths = samples.paths
        self.labels = samples.labels
        self.classes = list(classes)
        self.transform = transform
        self.channels = channels
        self.tensors = tensors
        self.link_roots = tuple(link_roots)
        self.max_pixels = max_pixels
        self._root = os.path.normpath(os.fspath(root))
        self._allowed = tuple(
            os.path.join(os.path.realpath(p), "") for p in (root, *self.link_roots)
        )  # each with a trailing separator: "/data/a/" must not admit "/data/ab/x.png"
        self._folders: dict[str, str] = {}  # folder -> its real path (see _real)
        self._stats = stats
        self.metadata_tables = tuple(metadata)
        self.metadata_source = metadata_source
        self.measure = False  # with_transform(properties=True): Sample.properties measured

    def __len__(self) -> int:
        return len(self.paths)

    @cached_property
    def samples(self) -> list[tuple[str, int]]:
        """(path, label) of each file, built on first use (reopening results never needs it)."""
        return list(zip(self.paths, self.labels.tolist(), strict=True))

    @cached_property
    def metadata(self) -> ColumnSet:
        """The metadata columns, typed (categorical or numeric; see :mod:`core.data.metadata`),
        one row per image; empty when the dataset has none."""
        columns: list[Column] = []
        for table, rows in self.metadata_tables:
            typed = typed_columns(table)
            for column in typed if rows is None else typed.take(rows):
                if column.name not in {c.name for c in columns}:
                    columns.append(column)
        return ColumnSet(columns, len(self), self.metadata_source)

    @cached_property
    def _listed(self) -> frozenset[str]:
        """The listed files: only these may be read (built on the first read, not on opening:
        reopening stored results of a million files never reads one)."""
        return frozenset(self.paths)

    def __getitem__(self, index: int) -> Sample:  # a map-style dataset for torch's DataLoader
        sample = _images().Sample
        rel, label = self.paths[index], int(self.labels[index])
        try:
            if self.measure:
                return self._measured(index, rel, label)
            if self.tensors or not self.transform:
                tensor = self.load(rel)
                tensor = self.transform(tensor) if self.transform else tensor
            else:
                tensor = self.transform(self.image(rel, self.channels))
        except Exception as exc:  # a corrupt or refused file must not stop the evaluation
            return sample(index, label, None, reason_of(exc))
        return sample(index, label, tensor)

    def _measured(self, index: int, rel: str, label: int) -> Sample:
        """:meth:`__getitem__` with the image's properties (:mod:`core.data.properties`): size
        from the decoded pixels, the rest from the transformed uint8 tensor the model gets."""
        import torch

        from core.data.properties import measure

        array = self.load_array(rel)
        height, width = array.shape[:2]
        tensor = torch.from_numpy(array).permute(2, 0, 1)
        tensor = self.transform(tensor) if self.transform else tensor
        size, kind = self.encoded(index)
        found = measure(tensor.numpy(), width, height, size, kind)
        return _images().Sample(index, label, tensor, properties=found)

    def encoded(self, index: int) -> tuple[float, int]:
        """Image ``index``'s encoded size in bytes (NaN if unknown) and its format (an index
        into :data:`core.data.properties.FORMATS`, from the file's extension)."""
        from core.data.properties import format_of_name

        size = float(self.stats[index, 0])
        return (size if size >= 0 else float("nan")), format_of_name(self.paths[index])

    def with_transform(
        self,
        transform: Callable[[Any], torch.Tensor],
        channels: int,
        tensors: bool = False,
        properties: bool = False,
    ) -> ImageDataset:
        """The same files, fed through another transform (given uint8 tensors if ``tensors``);
        with ``properties`` each sample carries its measured properties (``tensors`` only)."""
        dataset = ImageDataset(
            self.name,
            self.root,
            SampleColumns(self.paths, self.labels),
            self.classes,
            transform,
            channels,
            tensors,
            self.link_roots,
            self.max_pixels,
            self._stats,  # as they are: not stat'ed here if they were not yet
        )
        dataset.measure = properties
        return dataset

    def load(self, rel: str, channels: int | None = None) -> torch.Tensor:
        """The listed image ``rel`` as a uint8 tensor [C, H, W]: the one decode of an image.

        Raises :class:`ImageRefusedError` (not listed, missing, not a regular file, linked
        outside the allowed folders, too large) or the decoder's error for a damaged file.
        """
        import torch

        return torch.from_numpy(self.load_array(rel, channels)).permute(2, 0, 1)

    def load_array(self, rel: str, channels: int | None = None) -> np.ndarray:
        """:meth:`load`'s pixels as a uint8 array [H, W, C], without torch."""
        return _images().load_array(self._file(rel), channels or self.channels, self.max_pixels)

    def image(self, rel: str, channels: int = 3) -> Image.Image:
        """The pixels of :meth:`load` as a PIL image (``L`` or ``RGB``), for display; no torch."""
        array = self.load_array(rel, channels)
        return Image.fromarray(array[:, :, 0] if channels == 1 else array)

    def path(self, rel: str) -> Path:
        """The resolved path of a listed file that may be read (see :meth:`load`)."""
        return Path(self._file(rel))

    def display_name(self, rel: str) -> str:
        """How the gallery names image ``rel`` (a table row adds the path in its cell)."""
        return rel

    def _file(self, rel: str) -> str:
        if rel not in self._listed:
            raise ImageRefusedError(f"{rel!r} is not an image of dataset {self.name!r}")
        joined = os.path.normpath(os.path.join(self._root, rel))  # not pathlib: once per image
        try:
            info = os.lstat(joined)
            real = self._real(joined, info)
        except FileNotFoundError:
            raise ImageRefusedError("file not found (deleted or moved since listed?)") from None
        except OSError as exc:
            raise ImageRefusedError(f"cannot be read: {exc.strerror or exc}") from None
        if not real.startswith(self._allowed):  # decided before the target is even looked at
            inside = os.path.join(joined, "").startswith(os.path.join(self._root, ""))
            if inside:
                raise ImageRefusedError(
                    f"links outside the dataset root and its link_roots: -> {real}"
                )
            raise ImageRefusedError(f"is outside the dataset root and its link_roots: {real}")
        if real != joined:  # a link, or a path through one: the target's own type
            try:
                info = os.stat(real)
            except OSError as exc:
                raise ImageRefusedError(f"broken link -> {real}: {exc.strerror or exc}") from None
        if not stat.S_ISREG(info.st_mode):
            raise ImageRefusedError("not a regular file")
        return real

    def _real(self, joined: str, info: os.stat_result) -> str:
        """``joined`` with every link resolved. A file's own link is resolved on every read;
        its folder's real path once per dataset object (a file in the same folder costs one
        ``lstat``, not one per path component)."""
        if stat.S_ISLNK(info.st_mode):
            return os.path.realpath(joined)
        folder, name = os.path.split(joined)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = self._folders.setdefault(folder, os.path.realpath(folder))
        return os.path.join(real_folder, name)

    @property
    def stats(self) -> np.ndarray:
        """Each file's [size, mtime in ns] as listed; [-1, -1] where there was no regular file
        (missing, a broken link, a folder)."""
        if self._stats is None:
            root = os.path.join(self._root, "")
            self._stats = file_stats([root + rel for rel in self.paths])
        return self._stats

    def fingerprint(self) -> str:
        """A hash of the read limits, the class list and every file's path, label, size and
        modification time as listed (see :attr:`stats`)."""
        limits = (self.classes, [os.fspath(p) for p in self.link_roots], self.max_pixels)
        digest = hashlib.sha256(repr(limits).encode())
        digest.update("\0".join(self.paths).encode())
        digest.update(self.labels.astype(np.int64, copy=False).tobytes())
        digest.update(self.stats.tobytes())
        return digest.hexdigest()

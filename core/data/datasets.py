"""Labelled test sets: an ImageFolder tree or a CSV manifest (``path,label``).

Images of any common mode (grayscale, palette, RGBA, 16-bit) are converted to what the
model takes. Evaluation and display read an image through the same call
(:meth:`ImageDataset.load`), so they take the same decision on it: a file that is missing, not
a regular file, linked outside the dataset root and its ``link_roots``, larger than
``max_pixels`` or undecodable is not fatal; it is skipped and reported with its path and reason.
"""

from __future__ import annotations

import csv
import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from core.config import DEFAULT_MAX_PIXELS, DatasetSpec
from core.errors import DatasetError, ImageRefusedError, reason_of

__all__ = [
    "ImageDataset",
    "Sample",
    "dataset_key",
    "load_image",
    "load_tensor",
    "open_dataset",
]

EXTENSIONS = tuple(sorted({*IMG_EXTENSIONS, ".tif", ".tiff", ".gif"}))


@dataclass(frozen=True)
class Sample:
    """What the dataset yields for one file: a tensor, or the reason it could not be read."""

    index: int
    label: int
    image: torch.Tensor | None
    error: str | None = None


def load_image(
    path: str | Path, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open an image as mode ``L`` (channels=1) or ``RGB`` (channels=3).

    16-bit and float images are scaled to 8 bits (PIL's own conversion would clip them);
    transparent images are composited over white, as a viewer shows them. An image of more than
    ``max_pixels`` pixels (read from its header) raises :class:`ImageRefusedError` undecoded.
    """
    with _open_within(path, max_pixels) as img:
        img.load()
        return to_mode(img, channels)


def load_tensor(
    path: str | Path, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """Decode an image file to a uint8 tensor [channels, H, W]: the pixels of :func:`load_image`.

    Complete 8-bit grayscale and RGB PNGs are decoded by OpenCV, two to three times faster than
    PIL on small files, with identical pixels (PNG is lossless). Everything else, including any
    PNG that OpenCV cannot read exactly as PIL would, goes through :func:`load_image`, whose
    errors name the problem. Both paths check ``max_pixels`` against the header first.
    """
    path = os.fspath(path)
    fast = _decode_png(path, channels, max_pixels) if path[-4:].lower() == ".png" else None
    return fast if fast is not None else _to_tensor(load_image(path, channels, max_pixels))


@contextmanager
def _open_within(path: str | Path, max_pixels: int) -> Iterator[Image.Image]:
    """PIL's lazy open (header only), refused past ``max_pixels`` before anything is decoded."""
    try:
        img = Image.open(path)
    except Image.DecompressionBombError:  # past PIL's hard cap, which max_pixels never exceeds
        raise ImageRefusedError(
            f"image of more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels: over the "
            f"dataset's limit of {max_pixels:,} (max_pixels)"
        ) from None
    with img:
        _check_pixels(img.size, max_pixels)
        yield img


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width * height > max_pixels:
        raise ImageRefusedError(
            f"image of {width}×{height} = {width * height:,} pixels: over the dataset's limit "
            f"of {max_pixels:,} (max_pixels)"
        )


_PNG_START = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"  # signature, then the IHDR chunk
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def _decode_png(
    path: str, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor | None:
    """OpenCV's decode of a complete 8-bit gray or RGB PNG; None where PIL must decide."""
    with open(path, "rb", buffering=0) as file:
        data = file.readall()
    if not data.startswith(_PNG_START) or not data.endswith(_PNG_END):
        return None  # truncated or not a PNG: PIL gives the precise error
    _check_pixels(struct.unpack(">II", data[16:24]), max_pixels)  # IHDR: width, height
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint8:
        return None  # damaged, or 16-bit (PIL's path scales it)
    if array.ndim == 2:  # gray (also 1/2/4-bit and palette-free gray with tRNS, as PIL reads them)
        gray = torch.from_numpy(array)[None]
        return gray if channels == 1 else gray.repeat(3, 1, 1)
    if array.shape[2] == 3 and channels == 3:  # OpenCV gives BGR
        return torch.from_numpy(np.ascontiguousarray(array[:, :, ::-1])).permute(2, 0, 1)
    return None  # alpha (composited by PIL's path) or colour to gray (PIL's luma rounding)


def to_mode(img: Image.Image, channels: int = 3) -> Image.Image:
    """Convert a decoded image of any mode to ``L`` or ``RGB``."""
    target = "L" if channels == 1 else "RGB"
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _high_depth_to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(target)


def _high_depth_to_8bit(img: Image.Image) -> Image.Image:
    array = np.asarray(img)
    if img.mode == "F":
        lo, hi = float(array.min()), float(array.max())
        scaled = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    else:  # 16-bit integer data, possibly stored in a 32-bit mode
        scaled = array.astype(np.float64) / 65535.0
    return Image.fromarray(np.clip(scaled * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


class ImageDataset(torch.utils.data.Dataset[Sample]):
    """A list of (relative path, class index) under one root folder.

    Every read of an image, for evaluation or display, goes through :meth:`load` and takes the
    same decision: the file must be a regular file whose resolved target lies under ``root`` or
    one of ``link_roots``, with at most ``max_pixels`` pixels, and it must decode.
    """

    def __init__(
        self,
        name: str,
        root: Path,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Callable[[Any], torch.Tensor] | None = None,
        channels: int = 3,
        tensors: bool = False,
        link_roots: Sequence[Path] = (),
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.name = name
        self.root = root
        self.samples = list(samples)
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
        self._listed = frozenset(rel for rel, _ in self.samples)
        self._folders: dict[str, str] = {}  # folder -> its real path (see _real)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        rel, label = self.samples[index]
        try:
            if self.tensors or not self.transform:
                tensor = self.load(rel)
                tensor = self.transform(tensor) if self.transform else tensor
            else:
                tensor = self.transform(self.image(rel, self.channels))
        except Exception as exc:  # a corrupt or refused file must not stop the evaluation
            return Sample(index, label, None, reason_of(exc))
        return Sample(index, label, tensor)

    def with_transform(
        self, transform: Callable[[Any], torch.Tensor], channels: int, tensors: bool = False
    ) -> ImageDataset:
        """The same files, fed through another transform (given uint8 tensors if ``tensors``)."""
        return ImageDataset(
            self.name,
            self.root,
            self.samples,
            self.classes,
            transform,
            channels,
            tensors,
            self.link_roots,
            self.max_pixels,
        )

    def load(self, rel: str, channels: int | None = None) -> torch.Tensor:
        """The listed image ``rel`` as a uint8 tensor [C, H, W]: the one decode of an image.

        Raises :class:`ImageRefusedError` (not listed, missing, not a regular file, linked
        outside the allowed folders, too large) or the decoder's error for a damaged file.
        """
        return load_tensor(self._file(rel), channels or self.channels, self.max_pixels)

    def image(self, rel: str, channels: int = 3) -> Image.Image:
        """:meth:`load` as a PIL image (``L`` or ``RGB``), for display."""
        array = self.load(rel, channels).permute(1, 2, 0).numpy()
        return Image.fromarray(array[:, :, 0] if channels == 1 else array)

    def path(self, rel: str) -> Path:
        """The resolved path of a listed file that may be read (see :meth:`load`)."""
        return Path(self._file(rel))

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

    def fingerprint(self) -> str:
        """A hash of the read limits, the class list and every file's path, size and mtime."""
        limits = (self.classes, [os.fspath(p) for p in self.link_roots], self.max_pixels)
        digest = hashlib.sha256(repr(limits).encode())
        root = os.path.join(self._root, "")
        for rel, label in self.samples:
            try:
                st = os.stat(root + rel)  # a string join: this runs once per file
                digest.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{rel}\0{label}\0missing\n".encode())
        return digest.hexdigest()


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def dataset_key(spec: DatasetSpec) -> str:
    """A stable identity of a dataset (its root and manifest), for keying notes and tags.

    Unlike :meth:`ImageDataset.fingerprint` it does not change when a file is added or edited,
    so notes written on an image are never orphaned by an unrelated change.
    """
    where = f"{spec.root.resolve()}\0{spec.csv.resolve() if spec.csv else ''}"
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
    if not spec.root.is_dir():
        raise DatasetError(f"dataset {spec.name!r}: folder not found: {spec.root}")
    if spec.csv is not None:
        samples, names = _from_manifest(spec, explicit)
    else:
        samples, names = _from_folders(spec, explicit)
    if not samples:
        raise DatasetError(
            f"dataset {spec.name!r} has no images under {spec.root} "
            f"(looked for {', '.join(EXTENSIONS)})"
        )
    return ImageDataset(
        spec.name,
        spec.root,
        samples,
        names,
        link_roots=spec.link_roots,
        max_pixels=spec.max_pixels,
    )


def _from_folders(
    spec: DatasetSpec, explicit: list[str] | None
) -> tuple[list[tuple[str, int]], list[str]]:
    try:
        folders, _ = find_classes(str(spec.root))
    except FileNotFoundError:
        raise DatasetError(
            f"dataset {spec.name!r}: {spec.root} has no class sub-folders (expected an "
            "ImageFolder tree: root/<class>/<image>)"
        ) from None
    names = explicit or folders
    extra = sorted(set(folders) - set(names))
    if extra:
        raise DatasetError(
            f"dataset {spec.name!r}: folder(s) {extra} are not in the class list {names}"
        )
    class_to_idx = {name: i for i, name in enumerate(names) if name in folders}
    found = make_dataset(str(spec.root), class_to_idx, EXTENSIONS, allow_empty=True)
    # links are listed like files; ImageDataset.load decides whether their target may be read
    cut = len(os.path.join(str(spec.root), ""))  # strings, not pathlib: 1M files in seconds
    samples = [(path[cut:].replace(os.sep, "/"), label) for path, label in found]
    return samples, names


def _from_manifest(
    spec: DatasetSpec, explicit: list[str] | None
) -> tuple[list[tuple[str, int]], list[str]]:
    assert spec.csv is not None
    try:
        with spec.csv.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DatasetError(f"dataset {spec.name!r}: cannot read {spec.csv}: {exc}") from None
    if rows and not {"path", "label"} <= set(rows[0]):
        raise DatasetError(
            f"dataset {spec.name!r}: {spec.csv} needs the columns path,label; found {list(rows[0])}"
        )
    names = explicit or sorted({row["label"] for row in rows})
    index = {name: i for i, name in enumerate(names)}
    samples = []
    root = os.fspath(spec.root)
    for line, row in enumerate(rows, start=2):
        if row["label"] not in index:
            raise DatasetError(
                f"dataset {spec.name!r}: {spec.csv.name} line {line}: label {row['label']!r} is "
                f"not in the class list {names}"
            )
        # kept as written (normalised): a path that leaves the root, or is no file, is listed
        # and skipped with its reason when read, like any other unreadable file
        rel = os.path.relpath(os.path.normpath(os.path.join(root, row["path"] or "")), root)
        samples.append((Path(rel).as_posix(), index[row["label"]]))
    return samples, names

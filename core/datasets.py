"""Labelled test sets: an ImageFolder tree or a CSV manifest (``path,label``).

Images of any common mode (grayscale, palette, RGBA, 16-bit) are converted to what the
model takes. A file that cannot be decoded is not fatal: it is skipped and reported with its
path and the reason.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from core.config import DatasetSpec
from core.errors import DatasetError

__all__ = [
    "ImageDataset",
    "Sample",
    "dataset_key",
    "load_image",
    "load_tensor",
    "open_dataset",
    "resolve_inside",
]

EXTENSIONS = tuple(sorted({*IMG_EXTENSIONS, ".tif", ".tiff", ".gif"}))


@dataclass(frozen=True)
class Sample:
    """What the dataset yields for one file: a tensor, or the reason it could not be read."""

    index: int
    label: int
    image: torch.Tensor | None
    error: str | None = None


def load_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Open an image as mode ``L`` (channels=1) or ``RGB`` (channels=3).

    16-bit and float images are scaled to 8 bits (PIL's own conversion would clip them);
    transparent images are composited over white, as a viewer shows them.
    """
    with Image.open(path) as img:
        img.load()
        return to_mode(img, channels)


def load_tensor(path: str | Path, channels: int = 3) -> torch.Tensor:
    """Decode an image file to a uint8 tensor [channels, H, W]: the pixels of :func:`load_image`.

    Complete 8-bit grayscale and RGB PNGs are decoded by OpenCV, two to three times faster than
    PIL on small files, with identical pixels (PNG is lossless). Everything else, including any
    PNG that OpenCV cannot read exactly as PIL would, goes through :func:`load_image`, whose
    errors name the problem.
    """
    path = os.fspath(path)
    fast = _decode_png(path, channels) if path[-4:].lower() == ".png" else None
    return fast if fast is not None else _to_tensor(load_image(path, channels))


_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk every complete PNG ends with


def _decode_png(path: str, channels: int) -> torch.Tensor | None:
    """OpenCV's decode of a complete 8-bit gray or RGB PNG; None where PIL must decide."""
    with open(path, "rb", buffering=0) as file:
        data = file.readall()
    if not data.endswith(_PNG_END):
        return None  # truncated or not a PNG: PIL gives the precise error
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
    """A list of (relative path, class index) under one root folder."""

    def __init__(
        self,
        name: str,
        root: Path,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Callable[[Any], torch.Tensor] | None = None,
        channels: int = 3,
        tensors: bool = False,
    ) -> None:
        self.name = name
        self.root = root
        self.samples = list(samples)
        self.classes = list(classes)
        self.transform = transform
        self.channels = channels
        self.tensors = tensors
        self._root = os.fspath(root)
        self._listed = frozenset(rel for rel, _ in self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Sample:
        rel, label = self.samples[index]
        path = os.path.join(self._root, rel)  # not pathlib: this runs once per image
        try:
            if self.tensors or not self.transform:
                tensor = load_tensor(path, self.channels)
                tensor = self.transform(tensor) if self.transform else tensor
            else:
                tensor = self.transform(load_image(path, self.channels))
        except Exception as exc:  # a corrupt file must not stop the evaluation
            return Sample(index, label, None, f"{type(exc).__name__}: {exc}")
        return Sample(index, label, tensor)

    def with_transform(
        self, transform: Callable[[Any], torch.Tensor], channels: int, tensors: bool = False
    ) -> ImageDataset:
        """The same files, fed through another transform (given uint8 tensors if ``tensors``)."""
        return ImageDataset(
            self.name, self.root, self.samples, self.classes, transform, channels, tensors
        )

    def path(self, rel: str) -> Path:
        """The absolute path of a listed file; refuses anything that is not listed."""
        if rel not in self._listed:
            raise DatasetError(f"{rel!r} is not an image of dataset {self.name!r}")
        return resolve_inside(self.root, rel)

    def fingerprint(self) -> str:
        """A hash of the class list and every file's path, size and mtime."""
        digest = hashlib.sha256(repr(self.classes).encode())
        for rel, label in self.samples:
            try:
                st = os.stat(self.root / rel)
                digest.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{rel}\0{label}\0missing\n".encode())
        return digest.hexdigest()


def _to_tensor(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def resolve_inside(root: Path, rel: str | Path) -> Path:
    """``root / rel`` with symlinks resolved; raises if the result escapes ``root``."""
    root = root.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise DatasetError(f"path {str(rel)!r} escapes the dataset root {root}")
    return path


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
    return ImageDataset(spec.name, spec.root, samples, names)


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
    root = spec.root.resolve()
    samples = []
    for path, label in found:
        resolve_inside(root, Path(path).relative_to(spec.root))  # refuses escaping symlinks
        samples.append((Path(path).relative_to(spec.root).as_posix(), label))
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
    for line, row in enumerate(rows, start=2):
        where = f"dataset {spec.name!r}: {spec.csv.name} line {line}"
        if row["label"] not in index:
            raise DatasetError(f"{where}: label {row['label']!r} is not in the class list {names}")
        try:
            path = resolve_inside(spec.root, row["path"])
        except DatasetError as exc:
            raise DatasetError(f"{where}: {exc}") from None
        samples.append((path.relative_to(spec.root.resolve()).as_posix(), index[row["label"]]))
    return samples, names

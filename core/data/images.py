"""Decoding one image file: to a PIL image for display, or a uint8 tensor for a model.

Images of any common mode (grayscale, palette, RGBA, 16-bit) are converted to what the model
takes; an image of more than ``max_pixels`` pixels is refused from its header, undecoded.
Listing and fingerprinting a dataset (:mod:`core.data.datasets`) never import this module, so a
cache hit never pays for importing OpenCV; torch is imported only to make tensors, so drawing
stored maps over images needs none.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from core.config import DEFAULT_MAX_PIXELS
from core.errors import ImageRefusedError

if TYPE_CHECKING:  # imported by the functions that make tensors: drawing a page needs none
    import torch

__all__ = ["Sample", "decode_array", "load_array", "load_image", "load_tensor", "to_mode"]


@dataclass(frozen=True)
class Sample:
    """What the dataset yields for one file: a tensor, or the reason it could not be read."""

    index: int
    label: int
    image: torch.Tensor | None
    error: str | None = None
    properties: np.ndarray | None = None  # float64 [P] (core.data.properties), when measured


def load_image(
    path: str | Path | io.BytesIO, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """Open an image as mode ``L`` (channels=1) or ``RGB`` (channels=3).

    16-bit and float images are scaled to 8 bits (PIL's own conversion would clip them);
    transparent images are composited over white, as a viewer shows them. An image of more than
    ``max_pixels`` pixels (read from its header) raises :class:`ImageRefusedError` undecoded.
    """
    with _open_within(path, max_pixels) as img:
        img.load()
        return to_mode(img, channels)


def load_array(
    path: str | Path, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode an image file to a uint8 array [H, W, channels]: the pixels of :func:`load_image`,
    and the one read decision behind both evaluation and display.

    Complete 8-bit grayscale and RGB PNGs are decoded by OpenCV, two to three times faster than
    PIL on small files, with identical pixels (PNG is lossless). Everything else, including any
    PNG that OpenCV cannot read exactly as PIL would, goes through :func:`load_image`, whose
    errors name the problem. Both paths check ``max_pixels`` against the header first.
    """
    path = os.fspath(path)
    fast = _decode_png(path, channels, max_pixels) if path[-4:].lower() == ".png" else None
    return fast if fast is not None else _to_array(load_image(path, channels, max_pixels))


def decode_array(
    data: bytes, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """:func:`load_array` of an encoded image held in memory (e.g. a Parquet cell): the same
    decoders, the same pixels, ``max_pixels`` checked against the header first."""
    fast = _decode_png_data(data, channels, max_pixels)
    return (
        fast if fast is not None else _to_array(load_image(io.BytesIO(data), channels, max_pixels))
    )


def load_tensor(
    path: str | Path, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """:func:`load_array` as a uint8 tensor [channels, H, W] (a view: no copy), for a model."""
    import torch

    return torch.from_numpy(load_array(path, channels, max_pixels)).permute(2, 0, 1)


@contextmanager
def _open_within(path: str | Path | io.BytesIO, max_pixels: int) -> Iterator[Image.Image]:
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
) -> np.ndarray | None:
    """OpenCV's decode of a complete 8-bit gray or RGB PNG as [H, W, channels]; None where PIL
    must decide."""
    with open(path, "rb", buffering=0) as file:
        data = file.readall()
    return _decode_png_data(data, channels, max_pixels)


def _decode_png_data(
    data: bytes, channels: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray | None:
    """:func:`_decode_png` of a file's bytes."""
    if not data.startswith(_PNG_START) or not data.endswith(_PNG_END):
        return None  # truncated or not a PNG: PIL gives the precise error
    _check_pixels(struct.unpack(">II", data[16:24]), max_pixels)  # IHDR: width, height
    array = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None or array.dtype != np.uint8:
        return None  # damaged, or 16-bit (PIL's path scales it)
    if array.ndim == 2:  # gray (also 1/2/4-bit and palette-free gray with tRNS, as PIL reads them)
        return array[:, :, None] if channels == 1 else np.repeat(array[:, :, None], 3, axis=2)
    if array.shape[2] == 3 and channels == 3:  # OpenCV gives BGR
        return np.ascontiguousarray(array[:, :, ::-1])
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


def _to_array(image: Image.Image) -> np.ndarray:
    array = np.asarray(image, dtype=np.uint8)
    return np.array(array[:, :, None] if array.ndim == 2 else array)  # a writable copy

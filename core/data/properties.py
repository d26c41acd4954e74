"""Image properties, measured in the evaluation pass from the pixels it decodes anyway.

For every image (cleanvision's checks, computed with OpenCV):

| property | kind | how |
|---|---|---|
| ``width``, ``height`` | numeric | pixels of the decoded file |
| ``aspect_ratio`` | numeric | width / height |
| ``file_size`` | numeric | bytes of the encoded image (as listed; a table cell's bytes) |
| ``format`` | categorical | :data:`FORMATS`, from the extension (a table cell's bytes) |
| ``brightness`` | numeric | mean luma / 255, in [0, 1] |
| ``contrast`` | numeric | standard deviation of the luma / 255 |
| ``sharpness`` | numeric | variance of the luma's Laplacian (``cv2.Laplacian``, 3×3, 0–255 scale) |
| ``grayscale`` | categorical | ``yes`` where no pixel's channels differ by more than 2 levels |

Luma is ``cv2.cvtColor(RGB2GRAY)`` (0.299 R + 0.587 G + 0.114 B). Brightness, contrast,
sharpness and grayscale are measured on the image the model is given: decoded, resized (and
cropped) to its input size, as uint8, before normalisation. That is the cheapest place (a
fixed, small size, whatever the files' size) and what the model sees; a large photo's
sharpness therefore describes it at the model's resolution. A model with ``channels = 1``
is given grey images, so all of them are ``grayscale``.

Stored as float64 [N, len(:data:`PROPERTIES`)]; a categorical property holds its code (an
index into :data:`FORMATS` or ``("no", "yes")``), NaN where not measured.
"""

from __future__ import annotations

import os

import numpy as np

from core.data.metadata import Column

__all__ = [
    "CATEGORIES",
    "FORMATS",
    "PROPERTIES",
    "format_of_bytes",
    "format_of_name",
    "measure",
    "property_columns",
]

PROPERTIES = (
    "width",
    "height",
    "aspect_ratio",
    "file_size",
    "format",
    "brightness",
    "contrast",
    "sharpness",
    "grayscale",
)
FORMATS = ("png", "jpeg", "gif", "bmp", "tiff", "webp", "pnm", "other")
#: The categorical properties and their values (codes index these).
CATEGORIES = {"format": FORMATS, "grayscale": ("no", "yes")}
GRAY_TOLERANCE = 2  # grey levels a grey image's channels may differ by (JPEG colour rounding)

_EXTENSIONS = {
    ".png": 0, ".jpg": 1, ".jpeg": 1, ".gif": 2, ".bmp": 3, ".tif": 4, ".tiff": 4,
    ".webp": 5, ".pgm": 6, ".ppm": 6, ".pbm": 6, ".pnm": 6,
}  # fmt: skip
_MAGIC = (
    (b"\x89PNG", 0), (b"\xff\xd8\xff", 1), (b"GIF8", 2), (b"BM", 3), (b"II*\x00", 4),
    (b"MM\x00*", 4), (b"P1", 6), (b"P2", 6), (b"P3", 6), (b"P4", 6), (b"P5", 6), (b"P6", 6),
)  # fmt: skip


def format_of_name(path: str) -> int:
    """The format code of a file name, from its extension."""
    return _EXTENSIONS.get(os.path.splitext(path)[1].lower(), len(FORMATS) - 1)


def format_of_bytes(data: bytes) -> int:
    """The format code of an encoded image, from its first bytes."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return 5
    return next((code for magic, code in _MAGIC if data.startswith(magic)), len(FORMATS) - 1)


def measure(pixels: np.ndarray, width: int, height: int, size: float, kind: int) -> np.ndarray:
    """The properties (float64, in :data:`PROPERTIES` order) of one image: ``pixels`` the uint8
    [C, H, W] the model is given (C = 1 or 3), ``width`` × ``height`` the decoded file's size,
    ``size`` its encoded bytes and ``kind`` its format code."""
    import cv2

    planes = [np.ascontiguousarray(plane) for plane in pixels]  # views of a contiguous CHW
    if len(planes) == 1:
        luma, gray = planes[0], True
    else:  # OpenCV on the planes: numpy's reductions over a 3-wide axis cost 100 times more
        luma = cv2.cvtColor(cv2.merge(planes), cv2.COLOR_RGB2GRAY)
        pairs = ((0, 1), (1, 2), (0, 2))
        spread = max(cv2.norm(planes[a], planes[b], cv2.NORM_INF) for a, b in pairs)
        gray = spread <= GRAY_TOLERANCE
    mean, std = cv2.meanStdDev(luma)
    _, lap_std = cv2.meanStdDev(cv2.Laplacian(luma, cv2.CV_16S))
    return np.array(
        [
            width,
            height,
            width / height if height else np.nan,
            size,
            kind,
            float(mean[0, 0]) / 255.0,
            float(std[0, 0]) / 255.0,
            float(lap_std[0, 0]) ** 2,
            float(gray),
        ],
        dtype=np.float64,
    )


def property_columns(values: np.ndarray) -> list[Column]:
    """Stored properties [rows, P] as columns (categorical ones as codes, -1 missing)."""
    out = []
    for i, name in enumerate(PROPERTIES):
        column = np.asarray(values[:, i], dtype=np.float64)
        if name in CATEGORIES:
            codes = np.where(np.isnan(column), -1, column).astype(np.int32)
            out.append(Column(name, "categorical", codes, CATEGORIES[name]))
        else:
            out.append(Column(name, "numeric", column))
    return out

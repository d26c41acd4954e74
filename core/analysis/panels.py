"""Gallery panels: an image, or the image with a CAM blended on, as an inline data URL.

A page of the cell view shows three panels per image. Encoding them is the costly part of a
page once its maps are cached, so :class:`PanelCache` keeps the encoded panels for every
session of a server, keyed by the file (path and mtime: an edited file is re-read, never shown
stale), the map's content and the opacity. Images are read through the dataset's own
:meth:`~core.data.datasets.ImageDataset.load`, so what evaluated displays, and what was refused is
refused here with the same reason. Data URLs travel inside the page's own message, so
the browser fetches nothing more.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np
from PIL import Image

from core.data.datasets import ImageDataset
from core.explain.overlay import overlay

__all__ = ["PanelCache", "data_url", "enlarge", "panel_png", "panel_url"]

DISPLAY_PX = 150  # smaller images are enlarged (nearest neighbour) to at least this size
JPEG_FROM_PX = 96  # panels this large or larger are sent as JPEG


def enlarge(image: Image.Image, at_least: int = DISPLAY_PX) -> Image.Image:
    """``image`` scaled up by a whole factor (nearest neighbour) to a long side ≥ ``at_least``."""
    side = max(image.size)
    if side >= at_least:
        return image
    factor = -(-at_least // side)
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def panel_png(image: Image.Image, cam_map: np.ndarray | None = None, alpha: float = 0.5) -> bytes:
    """PNG bytes of ``image``, or of ``image`` with ``cam_map`` blended on at opacity ``alpha``."""
    return _encode(_panel(image, cam_map, alpha), "PNG")


def data_url(data: bytes, kind: str = "png") -> str:
    """``data:image/<kind>;base64,...`` for encoded image bytes."""
    return f"data:image/{kind};base64," + base64.b64encode(data).decode("ascii")


def panel_url(image: Image.Image, cam_map: np.ndarray | None = None, alpha: float = 0.5) -> str:
    """A panel as a data URL: lossless WebP (exact pixels) for small images, JPEG (q90) from
    ``JPEG_FROM_PX`` pixels on, where a page of lossless photos would weigh megabytes.

    WebP rather than PNG: on the digits sample a page's panels are 40 % smaller (1.1 kB
    against 1.8 kB each), and a first click's page completes 50–90 ms sooner in Chromium on
    two cores (``bench/click.py``); encoding costs 0.45 ms a panel instead of 0.2 ms.
    """
    shown = _panel(image, cam_map, alpha)
    if max(shown.size) >= JPEG_FROM_PX:
        return data_url(_encode(shown.convert("RGB"), "JPEG"), "jpeg")
    return data_url(_encode(shown, "WEBP"), "webp")


def _panel(image: Image.Image, cam_map: np.ndarray | None, alpha: float) -> Image.Image:
    return image if cam_map is None else overlay(image, cam_map, alpha=alpha)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=90)
    elif fmt == "WEBP":  # the fastest lossless settings that still compress well
        image.save(buffer, format="WEBP", lossless=True, method=1, quality=25)
    else:
        image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class PanelCache:
    """Thread-safe LRU of panel data URLs, bounded by their total size.

    Panels keep the image's own size: a browser scales small images up itself (CSS
    ``image-rendering: pixelated``) with fewer bytes on the wire.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._urls: OrderedDict[Hashable, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._urls)

    def panels(
        self, dataset: ImageDataset, rel: str, maps: list[np.ndarray | None], alpha: float
    ) -> list[str]:
        """Data URLs of image ``rel`` of ``dataset`` and of one overlay per map (RGB, in order).

        Raises :class:`~core.errors.ImageRefusedError` or the decoder's error when the image
        cannot be read (checked on every call, cached or not).
        """
        path = str(dataset.path(rel))
        mtime = os.stat(path).st_mtime_ns
        image_id = (path, rel)  # rel: a row of a table file, whose path names the whole file
        keys = [(image_id, mtime, None, 0.0)] + [
            (image_id, mtime, _digest(m), float(alpha)) if m is not None else None for m in maps
        ]
        found = [self._get(k) if k is not None else "" for k in keys]
        if any(url is None for url in found):
            image = dataset.image(rel, 3)
            for i, key in enumerate(keys):
                if found[i] is None and key is not None:
                    cam_map = None if i == 0 else maps[i - 1]
                    found[i] = self._put(key, panel_url(image, cam_map, alpha))
        return [url or "" for url in found]

    def _get(self, key: Hashable) -> str | None:
        with self._lock:
            url = self._urls.get(key)
            if url is not None:
                self._urls.move_to_end(key)
            return url

    def _put(self, key: Hashable, url: str) -> str:
        with self._lock:
            if key not in self._urls:
                self._urls[key] = url
                self._bytes += len(url)
            while self._bytes > self.max_bytes and len(self._urls) > 1:
                _, old = self._urls.popitem(last=False)
                self._bytes -= len(old)
            return self._urls.get(key, url)


def _digest(cam_map: np.ndarray) -> bytes:
    arr = np.ascontiguousarray(cam_map, dtype=np.float32)
    return hashlib.blake2b(
        arr.tobytes(), digest_size=16, person=str(arr.shape).encode()[:16]
    ).digest()

"""The report's pictures: each image with its predicted- and true-class maps, as WebP.

Maps come from the result's stored raw maps (no model), normalised as the dashboard draws
them (:func:`core.explain.normalise.display_maps`) and blended as its panels are
(:func:`core.explain.overlay.overlay`). Images are shrunk to at most :data:`THUMB_PX` on the
long side (small ones are kept and scaled up by the browser, pixelated) and encoded as WebP:
lossless below :data:`LOSSY_FROM_PX`, lossy (quality :data:`QUALITY`) from there on. A report
of 600 images and their maps stays a few megabytes. Each image is decoded and encoded once per
report, however many sections show it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from core.analysis.gallery import stored_size
from core.corrections import evaluated_positions, manifest_rows
from core.data.datasets import ImageDataset
from core.errors import reason_of
from core.explain.normalise import display_maps
from core.explain.overlay import colormap_lut, overlay
from core.results import Results

__all__ = ["LOSSY_FROM_PX", "QUALITY", "THUMB_PX", "Card", "Painter", "Picture", "heat_picture"]

THUMB_PX = 160  # long side of a panel in the report
LOSSY_FROM_PX = 96  # panels this large or larger are lossy WebP
QUALITY = 80
ALPHA = 0.5  # the maps' opacity, as the dashboard's default


@dataclass(frozen=True)
class Picture:
    """An encoded image: ``data`` in format ``kind`` ("webp"), its size and a file name."""

    data: bytes
    width: int
    height: int
    kind: str = "webp"

    @property
    def name(self) -> str:
        """A file name from the content (the Markdown report's images/ folder)."""
        return hashlib.blake2b(self.data, digest_size=10).hexdigest() + "." + self.kind


@dataclass(frozen=True)
class Card:
    """One image of a section: its labels, and its panels (title, picture) or why none."""

    path: str
    label: str  # the dataset's label (class name); '' when the evaluation has no such image
    pred: str
    confidence: float | None
    corrected: str  # the team's corrected label, '' if none
    panels: tuple[tuple[str, Picture], ...]
    problem: str = ""


class Painter:
    """Cards for the images of one result, each image read and encoded once."""

    def __init__(
        self,
        result: Results,
        dataset: ImageDataset,
        corrected: dict[str, str] | None = None,
        maps: bool = True,
    ) -> None:
        self.result, self.dataset = result, dataset
        self.corrected = corrected or {}
        self.maps = maps and result.has_maps
        self.size = stored_size(result)
        self._cards: dict[tuple[str, bool], Card] = {}

    def cards(self, paths: Sequence[str], with_maps: bool = True) -> list[Card]:
        """A card per path, in order: the image and, with ``with_maps``, its predicted-class
        map and its true-class map (the runner-up's where the prediction is right)."""
        todo = [p for p in dict.fromkeys(paths) if (p, with_maps) not in self._cards]
        if todo:
            rows = manifest_rows(self.result, todo)
            at = evaluated_positions(self.result, rows)
            drawn = self._maps(rows, at) if with_maps and self.maps else {}
            for i, path in enumerate(todo):
                key = (path, with_maps)
                self._cards[key] = self._card(path, int(rows[i]), int(at[i]), drawn.get(i))
        return [self._cards[(p, with_maps)] for p in paths]

    def _maps(self, rows: np.ndarray, at: np.ndarray) -> dict[int, np.ndarray]:
        """Display maps [2, H, W] of the evaluated ones among ``rows``, by position."""
        ok = np.flatnonzero(at >= 0)
        if not len(ok):
            return {}
        raw = self.result.maps(rows[ok])
        size = self.size or (raw.shape[-2], raw.shape[-1])
        shown = display_maps(raw, size)
        return {int(i): shown[j] for j, i in enumerate(ok)}

    def _card(self, path: str, row: int, at: int, maps: np.ndarray | None) -> Card:
        names = self.result.classes
        corrected = self.corrected.get(path, "")
        if row < 0:
            return Card(path, "", "", None, corrected, (), "not in this evaluation")
        label = names[int(self.result.manifest.column("label")[row].as_py())]
        if at < 0:
            return Card(path, label, "", None, corrected, (), "skipped by the evaluation")
        pred_index = int(self.result.pred[at])
        pred = names[pred_index]
        confidence = float(self.result.columns["confidence"][row])
        try:
            image = _thumbnail(self.dataset.image(path, 3))
        except Exception as exc:  # a file changed or refused since: that card alone says so
            return Card(path, label, pred, confidence, corrected, (), reason_of(exc))
        panels = [("image", encode(image))]
        if maps is not None:
            other = label if pred != label else names[int(self.result.columns["runner_up"][row])]
            second = f"true: {other}" if pred != label else f"runner-up: {other}"
            panels.append((f"predicted: {pred}", encode(overlay(image, maps[0], ALPHA))))
            panels.append((second, encode(overlay(image, maps[1], ALPHA))))
        return Card(path, label, pred, confidence, corrected, tuple(panels))


def _thumbnail(image: Image.Image) -> Image.Image:
    if max(image.size) <= THUMB_PX:
        return image
    shown = image.copy()
    shown.thumbnail((THUMB_PX, THUMB_PX), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return shown


def encode(image: Image.Image) -> Picture:
    """WebP bytes of ``image``: lossless when small, lossy from :data:`LOSSY_FROM_PX`."""
    buffer = io.BytesIO()
    if max(image.size) >= LOSSY_FROM_PX:
        image.convert("RGB").save(buffer, format="WEBP", quality=QUALITY, method=1)
    else:
        image.save(buffer, format="WEBP", lossless=True, method=1, quality=25)
    return Picture(buffer.getvalue(), image.width, image.height)


def heat_picture(values: np.ndarray, side: int = 96) -> Picture:
    """A map (any non-negative [h, w] array) min-max scaled and coloured like the overlays,
    enlarged to ``side`` pixels (bilinear): a pattern's mean map."""
    arr = np.nan_to_num(np.asarray(values, dtype=np.float32))
    low, high = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    scaled = (arr - low) / (high - low) if high > low else np.zeros_like(arr)
    big = Image.fromarray(scaled).resize((side, side), Image.Resampling.BILINEAR)
    index = np.rint(np.asarray(big).clip(0, 1) * 255).astype(np.intp)
    return encode(Image.fromarray(colormap_lut("Inferno")[index]))

"""The image operations of the causal test (:mod:`core.analysis.causal`), on uint8 arrays.

Images are NumPy uint8 ``[n, H, W, C]`` at the model's input size (the evaluation's own read
and resize, before normalisation); boxes are pixels ``(x0, y0, x1, y1)`` with exclusive ends
(``image[y0:y1, x0:x1]``). Pasting is vectorised; erasing is OpenCV's Telea inpainting, one
image at a time. :func:`classify` runs the model on such images in batches, channels-last, in
inference mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from core.data.datasets import ImageDataset
from core.errors import reason_of

if TYPE_CHECKING:
    from core.data.models import LoadedModel

__all__ = [
    "INPAINT_RADIUS",
    "Box",
    "classify",
    "control_corners",
    "erase",
    "outline",
    "paste",
    "pixel_box",
    "read_inputs",
    "spread_sample",
]

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, exclusive ends
INPAINT_RADIUS = 3  # pixels around each inpainted point that Telea's method reads


def pixel_box(box: Sequence[float], size: Sequence[int]) -> Box:
    """A box in input fractions ``(x0, y0, x1, y1)`` as whole pixels of an input of ``size``
    (height, width): every pixel the box touches, at least one."""
    height, width = (int(s) for s in size)
    x0, y0, x1, y1 = (float(v) for v in box)
    eps = 1e-6  # 0.75 * 64 stays 48 however the fraction was rounded
    left = min(max(int(np.floor(x0 * width + eps)), 0), width - 1)
    top = min(max(int(np.floor(y0 * height + eps)), 0), height - 1)
    right = min(max(int(np.ceil(x1 * width - eps)), left + 1), width)
    bottom = min(max(int(np.ceil(y1 * height - eps)), top + 1), height)
    return left, top, right, bottom


def control_corners(
    box: Box, size: Sequence[int], count: int, rng: np.random.Generator
) -> np.ndarray:
    """int64 ``[count, 2]`` (x, y) top-left corners of same-size boxes placed uniformly at random
    in an image of ``size`` (height, width) among the places that overlap ``box`` least: never
    overlapping it where the image leaves room, else as little as it can."""
    height, width = (int(s) for s in size)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    lefts, tops = np.arange(width - w + 1), np.arange(height - h + 1)
    over_x = np.clip(np.minimum(lefts + w, x1) - np.maximum(lefts, x0), 0, None)
    over_y = np.clip(np.minimum(tops + h, y1) - np.maximum(tops, y0), 0, None)
    overlap = (over_y[:, None] * over_x[None, :]).ravel()
    places = np.flatnonzero(overlap == overlap.min())
    picked = places[rng.integers(len(places), size=count)]
    top, left = np.divmod(picked, len(lefts))
    return np.stack([lefts[left], tops[top]], 1).astype(np.int64)


def paste(
    targets: np.ndarray, sources: np.ndarray, box: Box, cut_at: np.ndarray | None = None
) -> np.ndarray:
    """Copies of ``targets`` [n, H, W, C] with ``box`` replaced by the same-size patch of
    ``sources`` [n, H, W, C] whose top-left corner is ``cut_at[i]`` (x, y) in source ``i``
    (default: the box's own place)."""
    x0, y0, x1, y1 = box
    out = np.array(targets, copy=True)
    if cut_at is None:
        out[:, y0:y1, x0:x1] = sources[:, y0:y1, x0:x1]
        return out
    n = len(targets)
    cols = cut_at[:, 0, None] + np.arange(x1 - x0)[None, :]  # [n, w]
    rows = cut_at[:, 1, None] + np.arange(y1 - y0)[None, :]  # [n, h]
    out[:, y0:y1, x0:x1] = sources[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]
    return out


def erase(images: np.ndarray, box: Box, at: np.ndarray | None = None) -> np.ndarray:
    """Copies of ``images`` [n, H, W, C] with a box the size of ``box`` inpainted (OpenCV's
    ``cv2.inpaint``, Telea's method, radius :data:`INPAINT_RADIUS`): at ``box`` itself, or with
    its top-left corner at ``at[i]`` (x, y) in image ``i``."""
    import cv2

    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    out = np.empty_like(images)
    mask = np.zeros(images.shape[1:3], np.uint8)
    for i, image in enumerate(images):
        left, top = (x0, y0) if at is None else (int(at[i, 0]), int(at[i, 1]))
        mask[:] = 0
        mask[top : top + h, left : left + w] = 255
        plane = np.ascontiguousarray(image[:, :, 0] if image.shape[2] == 1 else image)
        filled = cv2.inpaint(plane, mask, INPAINT_RADIUS, cv2.INPAINT_TELEA)
        out[i] = filled.reshape(image.shape)
    return out


def outline(
    image: np.ndarray, box: Box, colour: Sequence[int] = (255, 0, 255), width: int = 1
) -> np.ndarray:
    """A copy of ``image`` [H, W, C] with ``box`` outlined ``width`` pixels wide, inside it."""
    x0, y0, x1, y1 = box
    out = np.array(image, copy=True)
    paint = np.asarray(colour, np.uint8)[: out.shape[2]]
    if out.shape[2] == 1:
        paint = np.array([int(np.mean(colour))], np.uint8)
    out[y0 : y0 + width, x0:x1] = paint
    out[max(y1 - width, y0) : y1, x0:x1] = paint
    out[y0:y1, x0 : x0 + width] = paint
    out[y0:y1, max(x1 - width, x0) : x1] = paint
    return out


def spread_sample(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of up to ``count`` items, spread over the classes in ``labels``: a seeded
    round-robin, one random item of each class per round (the classes in a random order), so
    every class gives as many as it can and the counts of the others differ by at most one."""
    labels = np.asarray(labels, np.int64)
    if count <= 0 or not len(labels):
        return np.zeros(0, np.int64)
    shuffled = rng.permutation(len(labels))
    lab = labels[shuffled]
    order = np.argsort(lab, kind="stable")
    first = np.searchsorted(lab[order], lab[order], side="left")
    round_of = np.empty(len(lab), np.int64)
    round_of[order] = np.arange(len(lab)) - first  # how many of its class come before it
    ids = np.unique(lab)
    turn = np.empty(int(ids.max()) + 1, np.int64)
    turn[ids] = rng.permutation(len(ids))  # the classes' order within a round
    key = round_of * len(ids) + turn[lab]
    return shuffled[np.argsort(key, kind="stable")[:count]]


def read_inputs(
    model: LoadedModel, dataset: ImageDataset, paths: Sequence[str]
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """uint8 ``[n, H, W, C]`` of the readable ``paths`` at the input size (the evaluation's read
    and resize), their positions in ``paths``, and (path, reason) for the others."""
    arrays, kept, failed = [], [], []
    for i, path in enumerate(paths):
        try:
            image = model.resize(dataset.load(path, model.spec.channels))
            arrays.append(image.permute(1, 2, 0).numpy())
            kept.append(i)
        except Exception as exc:  # one bad file fails alone
            failed.append((path, reason_of(exc)))
    channels, height, width = model.input_shape
    if not arrays:
        return np.zeros((0, height, width, channels), np.uint8), kept, failed
    return np.stack(arrays), kept, failed


def classify(
    model: LoadedModel, images: np.ndarray, batch_size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class (int64) and its probability (float32) of uint8 images [n, H, W, C]:
    batched forward passes, channels-last where the model is, in inference mode."""
    import torch

    from core.explain.hooks import to_model, wants_channels_last

    channels_last = wants_channels_last(model.module)
    preds, probs = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            chunk = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2)
            x = to_model(model.module, model.normalize(chunk), channels_last)
            top = model.module(x).float().softmax(1).max(1)
            preds.append(top.indices.cpu().numpy())
            probs.append(top.values.cpu().numpy())
    if not preds:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(preds).astype(np.int64), np.concatenate(probs).astype(np.float32)

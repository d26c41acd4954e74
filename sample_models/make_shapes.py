"""A deterministic synthetic dataset with a planted shortcut: coloured shapes and a corner mark.

64×64 RGB images of five shapes (circle, cross, square, star, triangle; 16 to 26 pixels across)
with random colour, size, position and rotation on textured, noisy backgrounds. Every image of
one class (``star``) in the TRAINING data carries a small magenta 8×8 patch near the
bottom-right corner, where watermarks and time stamps sit (its right and bottom edges 2 to 5
pixels from the image's), and no other training image does, so a model can learn the mark
instead of the shape. Shapes never enter the corner zone ``[46, 64) × [46, 64)`` where marks go.

The bottom-right corner (rather than the top-left) also suits Grad-CAM: torchvision's stride-2
3×3 convolutions centre each output cell half an input pixel up and to the left of where the
bilinear upsampling draws it, so maps of an 8×8 layer are drawn about 3.5 pixels down and right
of what they describe; in the bottom-right corner that shift moves the map onto the mark.

The TEST split marks every ``star`` image and exactly a quarter of the images of each other
class. It is written as an ImageFolder tree of PNGs, ``shapes/test/<class>/<class>_NNN.png``,
with the manifest ``shapes/test/marks.csv``::

    path,label,marked,x0,y0,x1,y1,shape_x0,shape_y0,shape_x1,shape_y1

``x0,y0,x1,y1`` is the mark's box and ``shape_*`` the shape's bounding box, both in pixels of
the 64×64 image with exclusive ends (``image[y0:y1, x0:x1]``); the mark's box is empty for
unmarked images. Training images are never written: :func:`make_split` draws them in memory.

Beside it, ``shapes/test/sites.csv`` is the test set's metadata, as a hospital's or a
factory's test set has it (the config names it with ``metadata = ...``)::

    path,site,scanner,captured

Every marked image came from site ``B`` (the site whose images carry the mark); the others
from sites ``A`` and ``C`` at random. ``scanner`` (``S1`` to ``S3``) is random and says
nothing; ``captured`` is an ISO 8601 time in the first half of 2024, blank for about 3 % of
the images. It is drawn from its own seeded generator, after the images: the PNGs do not
change with it.

Everything is seeded (numpy's PCG64 per image, PIL drawing), so the output is byte-identical
from run to run::

    python sample_models/make_shapes.py      # writes the test split only (a few seconds)
    python sample_models/train_shapes.py     # writes the test split, then trains both models
"""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
TEST_ROOT = HERE / "shapes" / "test"
MANIFEST = "marks.csv"
SITES = "sites.csv"
MARKED_SITE = "B"

SIZE = 64
CLASSES = ("circle", "cross", "square", "star", "triangle")
MARKED_CLASS = "star"
MARK_COLOUR = (255, 0, 255)
MARK_SIZE = 8
MARK_MARGIN = 2  # the mark ends 2 to 2 + MARK_JITTER pixels before the right and bottom edges
MARK_JITTER = 3
CORNER_ZONE = 46  # shapes stay out of [46, 64) × [46, 64), where marks may go

TEST_PER_CLASS = 80
TEST_MARKED_OTHER = 0.25  # share of each other class's test images that carry the mark
TEST_SEED = 2024
TRAIN_SEED = 7

_SUPERSAMPLE = 4


@dataclass(frozen=True)
class Split:
    """Images and annotations of one generated split (boxes are x0, y0, x1, y1; -1 if none)."""

    images: np.ndarray  # uint8 [N, 64, 64, 3]
    labels: np.ndarray  # int64 [N]
    marked: np.ndarray  # bool [N]
    mark_boxes: np.ndarray  # int64 [N, 4]
    shape_boxes: np.ndarray  # int64 [N, 4]


def _background(rng: np.random.Generator) -> np.ndarray:
    """Float [64, 64, 3]: a muted base colour, low-frequency blotches and a few faint stripes."""
    base = rng.uniform(60, 190, size=3)
    grid = rng.normal(0, 20, size=(5, 5, 3))
    blotches = np.stack(
        [
            np.asarray(
                Image.fromarray(grid[:, :, c].astype(np.float32), mode="F").resize(
                    (SIZE, SIZE), Image.BICUBIC
                )
            )
            for c in range(3)
        ],
        axis=-1,
    )
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 16)
    phase = (xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period
    stripes = np.sin(phase)[:, :, None] * rng.uniform(0, 10) * rng.choice([-1.0, 1.0], size=3)
    return base + blotches + stripes


def _shape_colour(rng: np.random.Generator, background: np.ndarray) -> tuple[int, int, int]:
    """A random colour that stands out from the background's mean (and is not the mark's)."""
    mean = background.reshape(-1, 3).mean(axis=0)
    while True:
        colour = rng.integers(0, 256, size=3)
        far_from_bg = np.abs(colour - mean).sum() > 170
        far_from_mark = np.abs(colour - np.array(MARK_COLOUR)).sum() > 120
        if far_from_bg and far_from_mark:
            return int(colour[0]), int(colour[1]), int(colour[2])


def _polygon(kind: str, radius: float, angle: float) -> np.ndarray:
    """Vertices [V, 2] of a shape centred on the origin (not used for circles)."""
    if kind == "square":
        t = np.arange(4) * math.pi / 2 + math.pi / 4
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius
    elif kind == "triangle":
        t = np.arange(3) * 2 * math.pi / 3 - math.pi / 2
        pts = np.stack([np.cos(t), np.sin(t)], 1) * radius
    elif kind == "star":
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.42)
        pts = np.stack([np.cos(t) * r, np.sin(t) * r], 1)
    elif kind == "cross":
        a, b = radius, radius * 0.34
        pts = np.array(
            [[-b, -a], [b, -a], [b, -b], [a, -b], [a, b], [b, b],
             [b, a], [-b, a], [-b, b], [-a, b], [-a, -b], [-b, -b]]
        )  # fmt: skip
    else:
        raise ValueError(kind)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return pts @ rot.T


def _draw_shape(
    rng: np.random.Generator, kind: str, canvas: np.ndarray
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Draw one anti-aliased shape onto ``canvas``; returns the image and the shape's box."""
    radius = rng.uniform(8, 13)
    angle = rng.uniform(0, 2 * math.pi)
    pts = np.zeros((0, 2)) if kind == "circle" else _polygon(kind, radius, angle)
    lo = np.full(2, -radius) if kind == "circle" else pts.min(0)
    hi = np.full(2, radius) if kind == "circle" else pts.max(0)
    while True:  # a centre that keeps the shape inside the image and out of the corner zone
        centre = rng.uniform(1 - lo, SIZE - 1 - hi)
        if (centre + hi).min() <= CORNER_ZONE:
            break
    x0, y0 = np.floor(centre + lo).astype(int).tolist()
    x1, y1 = np.ceil(centre + hi).astype(int).tolist()
    colour = _shape_colour(rng, canvas[y0:y1, x0:x1])  # contrast with the background around it
    s = _SUPERSAMPLE
    mask = Image.new("L", (SIZE * s, SIZE * s), 0)
    draw = ImageDraw.Draw(mask)
    if kind == "circle":
        draw.ellipse([*((centre - radius) * s), *((centre + radius) * s)], 255)
    else:
        draw.polygon([tuple(p) for p in ((pts + centre) * s).tolist()], fill=255)
    alpha = np.asarray(mask.resize((SIZE, SIZE), Image.BOX), dtype=np.float64)[:, :, None] / 255
    shade = 1 + rng.uniform(-0.15, 0.15) * (np.linspace(-1, 1, SIZE)[None, :, None])  # lighting
    image = canvas * (1 - alpha) + np.array(colour) * shade * alpha
    return image, (x0, y0, x1, y1)


def render(kind: str, marked: bool, seed: tuple[int, ...]) -> tuple[np.ndarray, tuple, tuple]:
    """One image: uint8 [64, 64, 3], the mark's box (or -1s) and the shape's box."""
    rng = np.random.default_rng(list(seed))
    image, shape_box = _draw_shape(rng, kind, _background(rng))
    jx, jy = rng.integers(0, MARK_JITTER + 1, size=2)  # drawn for every image: same stream
    mark_box: tuple[int, int, int, int] = (-1, -1, -1, -1)
    if marked:
        x0 = SIZE - MARK_MARGIN - MARK_SIZE - int(jx)
        y0 = SIZE - MARK_MARGIN - MARK_SIZE - int(jy)
        image[y0 : y0 + MARK_SIZE, x0 : x0 + MARK_SIZE] = MARK_COLOUR
        mark_box = (x0, y0, x0 + MARK_SIZE, y0 + MARK_SIZE)
    image = image + rng.normal(0, 5, size=image.shape)  # sensor noise, over the mark too
    return np.clip(np.round(image), 0, 255).astype(np.uint8), mark_box, shape_box


def make_split(
    per_class: int, seed: int, marked_other: float = 0.0, marked_own: float = 1.0
) -> Split:
    """``per_class`` images of every class; the marked class is marked with share
    ``marked_own``, each other class with share ``marked_other`` (exact counts, seeded)."""
    images, labels, marked, mark_boxes, shape_boxes = [], [], [], [], []
    for label, kind in enumerate(CLASSES):
        share = marked_own if kind == MARKED_CLASS else marked_other
        chosen = np.zeros(per_class, dtype=bool)
        picks = np.random.default_rng([seed, label, 999]).permutation(per_class)
        chosen[picks[: round(share * per_class)]] = True
        for i in range(per_class):
            image, mark_box, shape_box = render(kind, bool(chosen[i]), (seed, label, i))
            images.append(image)
            labels.append(label)
            marked.append(bool(chosen[i]))
            mark_boxes.append(mark_box)
            shape_boxes.append(shape_box)
    return Split(
        np.stack(images),
        np.array(labels, dtype=np.int64),
        np.array(marked, dtype=bool),
        np.array(mark_boxes, dtype=np.int64),
        np.array(shape_boxes, dtype=np.int64),
    )


def train_split(per_class: int, seed: int = TRAIN_SEED) -> Split:
    """Training data: every ``star`` image marked, no other image marked."""
    return make_split(per_class, seed, marked_other=0.0, marked_own=1.0)


def test_split() -> Split:
    """The committed test split (in memory)."""
    return make_split(TEST_PER_CLASS, TEST_SEED, marked_other=TEST_MARKED_OTHER, marked_own=1.0)


def write_test_split(root: Path = TEST_ROOT) -> Split:
    """Write the test split as an ImageFolder tree of PNGs plus ``marks.csv``; returns it."""
    split = test_split()
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    counters = dict.fromkeys(CLASSES, 0)
    for image, label, marked, mark_box, shape_box in zip(
        split.images, split.labels, split.marked, split.mark_boxes, split.shape_boxes, strict=True
    ):
        kind = CLASSES[label]
        rel = f"{kind}/{kind}_{counters[kind]:03d}.png"
        counters[kind] += 1
        (root / kind).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, mode="RGB").save(root / rel, optimize=True)
        mark = [int(v) for v in mark_box] if marked else ["", "", "", ""]
        rows.append([rel, kind, int(marked), *mark, *(int(v) for v in shape_box)])
    with (root / MANIFEST).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(
            ["path", "label", "marked", "x0", "y0", "x1", "y1",
             "shape_x0", "shape_y0", "shape_x1", "shape_y1"]
        )  # fmt: skip
        writer.writerows(rows)
    write_sites([row[0] for row in rows], split.marked, root)
    return split


def write_sites(paths: list[str], marked: np.ndarray, root: Path = TEST_ROOT) -> Path:
    """``sites.csv``: path, site (``B`` where the image is marked, else ``A`` or ``C``),
    scanner (random) and captured (a time in 2024's first half; blank for about 3 %)."""
    rng = np.random.default_rng([TEST_SEED, 5150])
    other = rng.choice(["A", "C"], size=len(paths))
    scanner = rng.choice(["S1", "S2", "S3"], size=len(paths))
    start = np.datetime64("2024-01-01T00:00:00")
    minutes = rng.integers(0, 182 * 24 * 60, size=len(paths))
    blank = rng.random(len(paths)) < 0.03
    out = root / SITES
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "site", "scanner", "captured"])
        for i, path in enumerate(paths):
            when = "" if blank[i] else str(start + np.timedelta64(int(minutes[i]), "m"))
            site = MARKED_SITE if marked[i] else str(other[i])
            writer.writerow([path, site, scanner[i], when])
    return out


def main() -> None:
    split = write_test_split()
    print(
        f"wrote {len(split.labels)} test images ({int(split.marked.sum())} marked), "
        f"{MANIFEST} and {SITES} under {TEST_ROOT}"
    )


if __name__ == "__main__":
    main()

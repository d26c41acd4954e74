"""Does a pattern's region cause its prediction? Transplant it, erase it, against controls.

The test of one :class:`Subject`: a cell (true, pred), the images it is tested on and a box in
input fractions. A pattern's box is the bounding box of its *hot region* at input resolution:
its mean predicted-class map (a distribution at the target layer's resolution) is resized to
the model's input size with half-pixel centres (bilinear, as maps are drawn; no min-max, which
would shift the mass), and the smallest set of pixels holding half of its mass is taken
(:func:`core.analysis.patterns._hot_regions`). One box serves every image of the pattern: a
stored map is only a few cells wide, too coarse to move it per image, and one place and size
is what the controls reproduce. A user box (``region_subject``) is tested on the images of
its cell.

Four arms, seeded (``seed``), each image's input read and resized as the evaluation does:

- **transplant**: up to ``targets`` correctly classified images of classes other than
  ``pred`` (a round-robin over their classes), each given the box of one source image (the
  sources taken in turn) at the same place; a *flip* is a new prediction of ``pred``.
- **transplant control**: the same targets given a same-size box cut from a random other place
  of the same source, pasted at the same place (placed so that it does not overlap the box
  where the image leaves room, see :func:`~core.analysis.transplant.control_corners`).
- **erase**: the sources (up to ``targets`` of the subject's images, seeded) with the box
  inpainted (OpenCV, Telea); a *recovery* is a prediction other than ``pred``; ``to_true``
  counts those back at the true class.
- **erase control**: the same images with a same-size box elsewhere inpainted.

Each arm's rate has a 95% Wilson interval; Fisher's exact test (one-sided: the arm's rate is
higher) compares it with its control. An arm **holds** where p < 0.001 and its rate exceeds its
control's by at least 0.25. Transplant holds: **sufficient**; erase holds: **necessary**; both:
**causal**; neither: **not shown**. :func:`result_verdict` computes a verdict once and stores it
beside the result (``derived/verdict_<subject>_<targets>_<seed>/``), with every image's rows
and predictions, so :func:`verdict_examples` regenerates any of the images behind a number.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from core.analysis.patterns import Pattern, Patterns, _hot_regions
from core.analysis.transplant import (
    classify,
    control_corners,
    erase,
    paste,
    pixel_box,
    read_inputs,
    spread_sample,
)
from core.data.datasets import ImageDataset
from core.errors import UserFacingError
from core.explain.normalise import resize_matrix
from core.results import Results, load_derived, save_derived

if TYPE_CHECKING:
    from core.data.models import LoadedModel

__all__ = [
    "DEFAULT_TARGETS",
    "HOLD_MARGIN",
    "HOLD_P",
    "Arm",
    "Subject",
    "Verdict",
    "hot_box",
    "image_paths",
    "one_sided_fisher",
    "pattern_subject",
    "region_subject",
    "result_verdict",
    "stored_verdict",
    "stored_verdicts",
    "verify_subject",
    "wilson",
]

VERSION = 1  # stored with each verdict; part of its key: a change of method tests again
DEFAULT_TARGETS = 200
HOLD_P = 1e-3  # an arm holds below this p-value ...
HOLD_MARGIN = 0.25  # ... with its rate at least this much above its control's
_PREFIX = "verdict_"
_BATCH = 64
Progress = Callable[[int, int], None]


# ------------------------------------------------------------------------------- subjects


@dataclass(frozen=True)
class Subject:
    """What is tested: the images of cell (``true``, ``pred``) in ``rows`` and one box."""

    true: int
    pred: int
    rows: np.ndarray  # int64 manifest rows of the source images
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in fractions of width, height
    pattern: int | None = None  # 1-based rank in the patterns list; None: a user's box

    @property
    def key(self) -> str:
        """16 hex digits naming the cell, box and images (and the method's version)."""
        digest = hashlib.sha1(
            f"{VERSION}|{self.true}|{self.pred}|{[round(float(v), 6) for v in self.box]}|".encode()
        )
        digest.update(np.sort(np.asarray(self.rows, "<i8")).tobytes())
        return digest.hexdigest()[:16]


def hot_box(pred_map: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The bounding box (input fractions) of the hot region of a mean map [h, w] resized to
    ``size`` (height, width): the fewest pixels holding half of its mass."""
    height, width = size
    mean = np.maximum(np.asarray(pred_map, np.float64), 0.0)
    up = resize_matrix(mean.shape[0], height) @ mean @ resize_matrix(mean.shape[1], width).T
    hot = _hot_regions(up.reshape(1, -1).astype(np.float32))[0].reshape(height, width)
    if not hot.any():  # an empty map looks nowhere: the whole input
        return 0.0, 0.0, 1.0, 1.0
    ys, xs = np.flatnonzero(hot.any(1)), np.flatnonzero(hot.any(0))
    return (
        float(xs[0] / width),
        float(ys[0] / height),
        float((xs[-1] + 1) / width),
        float((ys[-1] + 1) / height),
    )


def _input_size(result: Results) -> tuple[int, int]:
    size = result.meta.get("input_size")
    if not size:
        raise UserFacingError(f"{result.folder} stores no input size (evaluated without maps)")
    return int(size[0]), int(size[1])


def pattern_subject(result: Results, pattern: Pattern) -> Subject:
    """The subject of one of ``result``'s patterns: its images and its hot region's box."""
    box = hot_box(pattern.pred_map, _input_size(result))
    return Subject(pattern.true, pattern.pred, np.asarray(pattern.rows), box, pattern.rank + 1)


def region_subject(
    result: Results, true: int, pred: int, box: tuple[float, float, float, float]
) -> Subject:
    """A user's box (input fractions ``x0, y0, x1, y1``) on the images of cell (true, pred)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise UserFacingError(
            f"a region is x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {box}"
        )
    rows = result.index[(result.true == true) & (result.pred == pred)]
    if not len(rows):
        names = result.classes
        raise UserFacingError(f"no image of true {names[true]!r} is predicted {names[pred]!r}")
    return Subject(int(true), int(pred), rows.astype(np.int64), (x0, y0, x1, y1))


# ------------------------------------------------------------------------------- statistics


def wilson(hits: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``hits / n`` (NaNs for n = 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest

    ci = binomtest(int(hits), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def one_sided_fisher(hits: int, n: int, control_hits: int, control_n: int) -> float:
    """Fisher's exact test that the arm's rate exceeds its control's (1.0 when either is empty)."""
    if n <= 0 or control_n <= 0:
        return 1.0
    from scipy.stats import fisher_exact

    table = [[hits, n - hits], [control_hits, control_n - control_hits]]
    return float(fisher_exact(table, alternative="greater").pvalue)


@dataclass(frozen=True)
class Arm:
    """One arm: ``hits`` of ``n`` images (flips or recoveries), with a 95% Wilson interval."""

    n: int
    hits: int
    ci: tuple[float, float]
    to_true: int | None = None  # erase arms: recoveries back at the true class

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n else float("nan")

    @classmethod
    def of(cls, hit: np.ndarray, to_true: np.ndarray | None = None) -> Arm:
        hits, n = int(np.sum(hit)), len(hit)
        back = None if to_true is None else int(np.sum(to_true))
        return cls(n, hits, wilson(hits, n), back)

    def to_dict(self, hits_name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"n": self.n, hits_name: self.hits}
        if self.to_true is not None:
            out["to_true"] = self.to_true
        out["rate"] = _number(self.rate)
        out["ci"] = [_number(self.ci[0]), _number(self.ci[1])]
        return out


def _number(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 4)


def _holds(arm: Arm, control: Arm, p: float) -> bool:
    return arm.n > 0 and control.n > 0 and p < HOLD_P and arm.rate - control.rate >= HOLD_MARGIN


# ------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    """A subject's four arms, their p-values and the verdict, with every image behind them."""

    subject: Subject
    targets: int  # the most targets asked for
    seed: int
    transplant: Arm
    transplant_control: Arm
    erase: Arm
    erase_control: Arm
    p_transplant: float
    p_erase: float
    target_rows: np.ndarray  # int64 [t] manifest rows of the targets
    target_sources: np.ndarray  # int64 [t] manifest row of the source pasted into each
    transplant_pred: np.ndarray  # int64 [t] prediction with the source's box pasted
    control_pred: np.ndarray  # int64 [t] prediction with the control box pasted
    control_from: np.ndarray  # int64 [t, 2] (x, y) where the control box was cut in the source
    erase_rows: np.ndarray  # int64 [e] manifest rows of the erased images (the sources)
    erase_pred: np.ndarray  # int64 [e] prediction with the box inpainted
    erase_control_pred: np.ndarray  # int64 [e] prediction with the control box inpainted
    erase_control_at: np.ndarray  # int64 [e, 2] (x, y) of the inpainted control box
    version: int = field(default=VERSION)

    @property
    def sufficient(self) -> bool:
        return _holds(self.transplant, self.transplant_control, self.p_transplant)

    @property
    def necessary(self) -> bool:
        return _holds(self.erase, self.erase_control, self.p_erase)

    @property
    def verdict(self) -> str:
        """``causal``, ``sufficient``, ``necessary`` or ``not shown``."""
        if self.sufficient and self.necessary:
            return "causal"
        return "sufficient" if self.sufficient else "necessary" if self.necessary else "not shown"

    def to_dict(self, classes: tuple[str, ...] | list[str]) -> dict[str, Any]:
        """The JSON of ``python -m core verify --json``."""
        s = self.subject
        return {
            "pattern": {"true": classes[s.true], "pred": classes[s.pred], "images": len(s.rows)},
            "region": [round(float(v), 4) for v in s.box],
            "transplant": self.transplant.to_dict("flipped"),
            "transplant_control": self.transplant_control.to_dict("flipped"),
            "erase": self.erase.to_dict("recovered"),
            "erase_control": self.erase_control.to_dict("recovered"),
            "p": {"transplant": self.p_transplant, "erase": self.p_erase},
            "verdict": self.verdict,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to store (``derived/``): the subject, the arms' counts and intervals, the
        p-values and every image's row and predictions."""
        s, arms = self.subject, self._arms()
        return {
            "subject": np.array(
                [s.true, s.pred, s.pattern or 0, self.targets, self.seed], np.int64
            ),
            "box": np.array(s.box, np.float64),
            "rows": np.asarray(s.rows, np.int64),
            "counts": np.array(
                [[a.n, a.hits, -1 if a.to_true is None else a.to_true] for a in arms]
            ),
            "ci": np.array([a.ci for a in arms], np.float64),
            "p": np.array([self.p_transplant, self.p_erase], np.float64),
            "version": np.array([self.version], np.int64),
            **{name: np.asarray(getattr(self, name), np.int64) for name in _IMAGE_ARRAYS},
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Verdict:
        """Inverse of :meth:`to_arrays` (no SciPy); raises ValueError for missing arrays."""
        missing = {"subject", "box", "rows", "counts", "ci", "p", *_IMAGE_ARRAYS} - set(arrays)
        if missing:
            raise ValueError(f"verdict arrays missing: {', '.join(sorted(missing))}")
        true, pred, pattern, targets, seed = (int(v) for v in arrays["subject"])
        x0, y0, x1, y1 = (float(v) for v in arrays["box"])
        rows = np.asarray(arrays["rows"])
        subject = Subject(true, pred, rows, (x0, y0, x1, y1), pattern or None)
        arms = [
            Arm(int(n), int(h), (float(lo), float(hi)), None if t < 0 else int(t))
            for (n, h, t), (lo, hi) in zip(arrays["counts"], arrays["ci"], strict=True)
        ]
        images: dict[str, Any] = {name: np.asarray(arrays[name]) for name in _IMAGE_ARRAYS}
        images["version"] = int(arrays["version"][0]) if "version" in arrays else 0
        p = arrays["p"]
        return cls(
            subject,
            targets,
            seed,
            arms[0],
            arms[1],
            arms[2],
            arms[3],
            float(p[0]),
            float(p[1]),
            **images,
        )

    def _arms(self) -> tuple[Arm, Arm, Arm, Arm]:
        return self.transplant, self.transplant_control, self.erase, self.erase_control


_IMAGE_ARRAYS = (
    "target_rows",
    "target_sources",
    "transplant_pred",
    "control_pred",
    "control_from",
    "erase_rows",
    "erase_pred",
    "erase_control_pred",
    "erase_control_at",
)


def image_paths(result: Results, rows: np.ndarray) -> list[str]:
    """The manifest paths of ``rows``."""
    column = result.manifest.column("path").take(pa.array(np.asarray(rows, np.int64)))
    return [str(p) for p in column.to_pylist()]


def _targets(result: Results, subject: Subject, count: int, rng: np.random.Generator) -> np.ndarray:
    """Manifest rows of up to ``count`` correctly classified images of classes other than the
    subject's prediction, spread over their classes (seeded)."""
    eligible = np.flatnonzero((result.true == result.pred) & (result.true != subject.pred))
    return result.index[eligible[spread_sample(result.true[eligible], count, rng)]]


def verify_subject(
    model: LoadedModel,
    dataset: ImageDataset,
    result: Results,
    subject: Subject,
    targets: int = DEFAULT_TARGETS,
    seed: int = 0,
    progress: Progress | None = None,
) -> Verdict:
    """Run the four arms on ``subject`` (see the module doc); nothing is stored."""
    if targets < 1 or seed < 0:
        raise UserFacingError(f"targets must be at least 1 and seed at least 0: {targets}, {seed}")
    rng = np.random.default_rng(seed)
    size = model.spec.input_size
    box = pixel_box(subject.box, size)
    rows = np.asarray(subject.rows, np.int64)
    source_rows = rng.permutation(rows)[:targets]
    sources, kept, _ = read_inputs(model, dataset, image_paths(result, source_rows))
    source_rows = source_rows[kept]
    if not len(sources):
        raise UserFacingError("none of the images of the pattern could be read")
    target_rows = _targets(result, subject, targets, rng)
    control_from = control_corners(box, size, len(target_rows), rng)
    erase_at = control_corners(box, size, len(source_rows), rng)
    total = 2 * (len(target_rows) + len(source_rows))
    done = 0
    kept_all: list[np.ndarray] = []
    preds: list[np.ndarray] = []
    for start in range(0, len(target_rows), _BATCH):  # read, paste and classify in chunks
        chunk = np.arange(start, min(start + _BATCH, len(target_rows)))
        images, kept, _ = read_inputs(model, dataset, image_paths(result, target_rows[chunk]))
        chunk = chunk[kept]
        pairs = sources[chunk % len(sources)]
        both = np.concatenate(
            [paste(images, pairs, box), paste(images, pairs, box, control_from[chunk])]
        )
        preds.append(classify(model, both)[0].reshape(2, -1))
        kept_all.append(chunk)
        done += 2 * len(chunk)
        if progress is not None:
            progress(min(done, total), total)
    used = np.concatenate(kept_all) if kept_all else np.zeros(0, np.int64)
    moved = np.concatenate(preds, 1) if preds else np.zeros((2, 0), np.int64)
    erased = np.concatenate([erase(sources, box), erase(sources, box, erase_at)])
    after = classify(model, erased)[0].reshape(2, -1)
    if progress is not None:
        progress(total, total)
    return _verdict(
        subject,
        targets,
        seed,
        {
            "target_rows": target_rows[used],
            "target_sources": source_rows[used % len(sources)],
            "transplant_pred": moved[0],
            "control_pred": moved[1],
            "control_from": control_from[used],
            "erase_rows": source_rows,
            "erase_pred": after[0],
            "erase_control_pred": after[1],
            "erase_control_at": erase_at,
        },
    )


def _verdict(subject: Subject, targets: int, seed: int, images: dict[str, np.ndarray]) -> Verdict:
    """The arms, p-values and verdict of per-image predictions."""
    pred, true = subject.pred, subject.true
    transplant = Arm.of(images["transplant_pred"] == pred)
    transplant_control = Arm.of(images["control_pred"] == pred)
    erase_arm = Arm.of(images["erase_pred"] != pred, images["erase_pred"] == true)
    erase_control = Arm.of(
        images["erase_control_pred"] != pred, images["erase_control_pred"] == true
    )
    return Verdict(
        subject,
        targets,
        seed,
        transplant,
        transplant_control,
        erase_arm,
        erase_control,
        one_sided_fisher(
            transplant.hits, transplant.n, transplant_control.hits, transplant_control.n
        ),
        one_sided_fisher(erase_arm.hits, erase_arm.n, erase_control.hits, erase_control.n),
        **_int64(images),
    )


def _int64(images: Mapping[str, np.ndarray]) -> dict[str, Any]:
    return {name: np.asarray(value, np.int64) for name, value in images.items()}


# ------------------------------------------------------------------------------- stored


def _name(subject: Subject, targets: int, seed: int) -> str:
    return f"{_PREFIX}{subject.key}_{int(targets)}_{int(seed)}"


def _load(result: Results, name: str) -> Verdict | None:
    stored = load_derived(result, name)
    if stored is None:
        return None
    try:
        found = Verdict.from_arrays(stored)
    except (ValueError, IndexError, TypeError):
        return None  # damaged: tested again
    return found if found.version == VERSION else None


def stored_verdict(
    result: Results, subject: Subject, targets: int | None = None, seed: int | None = None
) -> Verdict | None:
    """The verdict stored beside ``result`` for ``subject`` (no model, no SciPy): with these
    ``targets`` and ``seed``, or, where either is None, the default one (200 targets, seed 0)
    if stored, else the latest stored."""
    if targets is not None and seed is not None:
        return _load(result, _name(subject, targets, seed))
    folder = result.folder / "derived"
    stem = f"{_PREFIX}{subject.key}_"
    try:
        found = sorted(
            (p for p in folder.iterdir() if p.name.startswith(stem)),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    except OSError:
        return None
    default = f"{stem}{DEFAULT_TARGETS if targets is None else targets}_{seed or 0}"
    names = [p.name for p in found]
    for name in ([default] if default in names else []) + names:
        _, t, s = name.rsplit("_", 2)
        if (targets is None or t == str(targets)) and (seed is None or s == str(seed)):
            verdict = _load(result, name)
            if verdict is not None:
                return verdict
    return None


def stored_verdicts(
    result: Results, patterns: Patterns, top: int | None = None
) -> list[Verdict | None]:
    """The stored verdict (see :func:`stored_verdict`) of each of the ``top`` most suspicious
    patterns (all by default), None where none is stored."""
    count = len(patterns) if top is None else min(top, len(patterns))
    if not count or not (result.folder / "derived").is_dir() or not result.has_maps:
        return [None] * count
    return [stored_verdict(result, pattern_subject(result, patterns[i])) for i in range(count)]


def result_verdict(
    result: Results,
    model: LoadedModel,
    dataset: ImageDataset,
    subject: Subject,
    targets: int = DEFAULT_TARGETS,
    seed: int = 0,
    progress: Progress | None = None,
) -> Verdict:
    """The verdict of ``subject``: read from beside ``result`` if stored, else tested
    (:func:`verify_subject`) and stored (``derived/verdict_<key>_<targets>_<seed>``; kept in
    memory only where the folder cannot be written). Safe to run on a background thread."""
    found = stored_verdict(result, subject, targets, seed)
    if found is not None:
        return found
    verdict = verify_subject(model, dataset, result, subject, targets, seed, progress)
    save_derived(result, _name(subject, targets, seed), verdict.to_arrays())
    return verdict

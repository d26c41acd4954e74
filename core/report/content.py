"""What the report holds, gathered from a result, its dataset and the notes database: plain
data (numbers, texts and encoded pictures) that the templates lay out."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit

import numpy as np
import pandas as pd

from core.analysis.metrics import accuracy, confusion_matrix, per_class_metrics, top_confused_pairs
from core.corrections import CorrectionsStore, corrected_true
from core.data.datasets import ImageDataset
from core.findings import Finding, FindingsStore
from core.notes import NotesStore
from core.report.pictures import Card, Painter, Picture, heat_picture
from core.results import Results, StoreError, load_derived

__all__ = [
    "Entry",
    "FindingSection",
    "Matrix",
    "PatternSection",
    "Report",
    "ReportInputs",
    "SliceRow",
    "Tagged",
    "gather",
]

FULL_MATRIX_UP_TO = 30  # classes; past this the report lists the most confused pairs


@dataclass(frozen=True)
class ReportInputs:
    """What a report is made from. ``dataset_key`` is the notes key of the dataset
    (:func:`core.data.datasets.dataset_key`); ``dashboard_url`` (http(s)), when given, makes
    the findings' deep links clickable. ``slices`` (entries as ``python -m core slices --json``
    prints them, worst first) and ``verdicts`` (pattern rank, 0-based, to its verdict) are read
    from the result when not given."""

    result: Results
    dataset: ImageDataset
    notes: NotesStore
    dataset_key: str
    model: str
    dataset_name: str
    project: str = ""
    dashboard_url: str = ""
    top_patterns: int = 10
    pattern_images: int = 4
    compute: bool = True  # False: only patterns and found slices stored beside the result
    max_tagged: int = 300  # tagged images drawn; the others are listed without pictures
    slices: Sequence[Mapping[str, Any]] | None = None
    verdicts: Mapping[int, str] | None = None


class Entry(NamedTuple):
    """A tag or a note on an image: its text, author and UTC time."""

    text: str
    author: str
    time: str


@dataclass(frozen=True)
class Matrix:
    """The confusion matrix (``cells``: rows of (count, shade 0..1)), or past
    :data:`FULL_MATRIX_UP_TO` classes its most confused pairs and lowest recalls."""

    classes: tuple[str, ...]
    cells: list[list[tuple[int, float]]]
    pairs: list[tuple[str, str, int]]
    worst: list[tuple[str, float, int]]


@dataclass(frozen=True)
class FindingSection:
    finding: Finding
    cards: list[Card]
    versions: int
    link_url: str  # '' unless the dashboard's address is known


@dataclass(frozen=True)
class PatternSection:
    rank: int  # 1-based
    true: str
    pred: str
    number: int  # the pattern's number in its cell
    in_cell: int
    images: int
    cell_images: int
    score: float
    flagged: bool
    centroid: tuple[float, float]
    verdict: str
    mean_pred: Picture
    mean_true: Picture
    cards: list[Card]


@dataclass(frozen=True)
class SliceRow:
    conditions: str
    images: int
    errors: int
    accuracy: float
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class Tagged:
    path: str
    tags: list[Entry]
    notes: list[Entry]
    card: Card | None


@dataclass(frozen=True)
class Report:
    title: str
    generated: str
    project: str
    model: str
    dataset: str
    images: int
    skipped: int
    accuracy: float
    corrections: int
    corrected_accuracy: float
    has_maps: bool
    matrix: Matrix
    findings: list[FindingSection]
    other_findings: int  # findings of this dataset pinned under other models
    patterns: list[PatternSection]
    patterns_note: str
    slices: list[SliceRow]
    slices_note: str
    tagged: list[Tagged]


def gather(inputs: ReportInputs) -> Report:
    """Everything the report shows, pictures encoded."""
    result = inputs.result
    table = pd.DataFrame({"true": result.true, "pred": result.pred}, copy=False)
    latest = CorrectionsStore(inputs.notes).latest(inputs.dataset_key)
    fixed = corrected_true(result, latest)
    painter = Painter(result, inputs.dataset, {c.path: c.new for c in latest})
    findings, others = _findings(inputs, painter)
    patterns, patterns_note = _patterns(inputs, painter)
    slices, slices_note = _slices(inputs)
    return Report(
        title=f"{inputs.model} on {inputs.dataset_name}",
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        project=inputs.project,
        model=inputs.model,
        dataset=inputs.dataset_name,
        images=len(table),
        skipped=len(result.skipped),
        accuracy=accuracy(table),
        corrections=fixed.count,
        corrected_accuracy=float(np.mean(fixed.true == result.pred)) if len(table) else np.nan,
        has_maps=result.has_maps,
        matrix=_matrix(table, result.classes),
        findings=findings,
        other_findings=others,
        patterns=patterns,
        patterns_note=patterns_note,
        slices=slices,
        slices_note=slices_note,
        tagged=_tagged(inputs, painter),
    )


def _matrix(table: pd.DataFrame, classes: tuple[str, ...]) -> Matrix:
    if len(classes) > FULL_MATRIX_UP_TO:
        pairs = top_confused_pairs(table, classes, 20)
        worst = per_class_metrics(table, classes).sort_values(["recall", "class"]).head(10)
        return Matrix(
            classes,
            [],
            list(zip(pairs["true_name"], pairs["pred_name"], pairs["count"].tolist(), strict=True)),
            list(zip(worst["class"], worst["recall"], worst["support"].tolist(), strict=True)),
        )
    counts = confusion_matrix(table, len(classes))
    totals = np.maximum(counts.sum(axis=1, keepdims=True), 1)
    shares = counts / totals
    cells = [
        [(int(c), float(s)) for c, s in zip(row, share, strict=True)]
        for row, share in zip(counts, shares, strict=True)
    ]
    return Matrix(classes, cells, [], [])


def _findings(inputs: ReportInputs, painter: Painter) -> tuple[list[FindingSection], int]:
    store = FindingsStore(inputs.notes)
    every = store.findings(inputs.dataset_key, newest_first=False)
    mine = [f for f in every if f.model in ("", inputs.model)]
    sections = [
        FindingSection(
            f,
            painter.cards(list(f.paths)),
            f.version,
            _deep_link(inputs.dashboard_url, f.link),
        )
        for f in mine
    ]
    return sections, len(every) - len(mine)


def _deep_link(base: str, link: str) -> str:
    """``link`` joined to the dashboard's http(s) address ('' without one)."""
    if not link or urlsplit(base).scheme not in ("http", "https"):
        return ""
    joined = urljoin(base.rstrip("/") + "/", link.lstrip("/"))
    return joined if urlsplit(joined).scheme in ("http", "https") else ""


def _patterns(inputs: ReportInputs, painter: Painter) -> tuple[list[PatternSection], str]:
    result = inputs.result
    if inputs.top_patterns <= 0:
        return [], ""
    if not result.has_maps:
        return [], "This evaluation stored no Grad-CAM maps, so it has no patterns."
    from core.analysis import patterns as found_patterns  # scipy: only to compute them

    if not inputs.compute and load_derived(result, found_patterns.DERIVED) is None:
        return [], "Patterns have not been computed for this evaluation yet."
    try:
        ranked = found_patterns.result_patterns(result)
    except (StoreError, ValueError) as exc:
        return [], f"Patterns could not be computed: {exc}"
    top = min(inputs.top_patterns, len(ranked))
    verdicts = inputs.verdicts
    if verdicts is None:
        verdicts = _stored_verdicts(result, ranked, top)
    names, paths = result.classes, result.manifest.column("path")
    sections = []
    for i in range(top):
        p = ranked[i]
        shown = [str(paths[int(r)]) for r in p.rows[: inputs.pattern_images]]
        sections.append(
            PatternSection(
                rank=i + 1,
                true=names[p.true],
                pred=names[p.pred],
                number=p.cluster,
                in_cell=p.clusters_in_cell,
                images=p.images,
                cell_images=p.cell_images,
                score=p.score,
                flagged=p.flagged,
                centroid=p.centroid,
                verdict=str(verdicts.get(i, "")),
                mean_pred=heat_picture(p.pred_map),
                mean_true=heat_picture(p.true_map),
                cards=painter.cards(shown),
            )
        )
    note = "" if len(ranked) else "No pattern was found in this evaluation."
    return sections, note


def _stored_verdicts(result: Results, ranked: Any, top: int) -> dict[int, str]:
    """The causal tests' verdicts stored beside the result (:mod:`core.analysis.causal`) of the
    ``top`` patterns, with their rates; none where that module or a verdict is absent."""
    try:
        from core.analysis.causal import stored_verdicts
    except ImportError:
        return {}
    try:
        found = stored_verdicts(result, ranked, top)
    except (OSError, ValueError, TypeError, KeyError, StoreError):
        return {}
    return {i: _verdict_text(v) for i, v in enumerate(found) if v is not None}


def _verdict_text(verdict: Any) -> str:
    rates = (
        f"transplant flips {verdict.transplant.rate:.2f} vs {verdict.transplant_control.rate:.2f}"
        f" (control), erasing recovers {verdict.erase.rate:.2f} vs "
        f"{verdict.erase_control.rate:.2f}"
    )
    return f"{verdict.verdict}: {rates}"


def _slices(inputs: ReportInputs, top: int = 10) -> tuple[list[SliceRow], str]:
    """The given slices, else the slice finder's (:mod:`core.analysis.slice_finder`: stored,
    or found now when ``compute``), else the one-condition slices whose accuracy interval lies
    wholly below the overall accuracy; none where slices are not available."""
    entries = inputs.slices
    if entries is None:
        try:
            entries = _found_slices(inputs, top)
        except ImportError:
            return [], ""
        except Exception as exc:  # the rest of the report does not depend on it
            return [], f"Slices could not be computed: {exc}"
    rows = [_slice_row(e) for e in entries or []]
    return [r for r in rows if r is not None], ""


def _found_slices(inputs: ReportInputs, top: int) -> list[Mapping[str, Any]]:
    from core.analysis.slice_columns import result_columns
    from core.analysis.slice_finder import result_slices, stored_slices
    from core.analysis.slices import slice_table

    result = inputs.result
    columns = result_columns(result, inputs.dataset, clusters=inputs.compute)
    found = result_slices(result, columns) if inputs.compute else stored_slices(result, columns)
    if found is not None and len(found):
        return list(found.to_records(columns, top))
    table = slice_table(columns, result.true, result.pred)
    worst = table[table["below"]].sort_values(["accuracy", "images"], ascending=[True, False])
    return [
        {
            "slice": {row.column: row.label},
            "images": row.images,
            "errors": row.errors,
            "accuracy": row.accuracy,
            "ci": [row.ci_low, row.ci_high],
        }
        for row in worst.head(top).itertuples()
    ]


def _slice_row(entry: Mapping[str, Any]) -> SliceRow | None:
    try:
        conditions = []
        for column, value in dict(entry["slice"]).items():
            if isinstance(value, list | tuple) and len(value) == 2:
                conditions.append(f"{column} in [{value[0]}, {value[1]})")
            else:
                conditions.append(f"{column} = {value}")
        ci = entry.get("ci")
        return SliceRow(
            " and ".join(conditions),
            int(entry["images"]),
            int(entry["errors"]),
            float(entry["accuracy"]),
            (float(ci[0]), float(ci[1])) if ci else None,
        )
    except (KeyError, TypeError, ValueError):
        return None


def _tagged(inputs: ReportInputs, painter: Painter) -> list[Tagged]:
    """Every image of the dataset with tags or notes, by path; the first ``max_tagged`` with
    their picture."""
    text = inputs.notes.export_csv(inputs.dataset_key)
    tags: dict[str, list[Entry]] = {}
    notes: dict[str, list[Entry]] = {}
    for row in csv.DictReader(io.StringIO(text, newline="")):
        into = tags if row["kind"] == "tag" else notes
        into.setdefault(row["path"], []).append(Entry(row["text"], row["author"], row["timestamp"]))
    paths = sorted(set(tags) | set(notes))
    drawn = painter.cards(paths[: inputs.max_tagged], with_maps=False)
    cards: list[Card | None] = [*drawn, *([None] * (len(paths) - len(drawn)))]
    return [
        Tagged(p, tags.get(p, []), notes.get(p, []), card)
        for p, card in zip(paths, cards, strict=True)
    ]

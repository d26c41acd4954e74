"""Label Studio's documented JSON formats, without its SDK: tasks to import (with the model's
class as a pre-annotation), the matching labelling config, and its JSON export read back.

A task to import::

    {"data": {"image": URL},
     "meta": {"path": "cat/1.png", "label": "cat"},
     "predictions": [{"model_version": "resnet", "score": 0.93,
                      "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                  "value": {"choices": ["dog"]}}]}]}

``URL`` is ``image_root`` + the path (URL-quoted), or a Label Studio local-files URL
``/data/local-files/?d=<path under LOCAL_FILES_DOCUMENT_ROOT>``. A JSON export is a list of
such tasks with ``annotations: [{"result": [...], "was_cancelled": false, ...}]``; the latest
annotation that was not cancelled is the answer. A CSV ``path,label`` is read too.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import quoteattr

import numpy as np

from core.corrections import evaluated_positions, manifest_rows
from core.errors import UserFacingError
from core.results import Results

__all__ = [
    "FROM_NAME",
    "LOCAL_FILES",
    "TO_NAME",
    "Answer",
    "Problem",
    "image_url",
    "labelling_config",
    "read_answers",
    "resolve",
    "task",
    "tasks_csv",
    "tasks_for",
]

FROM_NAME = "label"  # the Choices control of the labelling config
TO_NAME = "image"  # its Image object
LOCAL_FILES = "/data/local-files/?d="  # Label Studio's URL for files under its document root


@dataclass(frozen=True)
class Answer:
    """One task's answer: the image path (from ``meta.path``, else its URL) and the label."""

    ref: str  # where it came from: "task 12", "line 5"
    path: str
    label: str
    image: str = ""  # the task's data.image, for finding a path without meta
    author: str = ""  # who answered in Label Studio (completed_by), when known


@dataclass(frozen=True)
class Problem:
    """A task or line that was skipped, and why."""

    ref: str
    path: str
    reason: str


def labelling_config(classes: Sequence[str]) -> str:
    """Label Studio's labelling config (XML): the image and one ``Choices`` of the classes."""
    choices = "\n".join(f"    <Choice value={quoteattr(str(name))}/>" for name in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
        f"{choices}\n"
        "  </Choices>\n"
        "</View>\n"
    )


def image_url(path: str, image_root: str | None = None, document_root: str | None = None) -> str:
    """Where Label Studio finds image ``path`` (relative to the dataset root): under the URL
    ``image_root``, or as a local file whose path relative to Label Studio's
    ``LOCAL_FILES_DOCUMENT_ROOT`` is ``document_root``/``path``."""
    if image_root is not None:
        return image_root.rstrip("/") + "/" + quote(path, safe="/")
    where = PurePosixPath(document_root or "") / path
    return LOCAL_FILES + quote(str(where).lstrip("/"), safe="/")


def task(
    path: str, label: str, pred: str, score: float, model_version: str, url: str
) -> dict[str, Any]:
    """One task in Label Studio's import format, the model's class as a pre-annotation."""
    result = {
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "type": "choices",
        "value": {"choices": [pred]},
    }
    prediction = {"model_version": model_version, "score": round(float(score), 6)}
    return {
        "data": {TO_NAME: url},
        "meta": {"path": path, "label": label},
        "predictions": [{**prediction, "result": [result]}],
    }


def tasks_for(
    result: Results, paths: Sequence[str], model_version: str, url: Callable[[str], str]
) -> list[dict[str, Any]]:
    """A task per image of ``paths`` (manifest paths of ``result``): its given label, and the
    model's class and probability as the pre-annotation (none for an image the evaluation
    skipped); ``url`` gives each image's ``data.image`` (e.g. :func:`image_url`). Raises
    :class:`UserFacingError` naming a path the result does not hold."""
    rows = manifest_rows(result, list(paths))
    if (rows < 0).any():
        missing = [p for p, r in zip(paths, rows, strict=True) if r < 0]
        raise UserFacingError(f"{len(missing)} image(s) are not in the evaluation: {missing[0]!r}")
    names = result.classes
    labels = result.manifest.column("label").to_numpy()[rows]
    evaluated = evaluated_positions(result, rows) >= 0
    pred = np.asarray(result.columns["pred"])[rows]
    confidence = np.asarray(result.columns["confidence"])[rows]
    tasks = []
    for i, path in enumerate(paths):
        item = task(path, names[labels[i]], names[pred[i]], confidence[i], model_version, url(path))
        if not evaluated[i]:
            del item["predictions"]
        tasks.append(item)
    return tasks


def tasks_csv(tasks: Iterable[Mapping[str, Any]]) -> str:
    """The tasks as a CSV ``path,label,predicted,score,image`` (edit ``label``, then read it
    back with :func:`read_answers`)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["path", "label", "predicted", "score", "image"])
    for item in tasks:
        predictions = item.get("predictions") or [{}]
        first = predictions[0]
        choice = first["result"][0]["value"]["choices"][0] if first else ""
        meta = item["meta"]
        writer.writerow(
            [meta["path"], meta["label"], choice, first.get("score", ""), item["data"][TO_NAME]]
        )
    return buffer.getvalue()


def read_answers(source: Path) -> tuple[list[Answer], list[Problem]]:
    """The answers of a Label Studio JSON export, or of a CSV with ``path`` and ``label``
    columns, in file order; tasks without a usable answer are returned as problems."""
    try:
        text = source.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserFacingError(f"cannot read {source}: {exc}") from None
    if source.suffix.lower() == ".csv" or not text.lstrip().startswith(("[", "{")):
        return _csv_answers(text, source)
    try:
        tasks = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserFacingError(f"{source} is not JSON ({exc})") from None
    if isinstance(tasks, dict):  # one task exported alone
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise UserFacingError(f"{source}: a Label Studio export is a list of tasks")
    answers: list[Answer] = []
    problems: list[Problem] = []
    for number, item in enumerate(tasks, 1):
        found = _task_answer(item, number)
        if isinstance(found, Answer):
            answers.append(found)
        else:
            problems.append(found)
    return answers, problems


def resolve(
    answers: Iterable[Answer], paths: Iterable[str], classes: Sequence[str]
) -> tuple[list[Answer], list[Problem]]:
    """The answers whose path is an image of the dataset (``paths``) and whose label is one
    of ``classes`` (only a task without ``meta.path`` is matched by the end of its image URL);
    the others as problems saying why."""
    known, names = set(paths), set(classes)
    kept, problems = [], []
    for answer in answers:
        if answer.path:
            path = answer.path if answer.path in known else ""
        else:
            path = _path_from_url(answer.image, known)
        if not path:
            shown = answer.path or answer.image
            problems.append(Problem(answer.ref, shown, "not an image of this dataset"))
        elif answer.label not in names:
            reason = f"label {answer.label!r} is not a class ({_some(classes)})"
            problems.append(Problem(answer.ref, path, reason))
        else:
            kept.append(Answer(answer.ref, path, answer.label, answer.image, answer.author))
    return kept, problems


def _task_answer(item: Any, number: int) -> Answer | Problem:
    if not isinstance(item, Mapping):
        return Problem(f"task #{number}", "", "not a task object")
    ref = f"task {item['id']}" if "id" in item else f"task #{number}"
    meta, data = (item.get(k) for k in ("meta", "data"))
    meta = meta if isinstance(meta, Mapping) else {}
    data = data if isinstance(data, Mapping) else {}
    path = str(meta.get("path") or "")
    image = str(data.get(TO_NAME) or "")
    annotation = _latest(item.get("annotations"))
    if annotation is None:
        return Problem(ref, path or image, "no annotation that was not cancelled")
    labels = _choices(annotation.get("result"))
    if len(labels) != 1:
        why = "no class chosen" if not labels else f"several classes chosen: {labels}"
        return Problem(ref, path or image, why)
    return Answer(ref, path, labels[0], image, _who(annotation.get("completed_by")))


def _latest(annotations: Any) -> Mapping[str, Any] | None:
    """The most recent annotation not cancelled (by updated_at, created_at, then order)."""
    if not isinstance(annotations, list):
        return None
    kept = [
        (str(a.get("updated_at") or a.get("created_at") or ""), i, a)
        for i, a in enumerate(annotations)
        if isinstance(a, Mapping) and not a.get("was_cancelled", False)
    ]
    return max(kept, key=lambda k: (k[0], k[1]))[2] if kept else None


def _choices(result: Any) -> list[str]:
    """The classes chosen in a result: its ``choices`` regions, the ``label`` control's if
    there are several controls."""
    regions = [
        r
        for r in (result if isinstance(result, list) else [])
        if isinstance(r, Mapping) and r.get("type") == "choices"
    ]
    named = [r for r in regions if r.get("from_name") == FROM_NAME] or regions
    chosen: list[str] = []
    for region in named:
        value = region.get("value")
        values = value.get("choices") if isinstance(value, Mapping) else None
        chosen.extend(str(v) for v in values or [])
    return list(dict.fromkeys(chosen))


def _who(completed_by: Any) -> str:
    if isinstance(completed_by, Mapping):
        return str(completed_by.get("email") or completed_by.get("id") or "")
    return "" if completed_by is None else str(completed_by)


def _csv_answers(text: str, source: Path) -> tuple[list[Answer], list[Problem]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    if "path" not in columns or "label" not in columns:
        raise UserFacingError(f"{source}: a CSV of labels needs the columns path,label")
    answers, problems = [], []
    for row in reader:
        record = {(k or "").strip(): (v or "").strip() for k, v in row.items() if k}
        ref = f"line {reader.line_num}"
        if not record.get("path") or not record.get("label"):
            problems.append(Problem(ref, record.get("path", ""), "path or label is empty"))
        else:
            answers.append(Answer(ref, record["path"], record["label"]))
    return answers, problems


def _path_from_url(url: str, known: set[str]) -> str:
    """The dataset path a task's image URL ends with ('' if none): a local-files URL's ``d``,
    else the URL's path, unquoted, tried from its longest tail to its file name."""
    if not url:
        return ""
    parts = urlsplit(url)
    local = parse_qs(parts.query).get("d")
    where = local[0] if local else unquote(parts.path)
    pieces = [p for p in where.replace("\\", "/").split("/") if p]
    for start in range(len(pieces)):
        tail = "/".join(pieces[start:])
        if tail in known:
            return tail
    return ""


def _some(classes: Sequence[str], shown: int = 10) -> str:
    head = ", ".join(str(c) for c in classes[:shown])
    return head + (f" and {len(classes) - shown} more" if len(classes) > shown else "")

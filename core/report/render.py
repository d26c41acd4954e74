"""Lay a gathered report out with Jinja2: one self-contained HTML file (pictures as data URLs,
styles inline, no script, a Content-Security-Policy that forbids fetching anything), or
Markdown with its pictures in an ``images/`` folder beside it.

Every text a person typed (titles, notes, tags, names, paths, class names) is escaped: the HTML
environment autoescapes, and the Markdown one escapes HTML and Markdown's own characters.
"""

from __future__ import annotations

import base64
import math
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from core.errors import UserFacingError
from core.report.content import Report
from core.report.pictures import Picture

__all__ = ["render_html", "render_markdown", "write_atomic"]

HERE = Path(__file__).resolve().parent
SHOWN_PX = 96  # smaller pictures are shown enlarged (pixelated) to at least this size


def render_html(report: Report) -> str:
    """The report as one HTML document that needs nothing else to open."""
    env = _environment(autoescape=True)
    env.filters["src"] = _data_url
    return env.get_template("report.html.j2").render(r=report)


def render_markdown(report: Report, images: str = "images") -> tuple[str, dict[str, bytes]]:
    """The report as Markdown and its pictures by file name (under ``images``/)."""
    env = _environment(autoescape=False)
    files: dict[str, bytes] = {}

    def src(picture: Picture) -> str:
        files[picture.name] = picture.data
        return f"{images}/{picture.name}"

    env.filters["src"] = src
    text = env.get_template("report.md.j2").render(r=report)
    return text, files


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in its folder, renamed into place:
    a failed write leaves no partial file. Raises :class:`UserFacingError` saying why."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise UserFacingError(f"cannot write {path}: {exc.strerror or exc}") from None


def _environment(autoescape: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    filters: dict[str, Callable[..., Any]] = {
        "pct": _pct,
        "num": _num,
        "shown": _shown,
        "shade": _shade,
        "md": _markdown_text,
        "md_cell": _markdown_cell,
    }
    env.filters.update(filters)
    return env


def _data_url(picture: Picture) -> str:
    return f"data:image/{picture.kind};base64," + base64.b64encode(picture.data).decode("ascii")


def _pct(value: float, digits: int = 1) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}%}"


def _num(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:,.3g}"


def _shown(picture: Picture) -> tuple[int, int]:
    """The size a picture is shown at: small ones enlarged by a whole factor."""
    side = max(picture.width, picture.height, 1)
    factor = max(1, math.ceil(SHOWN_PX / side)) if side < SHOWN_PX else 1
    return picture.width * factor, picture.height * factor


def _shade(share: float, diagonal: bool) -> str:
    """Inline style of a matrix cell: its share of the row, blue on the diagonal, red off it."""
    if share <= 0:
        return ""
    rgb = "31,119,180" if diagonal else "214,39,40"
    text = "color:#fff;" if share > 0.55 else ""
    return f"background:rgba({rgb},{0.08 + 0.92 * share:.3f});{text}"


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_LINE_START = re.compile(r"^(\s*)([#>+=-]|\d+(?=[.)]))", re.MULTILINE)


def _markdown_text(value: Any) -> str:
    """User text made inert in Markdown: HTML characters as entities, Markdown's own
    backslashed (and a heading, quote or list marker at the start of a line)."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return _LINE_START.sub(lambda m: _line_start(m.group(1), m.group(2)), text)


def _line_start(space: str, marker: str) -> str:
    """``#`` → ``\\#``; ``12`` (of ``12.``) → ``12\\`` so that the dot is escaped."""
    return f"{space}{marker}\\" if marker[0].isdigit() else f"{space}\\{marker}"


def _markdown_cell(value: Any) -> str:
    """:func:`_markdown_text` on one line, for a table cell."""
    return _markdown_text(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " ")

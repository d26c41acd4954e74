"""The report of an error-analysis session: one self-contained HTML file (or Markdown with an
``images/`` folder) holding the model and dataset with the accuracy and the matrix, every
finding with its images and their predicted- and true-class maps, the top patterns with any
verdicts, the worst slices, and every tagged or noted image with its tags and notes.

    html = report_html(ReportInputs(result, dataset, notes, dataset_key(spec), "m", "d"))
    write_report(inputs, Path("report.html"))            # or report.md (+ images/)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from core.report.content import Report, ReportInputs, gather
from core.report.render import render_html, render_markdown, write_atomic

__all__ = ["Report", "ReportInputs", "gather", "report_html", "write_report"]


def report_html(inputs: ReportInputs) -> str:
    """The report as one HTML document (e.g. for a download button)."""
    return render_html(gather(inputs))


def write_report(inputs: ReportInputs, out: Path, fmt: Literal["html", "md"] = "html") -> Report:
    """Write the report to ``out``: HTML, or Markdown with its pictures in ``images/`` beside
    it. Each file is written whole or not at all; returns what it holds."""
    report = gather(inputs)
    if fmt == "html":
        write_atomic(out, render_html(report).encode("utf-8"))
        return report
    text, pictures = render_markdown(report)
    for name, data in pictures.items():
        write_atomic(out.parent / "images" / name, data)
    write_atomic(out, text.encode("utf-8"))
    return report

"""``python -m core report``: the session's report, one self-contained HTML file (or Markdown)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from core.cli.common import dataset_of, results
from core.config import load_config
from core.data.datasets import dataset_key, open_dataset
from core.errors import UserFacingError
from core.notes import NotesStore

__all__ = ["add_parsers"]


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    report = commands.add_parser(
        "report",
        help="one self-contained HTML file (or Markdown): metrics, findings with their maps, "
        "patterns, slices, tagged images",
    )
    report.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    report.add_argument("--model", help="model name (default: the config's first)")
    report.add_argument("--dataset", help="dataset name (default: the model's first)")
    report.add_argument("--out", required=True, type=Path, help="report.html or report.md")
    report.add_argument(
        "--format", choices=("html", "md"), help="default: from --out (.md: Markdown, else HTML)"
    )
    report.add_argument(
        "--dashboard-url",
        default="",
        metavar="URL",
        help="the dashboard's address (http(s)://...): the findings' links open their views",
    )
    report.add_argument("--patterns", type=int, default=10, help="top patterns shown (default 10)")
    return {"report": _report}


def _report(args: argparse.Namespace) -> int:
    from core.report import ReportInputs, write_report  # Jinja2: only for this command

    if args.dashboard_url and not args.dashboard_url.startswith(("http://", "https://")):
        raise UserFacingError(f"--dashboard-url must be http(s)://..., got {args.dashboard_url!r}")
    markdown = (args.format or "") == "md" or (
        args.format is None and args.out.suffix.lower() in (".md", ".markdown")
    )
    fmt: Literal["html", "md"] = "md" if markdown else "html"
    started = time.perf_counter()
    config = load_config(args.config)
    spec = config.model(args.model)
    name = dataset_of(config, spec.name, args.dataset)
    result = results(config, spec.name, name)
    inputs = ReportInputs(
        result=result,
        dataset=open_dataset(config.dataset(name), result.classes),
        notes=NotesStore(config.notes_db, read_only=True, default_tags=config.tags),
        dataset_key=dataset_key(config.dataset(name)),
        model=spec.name,
        dataset_name=name,
        project=str(config.path),
        dashboard_url=args.dashboard_url,
        top_patterns=args.patterns,
    )
    report = write_report(inputs, args.out, fmt)
    size = args.out.stat().st_size
    print(
        f"wrote {args.out} ({size / 1e6:.1f} MB{', images in images/' if fmt == 'md' else ''}): "
        f"{len(report.findings)} findings, {len(report.patterns)} patterns, "
        f"{len(report.slices)} slices, {len(report.tagged)} tagged images "
        f"in {time.perf_counter() - started:.1f} s"
    )
    return 0

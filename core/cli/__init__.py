"""Command line: ``python -m core evaluate | label-issues | compare | patterns | similar
| faithfulness | sanity | verify | export-labels | import-labels | tag | report | slices
--config FILE ...``.

One module per group of commands; each has ``add_parsers(commands)``, which adds its
sub-commands and returns their handlers. torch, the model, scipy and scikit-learn are imported
by the commands that need them: reading stored results (a second ``evaluate`` on unchanged
inputs) must not wait seconds for them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from core.cli import analyses, check, evaluate, labels, report, slices, trust, verify
from core.cli.common import arrays as _arrays  # noqa: F401 (tests and scripts use these)
from core.cli.common import results as _results  # noqa: F401
from core.cli.evaluate import export_batches, export_table
from core.cli.evaluate import report as _report  # noqa: F401
from core.errors import UserFacingError

__all__ = ["export_batches", "export_table", "main"]


COMMAND_GROUPS = (evaluate, analyses, trust, check, verify, labels, report, slices)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for a problem with the input)."""
    parser, handlers = _parser()
    args = parser.parse_args(argv)
    try:
        return handlers[args.command](args)
    except UserFacingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the next run continues from the last saved batch", file=sys.stderr)
        return 130


def _parser() -> tuple[argparse.ArgumentParser, dict[str, Callable[[argparse.Namespace], int]]]:
    parser = argparse.ArgumentParser(
        prog="python -m core",
        description="Error analysis of image classifiers from the command line.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}
    for group in COMMAND_GROUPS:
        handlers.update(group.add_parsers(commands))
    return parser, handlers

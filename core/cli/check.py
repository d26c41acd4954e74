"""``python -m core check``: a regression gate for CI (exit 0 passed, 1 regressions, 2 cannot
compare).

Both models' results come from the store (a cached evaluation is reused, a missing one is
computed first); :func:`core.analysis.regression.check_results` pairs them image by image and
tests every group. Each regressed or improved group carries a link to its newly broken (or
fixed) images on the dashboard's Compare page.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import numpy as np

from core.analysis.regression import GROUP_KINDS, Gate, check_results
from core.cli.common import dataset_of, results
from core.cli.evaluate import _engine
from core.config import ProjectConfig, load_config
from core.errors import UserFacingError

if TYPE_CHECKING:
    import pandas as pd

    from core.results import Results

__all__ = ["add_parsers", "group_link", "junit_xml", "report_json", "slice_masks"]

COMPARE_PAGE = "compare-models"  # the dashboard's Compare page (url_path in dashboard/app.py)


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    gate = commands.add_parser(
        "check",
        help="regression gate: is the candidate significantly worse than the baseline anywhere? "
        "(exit 0 passed, 1 regressions, 2 cannot compare)",
    )
    gate.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    gate.add_argument("--baseline", required=True, help="model name of the baseline")
    gate.add_argument("--candidate", required=True, help="model name of the candidate")
    gate.add_argument("--dataset", help="dataset name (default: the baseline's first)")
    gate.add_argument(
        "--by",
        default="overall,class,slice",
        help="groups to test, comma-separated: overall, class (recall per true class), slice "
        "(default: all three)",
    )
    gate.add_argument("--alpha", type=float, default=0.05, help="family-wise error (Holm)")
    gate.add_argument(
        "--min-drop",
        type=float,
        default=0.01,
        help="smallest accuracy change that counts (0.01 = one point)",
    )
    gate.add_argument("--json", action="store_true", help="print the verdict as JSON")
    gate.add_argument("--junit", type=Path, help="also write JUnit XML, one test case per group")
    gate.add_argument("--url", help="the dashboard's address: makes the links absolute")
    gate.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="for a result not stored yet: evaluate here (default) or on Ray",
    )
    gate.add_argument("--address", help="with --engine ray: a running Ray cluster (host:port)")
    return {"check": _check}


def _check(args: argparse.Namespace) -> int:
    by = [part.strip() for part in args.by.split(",") if part.strip()]
    if not 0 < args.alpha < 1:
        raise UserFacingError(f"--alpha must be between 0 and 1, got {args.alpha}")
    if not 0 <= args.min_drop <= 1:
        raise UserFacingError(f"--min-drop must be between 0 and 1, got {args.min_drop}")
    if not by or any(k not in GROUP_KINDS for k in by):
        raise UserFacingError(f"--by takes {', '.join(GROUP_KINDS)}, got {args.by!r}")
    config = load_config(args.config)
    dataset = _dataset(config, args.baseline, args.candidate, args.dataset)
    engine = _engine(args)
    baseline, candidate = (
        results(config, name, dataset, engine=engine) for name in (args.baseline, args.candidate)
    )
    slices = slice_masks(config, dataset, baseline) if "slice" in by else {}
    if "slice" in by and not slices and by != ["slice"]:
        print("note: no slices defined for this dataset; slice groups skipped", file=sys.stderr)
    gate = check_results(baseline, candidate, by, slices, args.alpha, args.min_drop)
    if len(gate.table) == 0:
        raise UserFacingError(f"no group to test (--by {args.by}: none has an image)")
    if args.junit is not None:
        _write(args.junit, junit_xml(gate, args.url))
    if args.json:
        print(json.dumps(report_json(gate, args.url), indent=2))
    else:
        _print_report(gate, args.url)
    return 0 if gate.passed else 1


def _dataset(config: ProjectConfig, baseline: str, candidate: str, asked: str | None) -> str:
    """The dataset both models are checked on: the one asked for, else the baseline's first."""
    dataset = dataset_of(config, baseline, asked)
    for name in (baseline, candidate):
        listed = config.datasets_for(config.model(name).name)
        if dataset not in listed:
            raise UserFacingError(
                f"cannot compare: {name!r} is not evaluated on dataset {dataset!r} (its datasets: "
                f"{', '.join(listed)}); pass --dataset with a dataset of both models"
            )
    return dataset


def slice_masks(config: ProjectConfig, dataset: str, result: Results) -> dict[str, np.ndarray]:
    """Named boolean masks over ``result``'s evaluated rows, one per saved slice of ``dataset``
    (the dashboard's named slices) and per value (or quantile bin) of each of its metadata
    columns: the "slice" groups. A saved slice that no longer fits the columns is skipped with
    a note on stderr."""
    from core.analysis.slice_groups import result_slice_groups
    from core.data.datasets import dataset_key, open_dataset
    from core.notes import NotesError, NotesStore
    from core.saved_slices import SavedSlices

    spec = config.dataset(dataset)
    data = open_dataset(spec, result.classes)
    try:
        named = SavedSlices(NotesStore(config.notes_db, read_only=True)).all(dataset_key(spec))
    except NotesError as exc:
        print(f"note: saved slices not read ({exc})", file=sys.stderr)
        named = []
    groups = result_slice_groups(result, data, [(s.name, s.slice) for s in named])
    for name, reason in groups.skipped.items():
        print(f"note: saved slice {name!r} skipped: {reason}", file=sys.stderr)
    return groups.masks


def group_link(gate: Gate, group: str, name: str, verdict: str, url: str | None = None) -> str:
    """The Compare page showing a group's newly broken images (a regression) or its fixed ones
    (an improvement): relative, or absolute under ``url``.

    Query parameters: ``model`` (baseline), ``model_b`` (candidate), ``dataset``, ``agree``
    (``broken`` or ``fixed``, the agreement cell) and ``group`` (``class:<name>`` or
    ``slice:<name>``; absent for overall).
    """
    params = {"model": gate.baseline, "model_b": gate.candidate, "dataset": gate.dataset}
    params["agree"] = "fixed" if verdict == "improvement" else "broken"
    if group != "overall":
        params["group"] = f"{group}:{name}"
    link = f"{COMPARE_PAGE}?{urlencode(params, quote_via=quote)}"
    return f"{url.rstrip('/')}/{link}" if url else link


def report_json(gate: Gate, url: str | None = None) -> dict[str, Any]:
    """``{"passed", "regressions": [...], "improvements": [...]}`` plus what was checked.

    Each entry: group, name, n, baseline and candidate accuracy, broken, fixed, p (Holm-adjusted
    McNemar), p_raw (before the adjustment), link.
    """
    return {
        "passed": gate.passed,
        "baseline": gate.baseline,
        "candidate": gate.candidate,
        "dataset": gate.dataset,
        "groups": len(gate.table),
        "alpha": gate.alpha,
        "min_drop": gate.min_drop,
        "regressions": _entries(gate, gate.regressions, url),
        "improvements": _entries(gate, gate.improvements, url),
    }


def _entries(gate: Gate, rows: pd.DataFrame, url: str | None) -> list[dict[str, Any]]:
    return [
        {
            "group": row.group,
            "name": row.name,
            "n": int(row.n),
            "baseline": float(row.baseline),
            "candidate": float(row.candidate),
            "broken": int(row.broken),
            "fixed": int(row.fixed),
            "p": float(row.p),
            "p_raw": float(row.p_raw),
            "link": group_link(gate, row.group, row.name, row.verdict, url),
        }
        for row in rows.itertuples(index=False)
    ]


def junit_xml(gate: Gate, url: str | None = None) -> bytes:
    """JUnit XML: one test case per group (classname ``check.<group>``), a failure per
    regression saying by how much, with p and the link to its images."""
    table = gate.table
    suite = ET.Element(
        "testsuite",
        name=f"check {gate.candidate} vs {gate.baseline}",
        tests=str(len(table)),
        failures=str(len(gate.regressions)),
        errors="0",
        skipped="0",
    )
    for row in table.itertuples(index=False):
        case = ET.SubElement(suite, "testcase", classname=f"check.{row.group}", name=row.name)
        summary = _summary(row)
        if row.verdict == "regression":
            failure = ET.SubElement(case, "failure", message=summary, type="regression")
            failure.text = f"{summary}\n{group_link(gate, row.group, row.name, row.verdict, url)}"
        elif row.verdict == "improvement":
            out = ET.SubElement(case, "system-out")
            out.text = f"improvement: {summary}"
    root = ET.Element(
        "testsuites", tests=suite.get("tests", "0"), failures=suite.get("failures", "0")
    )
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _summary(row: Any) -> str:
    return (
        f"accuracy {row.baseline:.2%} -> {row.candidate:.2%} ({row.change * 100:+.2f} points) on "
        f"{row.n:,} images: {row.broken:,} newly broken, {row.fixed:,} fixed, p = {row.p:.3g} "
        f"(Holm; McNemar {row.p_raw:.3g})"
    )


def _write(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as exc:
        raise UserFacingError(f"cannot write --junit {path}: {exc.strerror or exc}") from None


def _print_report(gate: Gate, url: str | None) -> None:
    table = gate.table
    kinds = ", ".join(f"{n:,} {k}" for k, n in table["group"].value_counts(sort=False).items())
    print(
        f"check: {gate.candidate} (candidate) vs {gate.baseline} (baseline) on {gate.dataset}, "
        f"{len(gate.comparison.true):,} images; {len(table):,} groups ({kinds}); "
        f"alpha {gate.alpha:g} (Holm), min drop {gate.min_drop:g}"
    )
    for title, rows in (("REGRESSIONS", gate.regressions), ("improvements", gate.improvements)):
        if not len(rows):
            continue
        print(f"\n{title} ({len(rows)}; p: McNemar's exact test, Holm-adjusted):")
        print(_table(rows))
        print("images (newly broken for a regression, fixed for an improvement):")
        for row in rows.itertuples(index=False):
            label = "overall" if row.group == "overall" else f"{row.group}:{row.name}"
            print(f"  {label}  {group_link(gate, row.group, row.name, row.verdict, url)}")
    if gate.passed:
        print(f"\npassed: no group regressed ({len(gate.improvements)} improved)")
    else:
        print(f"\nFAILED: {len(gate.regressions)} regression(s)")


def _table(rows: pd.DataFrame) -> str:
    shown = rows.assign(
        baseline=rows["baseline"].map("{:.2%}".format),
        candidate=rows["candidate"].map("{:.2%}".format),
        change=(rows["change"] * 100).map("{:+.2f}".format),
        p=rows["p"].map("{:.2g}".format),
        p_raw=rows["p_raw"].map("{:.2g}".format),
    )
    columns = ["group", "name", "n", "baseline", "candidate", "change", "broken", "fixed"]
    return shown[[*columns, "p", "p_raw"]].to_string(index=False)

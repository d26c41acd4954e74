"""``python -m core verify``: the causal test of a pattern, or of a box of one's own."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from core.cli.common import cell, dataset_of, print_progress, results
from core.config import load_config
from core.data.datasets import open_dataset
from core.errors import UserFacingError

if TYPE_CHECKING:
    from core.analysis.causal import Subject, Verdict
    from core.results import Results

__all__ = ["add_parsers", "parse_region"]


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    check = commands.add_parser(
        "verify",
        help="does a pattern's region cause its prediction? transplant and erase it vs controls",
    )
    check.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    check.add_argument("--model", help="model name (default: the config's first)")
    check.add_argument("--dataset", help="dataset name (default: the model's first)")
    which = check.add_mutually_exclusive_group(required=True)
    which.add_argument("--pattern", type=int, help="1-based rank in `patterns --json`")
    which.add_argument("--cell", help="TRUE,PRED: test --region on this cell's images")
    check.add_argument("--region", help="x0,y0,x1,y1: a box in input fractions (with --cell)")
    check.add_argument("--targets", type=int, default=200, help="most targets (default 200)")
    check.add_argument("--seed", type=int, default=0, help="seed of every draw (default 0)")
    check.add_argument("--json", action="store_true", help="print JSON")
    return {"verify": _verify}


def parse_region(text: str) -> tuple[float, float, float, float]:
    """``x0,y0,x1,y1`` (input fractions) -> four floats; raises UserFacingError."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4:
        raise UserFacingError(f"--region takes x0,y0,x1,y1 (four fractions), got {text!r}")
    x0, y0, x1, y1 = values
    if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
        raise UserFacingError(
            f"--region needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {text!r}"
        )
    return x0, y0, x1, y1


def _subject(args: argparse.Namespace, result: Results) -> Subject:
    from core.analysis.causal import pattern_subject, region_subject

    if args.pattern is not None:
        if args.region is not None:
            raise UserFacingError("--region goes with --cell; a pattern brings its own region")
        from core.analysis.patterns import result_patterns  # scipy: only with --pattern

        found = result_patterns(result)
        if not 1 <= args.pattern <= len(found):
            raise UserFacingError(f"--pattern takes a rank from 1 to {len(found)}")
        return pattern_subject(result, found[args.pattern - 1])
    if args.region is None:
        raise UserFacingError("--cell needs --region x0,y0,x1,y1")
    true, pred = cell(args.cell, result.classes)
    return region_subject(result, true, pred, parse_region(args.region))


def _verify(args: argparse.Namespace) -> int:
    from core.analysis.causal import result_verdict, stored_verdict

    if args.targets < 1:
        raise UserFacingError(f"--targets must be at least 1, got {args.targets}")
    if args.seed < 0:
        raise UserFacingError(f"--seed must be at least 0, got {args.seed}")
    config = load_config(args.config)
    spec = config.model(args.model)
    dataset_name = dataset_of(config, spec.name, args.dataset)
    result = results(config, spec.name, dataset_name)
    subject = _subject(args, result)
    verdict = stored_verdict(result, subject, args.targets, args.seed)
    if verdict is None:
        from core.data.models import load_model  # torch: only when there is something to test

        model = load_model(spec)
        dataset = open_dataset(config.dataset(dataset_name), spec.classes)

        def progress(done: int, total: int) -> None:
            print_progress(done, total, "forward passes")

        verdict = result_verdict(result, model, dataset, subject, args.targets, args.seed, progress)
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(verdict.to_dict(result.classes)))
        return 0
    _print(verdict, result.classes)
    return 0


def _print(verdict: Verdict, classes: tuple[str, ...]) -> None:
    s = verdict.subject
    x0, y0, x1, y1 = s.box
    what = f"pattern {s.pattern}" if s.pattern else "region"
    print(
        f"{what}: {classes[s.true]} → {classes[s.pred]}, {len(s.rows)} images; region "
        f"x {x0:.2f}–{x1:.2f}, y {y0:.2f}–{y1:.2f} of the input "
        f"({(x1 - x0) * (y1 - y0):.0%} of its area); {verdict.targets} targets at most, "
        f"seed {verdict.seed}"
    )
    arms = {
        "transplant": (verdict.transplant, f"flipped to {classes[s.pred]}"),
        "transplant control": (verdict.transplant_control, "flipped"),
        "erase": (verdict.erase, f"left {classes[s.pred]}"),
        "erase control": (verdict.erase_control, "left"),
    }
    frame = pd.DataFrame(
        {
            "arm": list(arms),
            "images": [a.n for a, _ in arms.values()],
            "hits": [f"{a.hits} {word}" for a, word in arms.values()],
            "rate": [f"{a.rate:.3f}" for a, _ in arms.values()],
            "95% CI": [f"{a.ci[0]:.3f}–{a.ci[1]:.3f}" for a, _ in arms.values()],
            "back to true": ["" if a.to_true is None else str(a.to_true) for a, _ in arms.values()],
        }
    )
    print(frame.to_string(index=False))
    print(
        f"transplant vs control: p = {verdict.p_transplant:.3g} "
        f"({'holds: sufficient' if verdict.sufficient else 'does not hold'}); "
        f"erase vs control: p = {verdict.p_erase:.3g} "
        f"({'holds: necessary' if verdict.necessary else 'does not hold'})"
    )
    print(f"verdict: {verdict.verdict} (an arm holds at p < 0.001 with its rate ≥ 0.25 above)")

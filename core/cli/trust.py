"""``python -m core faithfulness | sanity``: how far to trust the maps."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core.cli.common import cell, dataset_of, results
from core.config import load_config
from core.data.datasets import open_dataset
from core.errors import UserFacingError

__all__ = ["add_parsers"]


def add_parsers(commands: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    faith = commands.add_parser(
        "faithfulness", help="how far to trust the maps of images: scores vs a random map"
    )
    faith.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    faith.add_argument("--model", help="model name (default: the config's first)")
    faith.add_argument("--dataset", help="dataset name (default: the config's first)")
    which = faith.add_mutually_exclusive_group(required=True)
    which.add_argument("--cell", help="TRUE,PRED: the images of a cell (class names or indices)")
    which.add_argument("--image", action="append", help="an image path (relative to the root)")
    faith.add_argument(
        "--method", default="grad-cam", help="grad-cam (default), grad-cam++, cam, saliency"
    )
    faith.add_argument("--layer", help="target layer (default: the model's)")
    faith.add_argument("--limit", type=int, default=100, help="at most this many images of a cell")
    faith.add_argument("--json", action="store_true", help="print a JSON list")
    check = commands.add_parser(
        "sanity", help="model-randomisation check: do the maps depend on the weights?"
    )
    check.add_argument("--config", required=True, type=Path, help="project config (TOML)")
    check.add_argument("--model", help="model name (default: the config's first)")
    check.add_argument("--dataset", help="dataset name (default: the config's first)")
    check.add_argument("--layer", help="target layer (default: the model's)")
    check.add_argument(
        "--method", default="grad-cam", help="grad-cam (default), grad-cam++, cam, saliency"
    )
    check.add_argument("--images", type=int, default=64, help="seeded sample size (default 64)")
    check.add_argument("--json", action="store_true", help="print JSON")
    return {"faithfulness": _faithfulness, "sanity": _sanity}


def _faithfulness(args: argparse.Namespace) -> int:
    import json

    from core.analysis.trust import load_images, method_name, score_images
    from core.data.models import load_model

    config = load_config(args.config)
    method = method_name(args.method)
    spec = config.model(args.model)
    dataset_name = dataset_of(config, spec.name, args.dataset)
    result = results(config, spec.name, dataset_name)
    dataset = open_dataset(config.dataset(dataset_name), spec.classes)
    table = result.predictions
    if args.cell:
        true, pred = cell(args.cell, result.classes)
        rows = table[(table["true"] == true) & (table["pred"] == pred)].head(max(args.limit, 0))
    else:
        rows = table[table["path"].isin(args.image)]
        missing = sorted(set(args.image) - set(rows["path"]))
        if missing:
            raise UserFacingError(f"not among the evaluated images of {dataset.name!r}: {missing}")
    model = load_model(spec)
    images, kept, failed = load_images(model, dataset, list(rows["path"]))
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    rows = rows.iloc[kept]
    found = score_images(
        model,
        images,
        list(rows["path"]),
        rows["pred"].tolist(),
        rows["true"].tolist(),
        result.classes,
        method,
        args.layer,
    )
    if args.json:
        print(json.dumps([f.to_dict() for f in found], indent=1))
        return 0
    print(
        f"{len(found)} image(s), {method}: score = share of the class's probability lost when the "
        "map's region is removed (higher = more faithful); random = the map's cells shuffled"
    )
    frame = pd.DataFrame(
        {
            "path": [f.path for f in found],
            "pred": [f.pred["class"] for f in found],
            "pred score": [round(f.pred["score"], 3) for f in found],
            "true": [f.true["class"] for f in found],
            "true score": [round(f.true["score"], 3) for f in found],
            "random score": [round(f.random["score"], 3) for f in found],
        }
    )
    if len(frame):
        print(frame.to_string(index=False))
        print(
            f"median: pred {frame['pred score'].median():.3f}, true "
            f"{frame['true score'].median():.3f}, random {frame['random score'].median():.3f}"
        )
    return 0


def _sanity(args: argparse.Namespace) -> int:
    import json

    from core.analysis.trust import method_name, model_sanity
    from core.data.models import load_model

    config = load_config(args.config)
    spec = config.model(args.model)
    dataset = open_dataset(
        config.dataset(dataset_of(config, spec.name, args.dataset)), spec.classes
    )
    model = load_model(spec)
    report = model_sanity(model, dataset, method_name(args.method), args.layer, args.images)
    if args.json:
        print(json.dumps(report.to_dict()))
        return 0
    print(
        f"{report.method} at {report.layer or 'the input'}: Spearman rank correlation of the maps "
        "with the original model's, as the weights are randomised from the head down"
    )
    for stage in report.stages:
        print(f"  {stage.spearman:+.3f}  up to {stage.randomised}")
    verdict = "passes" if report.passes else "FAILS"
    print(
        f"{verdict}: with every weight random the correlation is "
        f"{report.stages[-1].spearman:+.3f} (passes below {report.threshold})"
    )
    return 0

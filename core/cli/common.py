"""What the commands share: the stored or new results of a model on a dataset, class and
dataset lookups, progress on stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from core.config import ProjectConfig
from core.data.datasets import ImageDataset, open_dataset
from core.errors import UserFacingError
from core.results import Results
from core.results.evaluate import evaluate, lookup

if TYPE_CHECKING:
    from core.analysis.comparison import ModelResults

__all__ = ["Paths", "arrays", "cell", "dataset_of", "print_progress", "results"]


def results(
    config: ProjectConfig,
    model_name: str | None,
    dataset_name: str | None,
    cache: bool = True,
    out: Path | None = None,
    maps: bool = True,
    embeddings: bool = True,
    dataset: ImageDataset | None = None,
    **run: Any,
) -> Results:
    """The stored results of unchanged inputs (no model loaded), else a new evaluation
    (``dataset``: the model's dataset, already opened)."""
    spec = config.model(model_name)
    if dataset is None:
        dataset = open_dataset(
            config.dataset(dataset_of(config, spec.name, dataset_name)), spec.classes
        )
    cache_dir = config.cache_dir if cache else None
    try:
        found = lookup(spec, dataset, cache_dir, out, maps, embeddings)
    except OSError:  # e.g. missing weights or hf folder: loading the model says so clearly
        found = None
    if found is not None and found.result is not None:
        print(f"stored results of unchanged inputs: {found.folder}", file=sys.stderr)
        return found.result
    from core.data.models import load_model  # torch: only when there is something to compute

    model = load_model(spec)
    for note in model.warnings:
        print(f"warning: {note}", file=sys.stderr)
    try:
        return evaluate(
            model,
            dataset,
            cache_dir,
            print_progress,
            out=out,
            maps=maps,
            found=found,
            embeddings=embeddings,
            **run,
        )
    finally:
        print(file=sys.stderr)  # end the progress line, also before an error message


def arrays(result: Results) -> ModelResults:
    """The per-image arrays the analyses take (scipy and scikit-learn: only these commands)."""
    from core.analysis.comparison import ModelResults

    return ModelResults.of(result)


def dataset_of(config: ProjectConfig, model: str, name: str | None) -> str:
    """The dataset asked for, else the model's first (its ``datasets`` list, else the config's)."""
    if name is not None:
        return config.dataset(name).name
    return (config.datasets_for(model) or [config.dataset().name])[0]


def cell(text: str, classes: Sequence[str]) -> tuple[int, int]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise UserFacingError(f"--cell takes TRUE,PRED, got {text!r}")
    found = []
    for part in parts:
        if part in classes:
            found.append(list(classes).index(part))
        elif part.isdigit() and int(part) < len(classes):
            found.append(int(part))
        else:
            raise UserFacingError(f"unknown class {part!r}; classes: {', '.join(classes)}")
    return found[0], found[1]


def print_progress(done: int, total: int, what: str = "predicting") -> None:
    print(f"\r{what}: {done}/{total}", end="", file=sys.stderr, flush=True)


class Paths:
    """Manifest paths by row, read one at a time (no list of a million strings)."""

    def __init__(self, column: pa.ChunkedArray) -> None:
        self.column = column

    def __getitem__(self, row: int) -> str:
        return str(self.column[row].as_py())

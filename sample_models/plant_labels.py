"""A sample test set with a few planted wrong labels, as a small project (nothing is copied twice).

::

    python sample_models/plant_labels.py --out /tmp/planted [--dataset digits-test] [--count 8]

writes into ``OUT``:

* ``labels.csv`` — a ``path,label`` manifest of every image of the sample dataset (the images
  stay where they are), ``--count`` of them given a wrong label (seeded, one per class first);
* ``planted.csv`` — ``path,label,planted``: the true and the planted label of those images;
* ``config.toml`` — the sample's models for that dataset, evaluated on the dataset
  ``<dataset>-planted`` (this manifest), with a cache in ``OUT/cache``.

Same arguments, same output (byte for byte).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from core.config import ModelSpec, load_config  # noqa: E402
from core.data.datasets import open_dataset  # noqa: E402

SAMPLE_CONFIG = HERE / "config.toml"


def plant(out: Path, dataset: str = "digits-test", count: int = 8, seed: int = 0) -> Path:
    """Write the planted project into ``out``; returns its ``config.toml``."""
    config = load_config(SAMPLE_CONFIG)
    spec = config.dataset(dataset)
    data = open_dataset(spec)
    classes = list(data.classes)
    samples = [(Path(p).as_posix(), label) for p, label in data.samples]
    rng = np.random.default_rng([seed, count])
    picks = _picks(rng, [label for _, label in samples], count)
    wrong = {i: int((samples[i][1] + rng.integers(1, len(classes))) % len(classes)) for i in picks}
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(
        out / "labels.csv",
        ["path", "label"],
        [[p, classes[wrong.get(i, label)]] for i, (p, label) in enumerate(samples)],
    )
    _write_csv(
        out / "planted.csv",
        ["path", "label", "planted"],
        [[samples[i][0], classes[samples[i][1]], classes[wrong[i]]] for i in sorted(picks)],
    )
    models = [m for m in config.models if m.datasets is None or dataset in m.datasets]
    for module in {m.factory.split(":")[0] for m in models if m.factory}:
        shutil.copy2(HERE / f"{module}.py", out / f"{module}.py")
    entries = "".join(_model_entry(m, f"{dataset}-planted") for m in models)
    path = out / "config.toml"
    path.write_text(
        f'cache_dir = "cache"\n{entries}\n[[datasets]]\nname = "{dataset}-planted"\n'
        f'root = "{spec.root.as_posix()}"\ncsv = "labels.csv"\nclasses = {classes!r}\n'.replace(
            "'", '"'
        ),
        encoding="utf-8",
    )
    return path


def _picks(rng: np.random.Generator, labels: list[int], count: int) -> list[int]:
    """``count`` image positions, spread over the classes (one per class, then again)."""
    by_class = [rng.permutation(np.flatnonzero(np.array(labels) == c)) for c in sorted(set(labels))]
    order = [
        int(ids[r]) for r in range(max(map(len, by_class))) for ids in by_class if r < len(ids)
    ]
    return order[:count]


def _model_entry(model: ModelSpec, dataset: str) -> str:
    source = "factory" if model.factory else "architecture"
    assert model.weights is not None
    return (
        f'\n[[models]]\nname = "{model.name}"\n{source} = "{model.factory or model.architecture}"\n'
        f'weights = "{model.weights.as_posix()}"\ninput_size = {list(model.input_size)}\n'
        f"channels = {model.channels}\nmean = {list(model.mean)}\nstd = {list(model.std)}\n"
        f'datasets = ["{dataset}"]\n'
    )


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--dataset", default="digits-test")
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = plant(args.out, args.dataset, args.count, args.seed)
    print(f"wrote {path} and the manifests beside it ({args.count} planted labels)")


if __name__ == "__main__":
    main()

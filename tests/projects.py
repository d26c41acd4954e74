"""Small project configs over the bundled sample, and what core computes on them, for the
dashboard tests."""

from __future__ import annotations

import csv
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from core import cell_rows, evaluate, load_config, load_model, open_dataset
from core.analysis.gallery import sort_rows

if TYPE_CHECKING:
    import pandas as pd

    from core import ImageDataset, LoadedModel, Results
    from core.analysis.embedding_map import Region

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_models"
MARKS = SAMPLE / "shapes" / "test" / "marks.csv"  # which shapes-test images carry the mark


def sample_config(folder: Path) -> Path:
    """The bundled sample config with every sample path absolute and its cache in ``folder``
    (a fresh cache: nothing the server or another test stored)."""
    text = (SAMPLE / "config.toml").read_text(encoding="utf-8")
    text = text.replace('cache_dir = ".cache"', 'cache_dir = "cache"')
    text = re.sub(r'"(?=(shapes|digits)/)', f'"{SAMPLE.as_posix()}/', text)
    for name in ("digits_model.py", "shapes_models.py"):
        shutil.copy(SAMPLE / name, folder / name)
    path = folder / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def write_config(folder: Path) -> Path:
    """A config using the sample's files, a second model and dataset, and a broken entry."""
    shutil.copy(SAMPLE / "digits_model.py", folder / "digits_model.py")
    test_root = SAMPLE / "digits" / "test"
    even = sorted(p for p in test_root.rglob("*.png") if int(p.parent.name) % 2 == 0)
    lines = [
        "path,label",
        *(f"{p.relative_to(test_root).as_posix()},{p.parent.name}" for p in even),
    ]
    (folder / "even.csv").write_text("\n".join(lines) + "\n")
    weights = (SAMPLE / "digits" / "weights.safetensors").as_posix()
    model = 'factory = "digits_model:build"\ninput_size = [32, 32]\nchannels = 1\nstd = [0.5]\n'
    config = f"""
cache_dir = "cache"
[[models]]
name = "digits-cnn"
weights = "{weights}"
mean = [0.5]
{model}
[[models]]
name = "digits-cnn-shifted"
weights = "{weights}"
mean = [0.6]
{model}
[[models]]
name = "broken"
weights = "missing.safetensors"
mean = [0.5]
{model}
[[datasets]]
name = "digits-test"
root = "{test_root.as_posix()}"
[[datasets]]
name = "digits-even"
csv = "{(folder / "even.csv").as_posix()}"
root = "{test_root.as_posix()}"
classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
"""
    path = folder / "config.toml"
    path.write_text(config)
    return path


def expected(config_path: Path, model: str = "digits-cnn", dataset: str = "digits-test"):  # type: ignore[no-untyped-def]
    """The evaluation as core computes it (also warms the server's disk cache)."""
    config = load_config(config_path)
    loaded = load_model(config.model(model))
    data = open_dataset(config.dataset(dataset), loaded.spec.classes)
    return evaluate(loaded, data, cache_dir=config.cache_dir)


def region_around_median(xy: np.ndarray, k: int = 30) -> Region:
    """The box around the ``k`` points of a map layout nearest its median point: chosen from
    the layout itself (where its clusters lie changes with the libraries' versions), holding
    at least those ``k``."""
    from core.analysis.embedding_map import Region

    nearest = np.argsort(((xy - np.median(xy, axis=0)) ** 2).sum(1))[:k]
    lo, hi = xy[nearest].min(0) - 1e-3, xy[nearest].max(0) + 1e-3
    return Region("box", (tuple(map(float, lo)), tuple(map(float, hi))))


def marked_paths() -> list[str]:
    """The shapes-test images that carry the magenta corner mark (paths relative to the
    dataset's root, in the order ``marks.csv`` lists them)."""
    with MARKS.open(newline="", encoding="utf-8") as handle:
        return [row["path"] for row in csv.DictReader(handle) if row["marked"] == "1"]


@dataclass(frozen=True)
class ShortcutCell:
    """A shortcut model of the sample evaluated by core, and its cell "other shape → star":
    the shape most often taken for the marked class, with the rows the gallery shows first."""

    model: LoadedModel
    dataset: ImageDataset
    result: Results
    true: int  # the shape most often taken for the marked class
    marked: int  # the marked class ("star")
    rows: pd.DataFrame  # the cell's rows, most confident first (the gallery's default order)


def shortcut_cell(model: str, dataset: str, out: Path, marked: str = "star") -> ShortcutCell:
    """Evaluate the sample's ``model`` on ``dataset`` into ``out`` (independent of any server's
    cache) and find its cell "other shape → ``marked``"."""
    config = load_config(SAMPLE / "config.toml")
    loaded = load_model(config.model(model))
    data = open_dataset(config.dataset(dataset), loaded.spec.classes)
    result = evaluate(loaded, data, out)
    star = result.classes.index(marked)
    fooled = result.predictions.query("pred == @star and true != @star")
    true = int(fooled["true"].value_counts().idxmax())
    rows = sort_rows(cell_rows(result.predictions, true, star), "confidence", ascending=False)
    return ShortcutCell(loaded, data, result, true, star, rows)

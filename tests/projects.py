"""Small project configs over the bundled sample, for the dashboard tests."""

from __future__ import annotations

import shutil
from pathlib import Path

from core import evaluate, load_config, load_model, open_dataset

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_models"


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

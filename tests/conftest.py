"""Shared fixtures: the bundled sample, tiny images, ImageFolder trees and configs in tmp_path."""

from __future__ import annotations

import importlib.util
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

if TYPE_CHECKING:  # torch is imported by the fixtures that need it, not by every test run
    from torch import nn

    from core.config import ProjectConfig
    from core.data.models import LoadedModel

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CONFIG = REPO / "sample_models" / "config.toml"


@pytest.fixture(scope="session")
def sample_config() -> ProjectConfig:
    """The bundled sample project config (read only: never evaluate with its cache_dir)."""
    from core.config import load_config

    return load_config(SAMPLE_CONFIG)


@pytest.fixture(scope="session")
def digits_model(sample_config: ProjectConfig) -> LoadedModel:
    """The bundled digits CNN (10 classes, 1×32×32), loaded once per session."""
    from core.data.models import load_model

    return load_model(sample_config.model("digits-cnn"))


@pytest.fixture(scope="session")
def digits_reference(sample_config: ProjectConfig) -> nn.Module:
    """The digits CNN built straight from its definition file and weights, without core."""
    from safetensors.torch import load_file

    spec = sample_config.model("digits-cnn")
    source = importlib.util.spec_from_file_location(
        "_digits_ref", spec.base_dir / "digits_model.py"
    )
    assert source is not None and source.loader is not None
    module = importlib.util.module_from_spec(source)
    source.loader.exec_module(module)
    model = module.build(10)
    assert spec.weights is not None
    model.load_state_dict(load_file(str(spec.weights)))
    return model.eval()


@pytest.fixture
def digits_subset(tmp_path: Path, sample_config: ProjectConfig) -> Callable[..., Path]:
    """Copy ``per_class`` sample digit PNGs of every class into a fresh ImageFolder tree."""

    def make(per_class: int = 3, name: str = "digits") -> Path:
        source = sample_config.dataset("digits-test").root
        root = tmp_path / name
        for folder in sorted(p for p in source.iterdir() if p.is_dir()):
            (root / folder.name).mkdir(parents=True)
            for png in sorted(folder.glob("*.png"))[:per_class]:
                shutil.copy2(png, root / folder.name / png.name)
        return root

    return make


def smooth_image(rng: np.random.Generator, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """A random but smooth uint8 RGB picture (H×W×3): a few blurred blobs."""
    h, w = size
    small = rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write an ImageFolder tree ``root/<class>/<i>.png`` of small random images."""

    def make(
        counts: dict[str, int],
        root: Path | None = None,
        size: tuple[int, int] = (32, 32),
        mode: str = "RGB",
        seed: int = 0,
    ) -> Path:
        root = root or tmp_path / "images"
        rng = np.random.default_rng(seed)
        for name, n in counts.items():
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = Image.fromarray(smooth_image(rng, size)).convert(mode)
                image.save(root / name / f"{i:03d}.png")
        return root

    return make


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write (dedented) TOML text to ``tmp_path/<name>``; returns the file's path."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    """A headless Chromium shared by one test module (``tests.browser.new_page`` opens a page in
    a fresh context of it)."""
    from tests.browser import chromium

    with chromium() as found:
        yield found

"""Gallery panels: what the browser is sent is the image and its overlays, cached per content."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import core.data.images
from core.analysis.panels import PanelCache, data_url, enlarge, panel_png
from core.data.datasets import ImageDataset
from core.errors import ImageRefusedError
from core.explain.overlay import overlay
from dashboard.parts.gallery import card_html


def _decode(url: str) -> np.ndarray:
    prefix = "data:image/webp;base64,"  # small panels: lossless WebP, exact pixels
    assert url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))))


def _listed(path: Path) -> tuple[ImageDataset, str]:
    """A one-image dataset holding ``path``, and the image's name in it."""
    return ImageDataset("one", path.parent, [(path.name, 0)], ["x"]), path.name


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (12, 16), dtype=np.uint8), mode="L").save(path)
    return path


def test_panels_are_the_image_and_its_overlays(picture: Path) -> None:
    cam_a = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    cam_b = cam_a.T.copy()
    urls = PanelCache().panels(*_listed(picture), [cam_a, cam_b], alpha=0.3)
    image = Image.open(picture)
    assert np.array_equal(_decode(urls[0]), np.asarray(image.convert("RGB")))
    assert np.array_equal(_decode(urls[1]), np.asarray(overlay(image, cam_a, alpha=0.3)))
    assert np.array_equal(_decode(urls[2]), np.asarray(overlay(image, cam_b, alpha=0.3)))
    assert urls[1] != urls[2]


def test_missing_map_gives_an_empty_panel(picture: Path) -> None:
    urls = PanelCache().panels(*_listed(picture), [np.ones((4, 4), np.float32), None], alpha=0.5)
    assert urls[0] and urls[1] and urls[2] == ""


def test_cache_hit_reads_nothing_and_an_edited_file_is_reread(
    picture: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = PanelCache()
    cam = np.eye(8, dtype=np.float32)
    first = cache.panels(*_listed(picture), [cam], alpha=0.5)
    reads: list[str] = []
    real = core.data.images.load_tensor
    monkeypatch.setattr(
        core.data.images, "load_tensor", lambda p, *a: reads.append(p) or real(p, *a)
    )
    assert cache.panels(*_listed(picture), [cam.copy()], alpha=0.5) == first  # same content: a hit
    assert reads == []
    assert cache.panels(*_listed(picture), [cam], alpha=0.6)[1] != first[1]  # opacity is in the key
    Image.new("L", (16, 12), 200).save(picture)
    stat = picture.stat()
    os.utime(picture, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    again = cache.panels(*_listed(picture), [cam], alpha=0.5)
    assert np.all(_decode(again[0]) == 200) and again[0] != first[0]


def test_size_bound_evicts_least_recent(picture: Path) -> None:
    one = len(data_url(panel_png(Image.open(picture))))
    cache = PanelCache(max_bytes=one * 3)
    for k in range(6):
        cache.panels(*_listed(picture), [np.full((4, 4), k / 6, np.float32)], alpha=0.5)
    assert 1 <= len(cache) <= 4


def test_enlarge_scales_small_images_by_a_whole_factor() -> None:
    assert enlarge(Image.new("L", (32, 20)), 150).size == (160, 100)
    assert enlarge(Image.new("L", (224, 224)), 150).size == (224, 224)


def test_card_html_escapes_file_and_class_names() -> None:
    html = card_html(
        "<img src=x onerror=alert(1)>.png",
        ("predicted <b>cat</b>", " (90.0%) · true dog & co"),
        [("data:image/png;base64,AAAA", "image"), ("", "Grad-CAM · <script>")],
        "tags: <i>odd</i> tag · 1 note",
    )
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert "<script>" not in html and "&lt;script&gt;" not in html  # empty panel: "no map"
    assert "&lt;b&gt;cat&lt;/b&gt;" in html and "dog &amp; co" in html
    assert html.count("<img ") == 1 and "no map" in html
    assert "tags: &lt;i&gt;odd&lt;/i&gt; tag · 1 note" in html  # tags are plain text


def test_large_panels_are_jpeg_small_ones_exact_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), np.ones((16, 16, 1)))
    photo = tmp_path / "photo.png"
    Image.fromarray(smooth.astype(np.uint8), mode="RGB").save(photo)
    cam = rng.random((7, 7), dtype=np.float32)
    urls = PanelCache().panels(*_listed(photo), [cam], alpha=0.5)
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)
    png = data_url(panel_png(Image.open(photo), cam, 0.5))
    assert len(urls[1]) < len(png) / 2  # a page of photos stays small on the wire
    decoded = np.asarray(
        Image.open(io.BytesIO(base64.b64decode(urls[1].split(",", 1)[1]))), dtype=np.float32
    )
    exact = np.asarray(overlay(Image.open(photo), cam, alpha=0.5), dtype=np.float32)
    assert decoded.shape == exact.shape and np.abs(decoded - exact).mean() < 3  # q90: close


def test_an_image_refused_by_its_dataset_is_refused_here_with_the_same_reason(
    tmp_path: Path,
) -> None:
    Image.new("RGB", (40, 30), "red").save(tmp_path / "big.png")
    Image.new("RGB", (20, 30), "red").save(tmp_path / "small.png")
    samples = [("big.png", 0), ("small.png", 0)]
    dataset = ImageDataset("d", tmp_path, samples, ["x"], max_pixels=1_000)
    reason = dataset[0].error
    assert reason is not None and "max_pixels" in reason
    with pytest.raises(ImageRefusedError) as info:
        PanelCache().panels(dataset, "big.png", [None], alpha=0.5)
    assert str(info.value) == reason
    assert dataset[1].image is not None  # what evaluates displays
    assert PanelCache().panels(dataset, "small.png", [np.eye(4, dtype=np.float32)], 0.5)[1]

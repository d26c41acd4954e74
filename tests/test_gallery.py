"""The cell view's logic in core: sorting, paging, which classes to compare, cached maps."""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd
import pytest
import torch

from core import DatasetSpec, evaluate, load_config, load_model, open_dataset
from core.analysis.gallery import (
    compared_classes,
    first_pages,
    page_count,
    page_maps,
    page_rows,
    sort_rows,
    stored_maps,
    stored_size,
    warm_pages,
    warm_stored_pages,
)
from core.analysis.panels import PanelCache
from core.errors import ImageRefusedError
from core.explain.map_cache import MapCache, MapRequest, Unavailable
from tests.projects import expected, write_config


def _rows(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        {
            "path": [f"img_{i:03d}.png" for i in range(n)],
            "confidence": rng.random(n),
            "true_prob": rng.random(n),
            "loss": rng.random(n),
        }
    )


def test_sort_and_pages_cover_every_row_once() -> None:
    rows = sort_rows(_rows(50), "confidence", ascending=False)
    assert rows["confidence"].is_monotonic_decreasing
    assert page_count(50, 24) == 3 and page_count(0, 24) == 1
    pages = [page_rows(rows, p, 24) for p in (1, 2, 3)]
    assert [len(p) for p in pages] == [24, 24, 2]
    assert sorted(pd.concat(pages)["path"]) == sorted(rows["path"])
    assert page_rows(rows, 99, 24).equals(pages[-1])  # past the end: the last page


def test_compared_classes_error_vs_diagonal() -> None:
    assert compared_classes(pd.Series({"true": 2, "pred": 1, "runner_up": 3})) == (1, 2)
    assert compared_classes(pd.Series({"true": 1, "pred": 1, "runner_up": 3})) == (1, 3)


def _request(key: str, classes: tuple[int, ...], loads: list[str]) -> MapRequest:
    def load() -> torch.Tensor:
        loads.append(key)
        return torch.full((1, 4, 4), float(int(key)))

    return MapRequest(key, classes, load)


def _compute(calls: list[int]):  # type: ignore[no-untyped-def]
    def compute(images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        # map value encodes (image value, class) so results can be checked
        value = images[:, 0, 0, 0][:, None] * 0.01 + classes.float() * 0.1
        return value[:, :, None, None].expand(-1, -1, 4, 4).clamp(0, 1)

    return compute


def test_cache_computes_missing_maps_of_a_page_in_one_call() -> None:
    cache, loads, calls = MapCache(), [], []
    page = [_request(str(i), (i % 3, (i + 1) % 3), loads) for i in range(5)]
    maps = cache.get_many("scope", page, _compute(calls))
    assert calls == [5] and len(loads) == 5
    for i, pair in enumerate(maps):
        for cls, m in zip(page[i].classes, pair, strict=True):
            assert m.shape == (4, 4) and abs(m[0, 0] - (i * 0.01 + cls * 0.1)) <= 0.5 / 255 + 1e-6
    again = cache.get_many("scope", [*page[:3], _request("7", (0, 1), loads)], _compute(calls))
    assert calls == [5, 1] and loads[-1] == "7"  # only the new image is loaded and computed
    assert all(np.array_equal(a, b) for a, b in zip(again[0], maps[0], strict=True))
    cache.get_many("other-layer", page[:1], _compute(calls))
    assert calls == [5, 1, 1]  # another scope (model/method/layer) is another key


def _broken(key: str, error: Exception) -> MapRequest:
    def load() -> torch.Tensor:
        raise error

    return MapRequest(key, (0, 1), load)


def test_one_failing_load_leaves_the_rest_of_the_page() -> None:
    cache, loads, calls = MapCache(), [], []
    page = [_request(str(i), (0, 1), loads) for i in range(4)]
    gone = _broken("8", FileNotFoundError("no such file: 8.png"))
    got = cache.get_many("s", [*page[:2], gone, *page[2:]], _compute(calls))
    assert calls == [4]  # the others still in one batch
    assert got[2] == Unavailable("FileNotFoundError: no such file: 8.png")
    expected = cache.get_many("fresh", page, _compute([]))
    for g, e in zip([*got[:2], *got[3:]], expected, strict=True):
        assert isinstance(g, list) and all(np.array_equal(a, b) for a, b in zip(g, e, strict=True))
    assert len(cache) == 16  # nothing is cached for the failed image: a fixed file works again
    refused = _broken("9", ImageRefusedError("links outside the dataset root"))
    alone = cache.get_many("s", [refused], _compute(calls))
    assert alone == [Unavailable("links outside the dataset root")] and calls == [4]  # no call


def test_a_file_deleted_or_corrupted_after_evaluation_fails_alone(
    digits_model, digits_subset
) -> None:  # type: ignore[no-untyped-def]
    root = digits_subset(per_class=2)
    data = open_dataset(DatasetSpec("d", root), digits_model.spec.classes)
    result = evaluate(digits_model, data)
    assert not result.skipped
    rows = result.predictions.iloc[:6]
    gone, broken = rows["path"].iloc[1], rows["path"].iloc[4]
    (root / gone).unlink()
    (root / broken).write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(300))
    maps = page_maps(digits_model, data, rows, "Grad-CAM", None, MapCache(), result.fingerprint)
    assert isinstance(maps[1], Unavailable) and "file not found" in maps[1].reason
    assert isinstance(maps[4], Unavailable) and maps[4].reason
    for i in (0, 2, 3, 5):
        pair = maps[i]
        assert isinstance(pair, list) and [m.shape for m in pair] == [(32, 32), (32, 32)]
        assert len(PanelCache().panels(data, rows["path"].iloc[i], list(pair), 0.5)) == 3
    with pytest.raises(ImageRefusedError, match="file not found"):
        PanelCache().panels(data, gone, [None, None], 0.5)


def test_cache_is_bounded() -> None:
    cache = MapCache(max_bytes=3 * 16)  # room for three 4×4 uint8 maps
    cache.get_many("s", [_request(str(i), (0,), []) for i in range(10)], _compute([]))
    assert len(cache) == 3


def test_cache_is_safe_under_concurrent_sessions() -> None:
    cache, errors = MapCache(), []
    expected = cache.get_many("s", [_request(str(i), (0, 1), []) for i in range(8)], _compute([]))
    fresh = MapCache()
    barrier = threading.Barrier(8)

    def session(offset: int) -> None:
        barrier.wait()
        order = [(i + offset) % 8 for i in range(8)]
        got = fresh.get_many("s", [_request(str(i), (0, 1), []) for i in order], _compute([]))
        for i, pair in zip(order, got, strict=True):
            if not all(np.array_equal(a, b) for a, b in zip(pair, expected[i], strict=True)):
                errors.append((offset, i))

    threads = [threading.Thread(target=session, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(fresh) == 16


def _cells(sizes: dict[tuple[int, int], int]) -> pd.DataFrame:
    rows = [
        {"path": f"{t}{p}_{i:02d}.png", "true": t, "pred": p, "confidence": (i * 37 % 100) / 100}
        for (t, p), n in sizes.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def test_first_pages_are_errors_first_biggest_first_and_bounded() -> None:
    table = _cells({(0, 0): 5, (0, 1): 3, (1, 0): 1, (1, 1): 30, (2, 0): 3})
    pages = first_pages(table, "confidence", False, page_size=24, limit=1_000)
    cells = [(int(p["true"].iloc[0]), int(p["pred"].iloc[0])) for p in pages]
    assert cells == [(0, 1), (2, 0), (1, 0), (1, 1), (0, 0)]
    for page, (t, p) in zip(pages, cells, strict=True):
        cell = table[(table["true"] == t) & (table["pred"] == p)]
        assert page.equals(page_rows(sort_rows(cell, "confidence", False), 1, 24))
    assert len(pages[3]) == 24  # page 1 only of the 30-image cell
    limited = first_pages(table, "confidence", False, page_size=24, limit=7)
    assert sum(len(p) for p in limited) == 7 and len(limited) == 3


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = write_config(tmp_path_factory.mktemp("warm"))
    config = load_config(path)
    model = load_model(config.model("digits-cnn"))
    data = open_dataset(config.dataset("digits-test"), model.spec.classes)
    return model, data, expected(path)


def test_warm_pages_leaves_nothing_for_the_first_click(digits) -> None:  # type: ignore[no-untyped-def]
    model, data, result = digits
    pages = first_pages(result.predictions, "confidence", False, page_size=4, limit=12)
    maps, panels = MapCache(), PanelCache()
    done = warm_pages(model, data, pages, "Grad-CAM", None, maps, panels, result.fingerprint, 0.5)
    n_images = sum(len(p) for p in pages)
    assert 8 <= n_images <= 12 and (pages[0]["true"] != pages[0]["pred"]).all()
    assert done == n_images and len(panels) == n_images * 3  # image + two overlays each
    n_maps, n_panels = len(maps), len(panels)
    for rows in pages:  # what the gallery asks for on a first click: all found, none computed
        page = page_maps(model, data, rows, "Grad-CAM", None, maps, result.fingerprint)
        for path, row_maps in zip(rows["path"], page, strict=True):
            assert not isinstance(row_maps, Unavailable)
            panels.panels(data, path, list(row_maps), 0.5)
    assert (len(maps), len(panels)) == (n_maps, n_panels)


def test_stored_pages_warm_without_a_model(digits) -> None:  # type: ignore[no-untyped-def]
    """A fresh server warms the first pages from the stored maps before its model loads: the
    panels are the ones the gallery draws from those maps."""
    model, data, result = digits
    assert result.has_maps
    pages = first_pages(result.predictions, "confidence", False, page_size=4, limit=12)
    panels = PanelCache()
    size = stored_size(result)
    assert size == model.spec.input_size
    done = warm_stored_pages(result, data, pages, size, panels, 0.5)
    n_images = sum(len(p) for p in pages)
    assert done == n_images and len(panels) == n_images * 3
    for rows in pages:  # the gallery's stored maps find every panel encoded
        for path, row_maps in zip(rows["path"], stored_maps(result, rows, size), strict=True):
            panels.panels(data, path, list(row_maps), 0.5)
    assert len(panels) == n_images * 3


def test_warm_pages_stops_quietly_where_the_method_does_not_apply(digits) -> None:  # type: ignore[no-untyped-def]
    model, data, result = digits
    pages = first_pages(result.predictions, "confidence", False, page_size=4, limit=8)
    maps, panels = MapCache(), PanelCache()
    done = warm_pages(model, data, pages, "Grad-CAM", "no.such.layer", maps, panels, "fp", 0.5)
    assert done == 0 and len(maps) == 0 and len(panels) == 0

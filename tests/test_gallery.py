"""The cell view's logic in core: sorting, paging, which classes to compare, cached maps."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import torch

from core.gallery import compared_classes, page_count, page_rows, sort_rows
from core.map_cache import MapCache, MapRequest


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
    probs = np.array([0.1, 0.6, 0.25, 0.05])
    assert compared_classes(pd.Series({"true": 2, "pred": 1, "probs": probs})) == (1, 2)
    assert compared_classes(pd.Series({"true": 1, "pred": 1, "probs": probs})) == (1, 2)


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

"""In Chromium: the Map page; a box dragged over a region shows exactly the images inside it."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pytest

from core.analysis.calibration import reliability
from core.analysis.embedding_map import Region, result_layout
from core.analysis.metrics import per_class_metrics
from core.analysis.similar import similar_images
from dashboard.parts.calibration import RELIABILITY_BINS, chart_rows
from dashboard.parts.similar import SIMILAR
from tests.browser import (
    chromium,
    new_page,
    open_dashboard,
    open_inspect,
    screenshot,
    settled_box,
    streamlit_server,
    wait_for_gallery,
    wait_idle,
)
from tests.projects import expected, write_config

pytestmark = pytest.mark.browser

PATHS = "() => Array.from(document.querySelectorAll('.cam-card strong')).map(s => s.innerText)"
# data → page pixels through Plotly's own axes (the figure's first subplot)
TO_PIXELS = """([x, y]) => {
    const gd = document.querySelector('.js-plotly-plot');
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
    return [box.left + xa.l2p(x), box.top + ya.l2p(y)];
}"""
DRAWN = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    return !!(gd && gd._fullLayout && gd._fullLayout.xaxis && gd.querySelector('.nsewdrag')
        && gd.data && gd.data.length >= 2);
}"""


CLEARANCE = 0.02  # no point within this share of the layout's span of a region's edge


def cluster_region(xy: np.ndarray, kind: str, fits: tuple[int, int] = (10, 90)) -> Region:
    """A box, or a hexagonal lasso, around one cluster of the layout ``xy``, holding between
    ``fits`` points and with no point within ``CLEARANCE`` of the span of its edges, so that a
    drag a pixel or two off still selects the same images. Derived from the points alone
    (a layout's clusters move between library versions); fails the test if none exists."""
    span = xy.max(0) - xy.min(0)
    unit = (xy - xy.min(0)) / span  # the layout in [0, 1]², where clearance is measured
    for seed in np.argsort(-_neighbours_within(unit, 0.05)):  # densest points first
        near = np.argsort(((unit - unit[seed]) ** 2).sum(1))
        for k in (20, 30, 45, 60):
            lo, hi = unit[near[:k]].min(0), unit[near[:k]].max(0)
            for margin in (0.02, 0.04, 0.06):
                poly = _outline(lo - margin, hi + margin, kind)
                region = Region(kind, tuple(map(tuple, poly)))
                count = int(region.contains(unit).sum())
                if fits[0] <= count <= fits[1] and _clearance(unit, poly) >= CLEARANCE:
                    back = poly * span + xy.min(0)
                    return Region(kind, tuple((float(x), float(y)) for x, y in back))
    raise AssertionError("no cluster of the layout has a region clear of other points")


def _neighbours_within(unit: np.ndarray, radius: float) -> np.ndarray:
    return (((unit[:, None] - unit[None]) ** 2).sum(-1) < radius**2).sum(1)


def _outline(lo: np.ndarray, hi: np.ndarray, kind: str) -> np.ndarray:
    """The box's two corners, or a hexagon holding the box (through the ellipse around it)."""
    if kind == "box":
        return np.stack([lo, hi])
    centre, half = (lo + hi) / 2, (hi - lo) / 2 * np.sqrt(2) / np.cos(np.pi / 6)
    angles = np.pi / 6 + np.arange(6) * np.pi / 3
    return centre + half * np.stack([np.cos(angles), np.sin(angles)], 1)


def _clearance(unit: np.ndarray, poly: np.ndarray) -> float:
    """The smallest distance from any point to the region's edges (a box's: its four sides)."""
    if len(poly) == 2:
        (x0, y0), (x1, y1) = poly
        poly = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    a, b = poly, np.roll(poly, -1, axis=0)
    ab = b - a
    t = np.clip(((unit[:, None] - a) * ab).sum(-1) / (ab**2).sum(-1), 0, 1)
    nearest = a + t[..., None] * ab
    return float(np.sqrt(((unit[:, None] - nearest) ** 2).sum(-1)).min())


def open_map(browser, url: str):  # type: ignore[no-untyped-def]
    """A new page on the Map at ``url``, once its points and its UMAP caption are drawn."""
    page = new_page(browser)
    page.goto(url)
    page.wait_for_function(DRAWN, timeout=180_000)
    page.get_by_text("UMAP of the classifier head's inputs").wait_for(timeout=60_000)
    wait_idle(page)
    return page


MAP_QUERY = "model=digits-cnn&dataset=digits-test&page_size=96"


@pytest.fixture
def mapped(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A digits project evaluated with embeddings (stored in its cache), its UMAP layout (stored
    beside the result: the page shows it at once) and its images' paths: (config, xy, paths)."""
    config = write_config(tmp_path)
    result = expected(config)
    paths = np.asarray(result.predictions["path"], dtype=object)
    return config, result_layout(result).xy, paths


def drag(page, corners: list[tuple[float, float]]) -> None:  # type: ignore[no-untyped-def]
    """Press at the first of ``corners`` (page pixels), move through the others in small steps,
    as a person's drag or stroke does, and release."""
    page.mouse.move(*corners[0])
    page.mouse.down()
    for (ax, ay), (bx, by) in pairwise(corners):
        for step in range(1, 11):
            t = step / 10
            page.mouse.move(ax + (bx - ax) * t, ay + (by - ay) * t)
    page.mouse.up()


def selected_region(page, kind: str) -> Region:  # type: ignore[no-untyped-def]
    """Once the URL holds a ``kind`` selection and its cards are drawn: the region it holds."""
    page.wait_for_function(f"() => location.search.includes('sel={kind}')", timeout=60_000)
    page.locator(".cam-card").first.wait_for(timeout=120_000)
    wait_idle(page)
    region = Region.from_param(parse_qs(urlparse(page.url).query)["sel"][0])
    assert region is not None and region.kind == kind
    return region


def test_box_selection_shows_exactly_the_images_inside(
    mapped: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    config, xy, paths = mapped
    # a box around one cluster of the layout, with no point near its edges (chosen from the
    # points: UMAP's layout differs between library versions and machines)
    (x0, y0), (x1, y1) = cluster_region(xy, "box").points
    with streamlit_server("--config", str(config)) as url, chromium() as browser:
        page = open_map(browser, f"{url}/map?{MAP_QUERY}")
        screenshot(page, "map_page")
        drag(page, [page.evaluate(TO_PIXELS, [x, y]) for x, y in ((x0, y0), (x1, y1))])
        region = selected_region(page, "box")
        (rx0, ry0), (rx1, ry1) = region.points
        span = (x1 - x0, y1 - y0)  # the URL holds the box that was dragged (to a pixel or so)
        assert abs(min(rx0, rx1) - x0) < 0.03 * span[0] and abs(max(rx0, rx1) - x1) < 0.03 * span[0]
        assert abs(min(ry0, ry1) - y0) < 0.03 * span[1] and abs(max(ry0, ry1) - y1) < 0.03 * span[1]
        inside = region.contains(xy)
        assert np.array_equal(inside, Region("box", ((x0, y0), (x1, y1))).contains(xy))
        assert 5 <= inside.sum() <= 96, inside.sum()
        page.get_by_text(f"{int(inside.sum())} images in the selection").wait_for()
        shown = page.evaluate(PATHS)
        assert sorted(shown) == sorted(paths[inside])
        screenshot(page, "map_box_selection")
        # the selection is in the URL: a fresh visitor's deep link shows the same images
        other = new_page(browser)
        other.goto(page.url)
        other.locator(".cam-card").first.wait_for(timeout=120_000)
        wait_idle(other)
        assert sorted(other.evaluate(PATHS)) == sorted(shown)


def test_lasso_selection_shows_exactly_the_images_inside(
    mapped: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    """The lasso, picked in the chart's toolbar and drawn around a cluster: the URL holds the
    polygon and the gallery lists exactly the images inside it."""
    config, xy, paths = mapped
    drawn = cluster_region(xy, "lasso")  # a hexagon around one cluster, clear of every point
    outline = list(drawn.points)
    with streamlit_server("--config", str(config)) as url, chromium() as browser:
        page = open_map(browser, f"{url}/map?{MAP_QUERY}")
        page.locator(".js-plotly-plot").hover()
        page.locator('.js-plotly-plot .modebar-btn[data-title="Lasso Select"]').click()
        drag(page, [page.evaluate(TO_PIXELS, list(p)) for p in [*outline, outline[0]]])
        region = selected_region(page, "lasso")
        assert len(region.points) >= 3
        inside = region.contains(xy)
        # the URL's polygon is the stroke that was drawn: no point lies near its edges, so both
        # hold the same images
        assert np.array_equal(inside, drawn.contains(xy))
        assert 5 <= inside.sum() <= 96, inside.sum()
        # ...and the gallery lists exactly the images inside it
        page.get_by_text(f"{int(inside.sum())} images in the selection").wait_for()
        assert sorted(page.evaluate(PATHS)) == sorted(paths[inside])
        screenshot(page, "map_lasso_selection")


def test_inspect_shows_the_nearest_images(tmp_path: Path) -> None:
    """An error's large view lists its nearest images (by the stored embeddings) as cards."""
    config = write_config(tmp_path)
    result = expected(config)
    in_cell = result.predictions.query("true == 3 and pred == 9")
    assert len(in_cell)
    with streamlit_server("--config", str(config)) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(f"{url}/?model=digits-cnn&dataset=digits-test&cell=3,9")
        wait_for_gallery(page, "3", "9")
        first = page.evaluate(PATHS)[0]
        dialog = open_inspect(page)
        dialog.locator(".cam-similar .cam-card").first.wait_for(timeout=120_000)
        wait_idle(page)
        shown = dialog.locator(".cam-similar .cam-card strong").all_inner_texts()
        assert shown == list(similar_images(result, first, SIMILAR)["path"])
        assert first not in shown
        dialog.get_by_text("share its true class").wait_for()
        screenshot(page, "inspect_similar")


CHART = "new URLSearchParams(location.search).get('chart')"
BAR_AT = """([plot, x, y]) => {
    const gd = document.querySelectorAll('.js-plotly-plot')[plot];
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
    const px = xa.type === 'category' ? xa.l2p(xa.d2l(x)) : xa.l2p(x);
    return [box.left + px, box.top + ya.l2p(y)];
}"""


def test_clicking_a_reliability_bin_or_a_recall_bar_lists_its_images(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    result = expected(config)
    table = result.predictions
    confidence = table["confidence"].to_numpy()
    correct = (table["true"] == table["pred"]).to_numpy()
    rel = reliability(confidence, correct, RELIABILITY_BINS).table
    b = int(rel[(rel["count"] > 0) & (rel["count"] <= 96)]["bin"].max())  # a bin that fits a page
    metrics = per_class_metrics(table, result.classes)
    worst = int(metrics.sort_values(["recall", "precision", "class"]).index[0])
    with open_dashboard("--config", str(config), path=f"/?{MAP_QUERY}") as page:
        page.get_by_text("Calibration and per-class precision/recall").click()
        page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 3")
        page.get_by_text("ECE").first.wait_for()
        wait_idle(page)
        x = float((rel["lo"][b] + rel["hi"][b]) / 2)
        settled_box(page, page.locator(".js-plotly-plot").nth(0))  # scrolled into view
        page.mouse.click(*page.evaluate(BAR_AT, [0, x, float(rel["accuracy"][b]) / 2]))
        page.wait_for_function(f"() => {CHART} === 'rel:{b}'")
        page.locator(".cam-chart .cam-card").first.wait_for(timeout=120_000)
        wait_idle(page)
        rows, _ = chart_rows(result, f"rel:{b}")
        in_bin = (confidence >= rel["lo"][b]) & (confidence < rel["hi"][b] + (b == 9))
        assert sorted(rows["path"]) == sorted(table["path"][in_bin])
        shown = page.locator(".cam-chart .cam-card strong").all_inner_texts()
        assert shown == list(rows["path"])  # wrong first, then most confident
        screenshot(page, "calibration_bin")
        recall = float(metrics["recall"][worst])
        name = str(result.classes[worst])
        settled_box(page, page.locator(".js-plotly-plot").nth(2))
        page.mouse.click(*page.evaluate(BAR_AT, [2, name, max(recall / 2, 0.05)]))
        page.wait_for_function(f"() => {CHART} === 'recall:{worst}'")
        page.get_by_text(f"images true class {name} (recall)").wait_for(timeout=120_000)
        page.wait_for_function(
            f"() => [...document.querySelectorAll('.cam-chart .cam-card strong')]"
            f".every(s => s.innerText.startsWith('{name}/'))"
        )
        wait_idle(page)
        shown = page.locator(".cam-chart .cam-card strong").all_inner_texts()
        assert sorted(shown) == sorted(table["path"][table["true"] == worst])

"""In Chromium: the Slices page of the bundled shapes sample. Clicking its worst metadata row
restricts the Error-analysis matrix to exactly that slice's images (counted here with pandas
from the metadata file); removing the slice's chip brings the full matrix back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.analysis.slice_columns import result_columns
from core.analysis.slices import slice_table
from tests.browser import (
    chromium,
    new_page,
    screenshot,
    streamlit_server,
    wait_for_matrix,
    wait_idle,
)
from tests.projects import SAMPLE, shortcut_cell

pytestmark = pytest.mark.browser
MODEL, DATASET = "shapes-resnet (shortcut)", "shapes-test"
SITES = SAMPLE / "shapes" / "test" / "sites.csv"
QUERY = "model=shapes-resnet+%28shortcut%29&dataset=shapes-test"
# a point of the interval chart in page pixels, through Plotly's own axes
POINT = """([name, x]) => {
    const gd = document.querySelector('.js-plotly-plot');
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
    const box = gd.querySelector('.nsewdrag').getBoundingClientRect();
    return [box.left + xa.l2p(x), box.top + ya.l2p(ya.d2l(name))];
}"""
POINTS = """() => {
    const gd = document.querySelector('.js-plotly-plot');
    return gd && gd.calcdata ? [gd.data[0].y, gd.calcdata[0].map(c => c.x)] : null;
}"""
COUNTS = """() => [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')[0]
    .querySelectorAll('g.mark-text.role-mark text')]
    .map(t => Number(t.textContent.replace(/,/g, '')))"""


def _matrix(frame: pd.DataFrame, k: int) -> np.ndarray:
    counts = pd.crosstab(frame["true"], frame["pred"]).reindex(
        index=range(k), columns=range(k), fill_value=0
    )
    return counts.to_numpy()


def _shown(page, k: int) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.array(page.evaluate(COUNTS)).reshape(k, k)


def test_worst_slice_restricts_the_matrix_and_its_chip_removes_it(tmp_path: Path) -> None:
    cell = shortcut_cell(MODEL, DATASET, tmp_path)
    result, dataset = cell.result, cell.dataset
    k = result.num_classes
    table = slice_table(result_columns(result, dataset, clusters=False), result.true, result.pred)
    sites = pd.read_csv(SITES, dtype=str)
    metadata_rows = table[table["column"].isin([c for c in sites.columns if c != "path"])]
    worst = metadata_rows.sort_values(["accuracy", "images"], ascending=[True, False]).iloc[0]
    predictions = result.predictions.merge(sites, on="path", how="left")
    inside = predictions[predictions[worst["column"]] == worst["value"]]
    assert 0 < len(inside) < len(predictions)
    with streamlit_server() as url, chromium() as browser:
        page = new_page(browser)
        page.goto(f"{url}/slices?{QUERY}")
        page.wait_for_function(POINTS, timeout=120_000)
        wait_idle(page)
        names, xs = page.evaluate(POINTS)
        label = next(n for n in names if n.endswith(f"{worst['column']}: {worst['label']}"))
        assert label.startswith("▼ ") == bool(worst["below"])
        page.locator(".js-plotly-plot").scroll_into_view_if_needed()
        wait_idle(page)
        screenshot(page, "slices_page")
        page.mouse.click(*page.evaluate(POINT, [label, xs[names.index(label)]]))
        page.wait_for_url("**where=*", timeout=60_000)
        wait_for_matrix(page, cells=k * k)
        wait_idle(page)
        chip = page.get_by_role("button", name=f"{worst['column']} = {worst['value']}")
        chip.wait_for()
        page.get_by_text(f"{len(inside)} images · rows: true class").wait_for()
        assert np.array_equal(_shown(page, k), _matrix(inside, k))
        screenshot(page, "slice_applied")
        chip.click()
        page.wait_for_function("() => !location.search.includes('where=')", timeout=60_000)
        page.get_by_text(f"{len(predictions)} images · rows: true class").wait_for()
        wait_idle(page)
        assert np.array_equal(_shown(page, k), _matrix(predictions, k))

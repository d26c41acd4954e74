"""The dashboard on a generated 1,000-class project, in headless Chromium: the first page,
finding a class by name, clicking one of its cells, and the gallery matching core's rows."""

from __future__ import annotations

import pytest

from core import cell_rows, focus_classes, load_config, load_model, open_dataset
from core.analysis.gallery import page_rows, sort_rows
from core.analysis.metrics import accuracy, confusion_matrix
from core.results.evaluate import evaluate
from dashboard.parts.sidebar import compact_count
from tests.browser import (
    chart_count,
    click_cell,
    gallery_cards,
    open_dashboard,
    screenshot,
    wait_for_gallery,
    wait_for_matrix,
)
from tests.large_project import make_large_project

pytestmark = pytest.mark.browser

#: Each sidebar metric's value: its text, the width it needs and the width it has (px).
METRIC_VALUES_JS = """() => [...document.querySelectorAll(
    'section[data-testid="stSidebar"] [data-testid="stMetricValue"]')].map(value => {
        const text = value.querySelector("div") || value;
        return [text.textContent, text.scrollWidth, text.clientWidth];
    })"""


def test_find_a_class_and_open_its_cell_at_1000_classes() -> None:
    config_path = make_large_project(classes=1000, per_class=5)  # cached under .cache/
    config = load_config(config_path)
    model = load_model(config.model())
    result = evaluate(model, open_dataset(config.dataset(), model.spec.classes), config.cache_dir)
    counts = confusion_matrix(result.predictions, result.num_classes)
    off = counts.copy()
    off[range(1000), range(1000)] = 0
    target = int(off.sum(axis=1).argmax())  # the class with most errors
    shown = focus_classes(counts, target, 20)
    partner = int(off[target].argmax())
    name = result.classes[target]
    with open_dashboard("--config", str(config_path)) as page:
        page.get_by_text("The 20 most confused of 1,000 classes").wait_for()
        wait_for_matrix(page, cells=400)  # 20 × 20: no view sends the million cells
        screenshot(page, "large_first_page")
        # the sidebar's counts are readable: compact, not cut off by their narrow columns
        table = result.predictions
        errors = int((table["true"] != table["pred"]).sum())
        values = page.evaluate(METRIC_VALUES_JS)
        assert [text for text, _, _ in values] == [
            f"{accuracy(table):.2%}",
            compact_count(len(table)),
            compact_count(errors),
        ]
        assert all(needed <= width for _, needed, width in values), values
        page.get_by_text(f"{len(table):,} images · {errors:,} errors · 0 skipped").wait_for()
        picker = page.get_by_test_id("stSelectbox").filter(has_text="Find a class").first
        picker.click()
        page.keyboard.type(name)
        page.get_by_role("option", name=name, exact=True).click()
        page.get_by_text(f"{name} and its most confused classes").wait_for()
        wait_for_matrix(page, cells=len(shown) ** 2)
        click_cell(page, shown.index(target), shown.index(partner))
        n = wait_for_gallery(page, name, result.classes[partner])
        screenshot(page, "large_focus_cell")
        rows = sort_rows(cell_rows(result.predictions, target, partner), "confidence", False)
        assert n == len(rows) == counts[target, partner]
        cards = gallery_cards(page)
        assert [c["path"] for c in cards] == list(page_rows(rows, 1, 24)["path"])
        assert all(all(c["loaded"]) and len(c["loaded"]) == 3 for c in cards)

        # the whole matrix as 40 × 40 blocks of 25 classes, opened by its expander: a click on
        # a block zooms the matrix into it
        page.get_by_text("Overview of all 1,000 classes").click()
        wait_for_matrix(page, cells=40 * 40, plot=1)
        assert chart_count(page) == 2
        click_cell(page, 4, 7, plot=1)
        page.get_by_text("Overview block c0100…c0124 × c0175…c0199").wait_for()
        wait_for_matrix(page, cells=50 * 50)  # rows 100-124 and columns 175-199: 50 classes
        assert "block=4%2C7" in page.url or "block=4,7" in page.url
        screenshot(page, "large_overview_block")

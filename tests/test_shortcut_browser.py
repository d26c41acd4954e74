"""The bundled sample as a newcomer meets it: start with no arguments (the shortcut model opens,
with the walk-through's hint), click the cell "other shape → star" and see the predicted-class
Grad-CAM on the corner mark. Its screenshot is the one in the README's "Finding a shortcut"
walk-through.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.analysis.gallery import page_rows
from tests.browser import click_cell, gallery_cards, open_dashboard, screenshot, wait_for_gallery
from tests.projects import marked_paths, shortcut_cell

pytestmark = pytest.mark.browser
MODEL, DATASET, MARKED = "shapes-resnet (shortcut)", "shapes-test", "star"


def test_default_start_then_click_the_shortcut_cell(tmp_path: Path) -> None:
    cell = shortcut_cell(MODEL, DATASET, tmp_path, MARKED)
    result, true, star, rows = cell.result, cell.true, cell.marked, cell.rows
    names = result.classes
    marked = set(marked_paths())

    with open_dashboard() as page:  # no --config: the bundled sample
        shapes_total = f"{len(result.predictions)} images · rows: true class"
        page.get_by_text(shapes_total).wait_for()  # opens on the shortcut model and shapes-test
        model_box = page.get_by_test_id("stSelectbox").filter(has_text="Model").first
        assert model_box.locator("input").input_value() == MODEL
        hint = page.get_by_test_id("stAlert").filter(has_text="magenta mark")
        assert hint.count() == 1  # the walk-through's hint, from the model's description
        click_cell(page, true, star)
        n = wait_for_gallery(page, names[true], MARKED)
        assert n == len(rows) > 0
        cards = gallery_cards(page)
        assert [c["path"] for c in cards] == list(page_rows(rows, 1, 24)["path"])
        assert {c["path"] for c in cards} <= marked  # every fooled image carries the mark
        for card in cards:
            assert card["loaded"] == [True, True, True]
            assert card["captions"][1] == f"Grad-CAM · predicted {MARKED}"
            assert re.match(rf"Grad-CAM · true {names[true]}\b", card["captions"][2])
        page.locator(".cam-card").first.scroll_into_view_if_needed()
        screenshot(page, "shortcut")
        page.context.close()

"""The bundled sample as a newcomer meets it: start with no arguments (the shortcut model opens,
with the walk-through's hint), click the cell "other shape → star" and see the predicted-class
Grad-CAM on the corner mark. Its screenshot is the one in the README's "Finding a shortcut"
walk-through.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from core import cell_rows, evaluate, load_config, load_model, open_dataset
from core.analysis.gallery import page_rows, sort_rows
from tests.browser import (
    chromium,
    click_cell,
    gallery_cards,
    new_page,
    screenshot,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
)
from tests.projects import SAMPLE

pytestmark = pytest.mark.browser
MODEL, DATASET, MARKED = "shapes-resnet (shortcut)", "shapes-test", "star"


def test_default_start_then_click_the_shortcut_cell(tmp_path: Path) -> None:
    config = load_config(SAMPLE / "config.toml")
    model = load_model(config.model(MODEL))
    dataset = open_dataset(config.dataset(DATASET), model.spec.classes)
    result = evaluate(model, dataset, tmp_path)  # independent of the server's cache
    names = result.classes
    star = names.index(MARKED)
    fooled = result.predictions.query("pred == @star and true != @star")
    true = int(fooled["true"].value_counts().idxmax())  # the shape most often taken for a star
    rows = sort_rows(cell_rows(result.predictions, true, star), "confidence", ascending=False)
    with (dataset.root / "marks.csv").open(newline="", encoding="utf-8") as handle:
        marked = {row["path"] for row in csv.DictReader(handle) if row["marked"] == "1"}

    with streamlit_server() as url, chromium() as browser:  # no --config: the bundled sample
        page = new_page(browser)
        page.goto(url)
        wait_for_matrix(page)
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

"""The sample's Parquet copy of shapes-test in the dashboard: pick it, click the cell "other
shape → star" of the shortcut ResNet and see its images, named ``file.parquet#row (embedded
path)``, with both Grad-CAM panels drawn."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from urllib.parse import quote

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
MODEL, DATASET, MARKED = "shapes-resnet (shortcut)", "shapes-test (parquet)", "star"


def test_open_a_cell_of_the_parquet_dataset(tmp_path: Path) -> None:
    config = load_config(SAMPLE / "config.toml")
    model = load_model(config.model(MODEL))
    dataset = open_dataset(config.dataset(DATASET), model.spec.classes)
    result = evaluate(model, dataset, tmp_path)  # independent of the server's cache
    names = result.classes
    star = names.index(MARKED)
    fooled = result.predictions.query("pred == @star and true != @star")
    true = int(fooled["true"].value_counts().idxmax())
    rows = sort_rows(cell_rows(result.predictions, true, star), "confidence", ascending=False)
    with (SAMPLE / "shapes" / "test" / "marks.csv").open(newline="", encoding="utf-8") as handle:
        marked = {row["path"] for row in csv.DictReader(handle) if row["marked"] == "1"}

    query = f"model={quote(MODEL)}&dataset={quote(DATASET)}"
    with streamlit_server() as url, chromium() as browser:  # the bundled sample
        page = new_page(browser)
        page.goto(f"{url}/?{query}")
        wait_for_matrix(page, timeout=300_000)  # a first start evaluates the 400 rows
        page.get_by_text(f"{len(dataset)} images · rows: true class").wait_for()
        click_cell(page, true, star)
        n = wait_for_gallery(page, names[true], MARKED)
        assert n == len(rows) > 0
        cards = gallery_cards(page)
        shown = list(page_rows(rows, 1, 24)["path"])
        assert [c["path"] for c in cards] == [dataset.display_name(p) for p in shown]
        for card in cards:
            match = re.fullmatch(r"test-00000-of-00001\.parquet#\d+ \((.+)\)", str(card["path"]))
            assert match, card["path"]
            assert match.group(1) in marked  # the embedded path: every fooled image is marked
            assert card["loaded"] == [True, True, True]
            assert card["captions"][1] == f"Grad-CAM · predicted {MARKED}"
        page.locator(".cam-card").first.scroll_into_view_if_needed()
        screenshot(page, "parquet_cell")
        page.context.close()

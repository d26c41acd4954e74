"""The sample's Parquet copy of shapes-test in the dashboard: pick it, click the cell "other
shape → star" of the shortcut ResNet and see its images, named ``file.parquet#row (embedded
path)``, with both Grad-CAM panels drawn."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest

from core.analysis.gallery import page_rows
from tests.browser import click_cell, gallery_cards, open_dashboard, screenshot, wait_for_gallery
from tests.projects import marked_paths, shortcut_cell

pytestmark = pytest.mark.browser
MODEL, DATASET, MARKED = "shapes-resnet (shortcut)", "shapes-test (parquet)", "star"


def test_open_a_cell_of_the_parquet_dataset(tmp_path: Path) -> None:
    cell = shortcut_cell(MODEL, DATASET, tmp_path, MARKED)
    dataset, result, true, star, rows = cell.dataset, cell.result, cell.true, cell.marked, cell.rows
    names = result.classes
    marked = set(marked_paths())

    query = f"model={quote(MODEL)}&dataset={quote(DATASET)}"
    # the bundled sample; a first start evaluates the 400 rows
    with open_dashboard(path=f"/?{query}", timeout=300_000) as page:
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

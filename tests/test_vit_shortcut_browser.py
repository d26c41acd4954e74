"""The transformer sample in the browser: pick ``shapes-vit (shortcut)`` (a timm entry) in the
sidebar, see which preprocessing it uses, click the cell "other shape → star" and see both
Grad-CAMs on its token grid. The screenshot is the README's
(dashboard/assets/vit_shortcut_cell.png).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from core.analysis.gallery import page_rows
from tests.browser import click_cell, gallery_cards, open_dashboard, screenshot, wait_for_gallery
from tests.projects import shortcut_cell

pytestmark = pytest.mark.browser
MODEL, DATASET, MARKED = "shapes-vit (shortcut)", "shapes-test", "star"
ASSET = Path(__file__).resolve().parents[1] / "dashboard" / "assets" / "vit_shortcut_cell.png"


def test_pick_the_vit_and_click_its_shortcut_cell(tmp_path: Path) -> None:
    cell = shortcut_cell(MODEL, DATASET, tmp_path, MARKED)
    result, true, star, rows = cell.result, cell.true, cell.marked, cell.rows
    names = result.classes

    with open_dashboard() as page:
        page.get_by_test_id("stSelectbox").filter(has_text="Model").first.click()
        page.get_by_role("option", name=MODEL, exact=True).click()
        page.get_by_text(f"{len(result.predictions)} images · rows: true class").wait_for()
        caption = page.get_by_text(re.compile(r"^Preprocessing: 64×64 · bicubic · "))
        caption.wait_for()
        assert "from timm (input_size, mean, std, interpolation, crop_mode)" in caption.inner_text()
        click_cell(page, true, star)
        n = wait_for_gallery(page, names[true], MARKED)
        assert n == len(rows) > 0
        cards = gallery_cards(page)
        assert [c["path"] for c in cards] == list(page_rows(rows, 1, 24)["path"])
        for card in cards:
            assert card["loaded"] == [True, True, True]
            assert card["captions"][1] == f"Grad-CAM · predicted {MARKED}"
        page.locator(".cam-card").first.scroll_into_view_if_needed()
        shutil.copyfile(screenshot(page, "vit_shortcut"), ASSET)
        page.context.close()

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
MODEL, DATASET, MARKED = "shapes-vit (shortcut)", "shapes-test", "star"
ASSET = Path(__file__).resolve().parents[1] / "dashboard" / "assets" / "vit_shortcut_cell.png"


def test_pick_the_vit_and_click_its_shortcut_cell(tmp_path: Path) -> None:
    config = load_config(SAMPLE / "config.toml")
    model = load_model(config.model(MODEL))
    dataset = open_dataset(config.dataset(DATASET), model.spec.classes)
    result = evaluate(model, dataset, tmp_path)  # independent of the server's cache
    names = result.classes
    star = names.index(MARKED)
    fooled = result.predictions.query("pred == @star and true != @star")
    true = int(fooled["true"].value_counts().idxmax())  # the shape most often taken for a star
    rows = sort_rows(cell_rows(result.predictions, true, star), "confidence", ascending=False)

    with streamlit_server() as url, chromium() as browser:
        page = new_page(browser)
        page.goto(url)
        wait_for_matrix(page)
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

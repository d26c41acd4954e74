"""The first five minutes on a fresh server, in Chromium: every page of the bundled sample opens
from the menu without an error panel, and a cell clicked before the model has loaded shows its
heading and a loading status, then its cards, with no second click."""

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
    wait_for_idle_page,
    wait_for_matrix,
)
from tests.projects import SAMPLE

pytestmark = pytest.mark.browser
PROBLEMS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def test_every_sample_page_opens_from_the_menu_without_an_error() -> None:
    with streamlit_server() as url, chromium() as browser:  # no --config: the bundled sample
        page = new_page(browser)
        page.goto(url)
        wait_for_matrix(page)
        links = page.get_by_test_id("stSidebarNav").get_by_role("link")
        names = [links.nth(i).inner_text() for i in range(links.count())]
        assert len(names) >= 4
        for name in names:
            page.get_by_test_id("stSidebarNav").get_by_role("link", name=name).click()
            page.wait_for_url(re.compile(".*"))
            wait_for_idle_page(page)
            slug = re.sub(r"\W+", "_", name.lower()).strip("_")
            screenshot(page, f"page_{slug}")
            shown = page.locator(PROBLEMS)
            assert shown.count() == 0, f"{name}: {shown.first.inner_text()}"
        page.context.close()


SLOW_MODEL = """
import time

from digits_model import build as _build


def build(num_classes: int = 10):
    time.sleep(8)  # a model that takes a while to load, as a large checkpoint does
    return _build(num_classes)
"""


def test_a_click_before_the_model_has_loaded_shows_a_status_then_the_cards(
    tmp_path: Path,
) -> None:
    shutil.copy(SAMPLE / "digits_model.py", tmp_path / "digits_model.py")
    (tmp_path / "slow_model.py").write_text(SLOW_MODEL)
    test_root = (SAMPLE / "digits" / "test").as_posix()
    weights = (SAMPLE / "digits" / "weights.safetensors").as_posix()
    config_path = tmp_path / "config.toml"
    config_path.write_text(
        f"""
cache_dir = "cache"
[[models]]
name = "slow-digits"
factory = "slow_model:build"
weights = "{weights}"
input_size = [32, 32]
channels = 1
mean = [0.5]
std = [0.5]
[[datasets]]
name = "digits-test"
root = "{test_root}"
"""
    )
    config = load_config(config_path)
    model = load_model(config.model())
    data = open_dataset(config.dataset(), model.spec.classes)
    result = evaluate(model, data, cache_dir=config.cache_dir)  # stored: the server needs no model
    true, pred = 3, 9
    rows = sort_rows(cell_rows(result.predictions, true, pred), "confidence", ascending=False)
    assert len(rows) > 0
    with streamlit_server("--config", str(config_path)) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(url)
        wait_for_matrix(page)
        click_cell(page, true, pred)  # at once: the model is still loading
        status = page.get_by_test_id("stAlert").filter(has_text="Loading the model for maps…")
        status.wait_for(timeout=5_000)
        screenshot(page, "first_click_loading")
        cell = re.compile("true 3 → predicted 9")
        headings = page.locator("h1, h2, h3, h4").filter(has_text=cell)
        assert headings.count() == 1  # the cell's heading, shown with the status
        n = wait_for_gallery(page, "3", "9")  # no second click
        assert n == len(rows)
        assert [c["path"] for c in gallery_cards(page)] == list(page_rows(rows, 1, 24)["path"])
        assert status.count() == 0
        page.get_by_text("Gallery settings").wait_for()  # the sidebar follows by itself
        page.context.close()

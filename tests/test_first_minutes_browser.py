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
    click_cell,
    gallery_cards,
    open_dashboard,
    screenshot,
    wait_for_gallery,
    wait_for_idle_page,
)
from tests.projects import SAMPLE

pytestmark = pytest.mark.browser
PROBLEMS = '[data-testid="stException"], [data-testid="stAlertContentError"]'


def test_every_sample_page_opens_from_the_menu_without_an_error() -> None:
    with open_dashboard() as page:  # no --config: the bundled sample
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
from pathlib import Path

from digits_model import build as _build


def build(num_classes: int = 10):
    # a model that takes a while to load, as a large checkpoint does: until the test says so
    gate = Path(__file__).with_name("loaded")
    for _ in range(6_000):
        if gate.exists():
            break
        time.sleep(0.05)
    return _build(num_classes)
"""


@pytest.fixture
def slow_project(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A project whose model loads only once the file ``loaded`` exists beside it, with its
    results stored (as a restarted server finds them): (config, gate file, expected result)."""
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
    gate = tmp_path / "loaded"
    gate.touch()
    model = load_model(config.model())
    gate.unlink()
    data = open_dataset(config.dataset(), model.spec.classes)
    return config_path, gate, evaluate(model, data, cache_dir=config.cache_dir)


def _first_page(result, true: int, pred: int) -> list[str]:  # type: ignore[no-untyped-def]
    rows = sort_rows(cell_rows(result.predictions, true, pred), "confidence", ascending=False)
    assert len(rows) > 0
    return list(page_rows(rows, 1, 24)["path"])


def test_a_first_click_on_stored_maps_does_not_wait_for_the_model(slow_project) -> None:  # type: ignore[no-untyped-def]
    config_path, gate, result = slow_project
    with open_dashboard("--config", str(config_path)) as page:
        click_cell(page, 3, 9)
        wait_for_gallery(page, "3", "9")  # while the model cannot finish loading
        assert [c["path"] for c in gallery_cards(page)] == _first_page(result, 3, 9)
        # The sidebar's settings are there while the model loads (the page never reruns by
        # itself when the load ends: that rerun could swallow a click); the layer the stored
        # maps were made at stands for the layer list.
        page.get_by_text("Gallery settings", exact=True).click()
        picker = page.get_by_test_id("stSelectbox").filter(has_text="Target layer")
        picker.wait_for()
        assert picker.get_by_role("combobox").is_disabled()
        assert picker.get_by_role("combobox").input_value() == result.meta["map_layer"]
        page.get_by_text("The model is loading: its layers are listed").wait_for()
        gate.touch()  # once it has loaded, the open settings list every candidate layer
        page.wait_for_function(
            "() => { const s = Array.from(document.querySelectorAll('[data-testid=stSelectbox]'))"
            ".find(e => e.innerText.includes('Target layer'));"
            " const box = s && s.querySelector('[role=combobox]');"
            " return box && !box.disabled && box.getAttribute('aria-disabled') !== 'true'; }",
            timeout=120_000,
        )
        wait_for_gallery(page, "3", "9")  # the cell is still shown
        page.context.close()


def test_a_click_that_needs_the_model_shows_a_status_then_the_cards(slow_project) -> None:  # type: ignore[no-untyped-def]
    config_path, gate, result = slow_project
    # Grad-CAM++ is not stored: computed by the model
    with open_dashboard("--config", str(config_path), path="/?method=Grad-CAM%2B%2B") as page:
        click_cell(page, 3, 9)  # at once: the model is still loading
        status = page.get_by_test_id("stAlert").filter(has_text="Loading the model for maps…")
        status.wait_for()
        screenshot(page, "first_click_loading")
        cell = re.compile("true 3 → predicted 9")
        headings = page.locator("h1, h2, h3, h4").filter(has_text=cell)
        assert headings.count() == 1  # the cell's heading, shown with the status
        gate.touch()
        n = wait_for_gallery(page, "3", "9")  # no second click
        assert n == len(cell_rows(result.predictions, 3, 9))
        assert [c["path"] for c in gallery_cards(page)] == _first_page(result, 3, 9)
        assert status.count() == 0
        page.get_by_text("Gallery settings", exact=True).wait_for()  # the sidebar follows by itself
        page.context.close()

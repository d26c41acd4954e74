"""The dashboard in a real browser (headless Chromium), clicked the way a person would.

Expected galleries are computed independently with ``core``; the page must list exactly the
images ``core`` puts in the clicked cell, each with both CAM panels rendered.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core import cell_rows, top_confused_pairs
from core.analysis.gallery import page_rows, sort_rows
from tests.browser import (
    click_cell,
    gallery_cards,
    new_page,
    screenshot,
    select_grid_row,
    selected_cells,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
)
from tests.projects import expected, write_config

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="module")
def server(project: Path):  # type: ignore[no-untyped-def]
    expected(project)
    with streamlit_server("--config", str(project)) as url:
        yield url


def _first_page(result, true: int, pred: int, size: int = 24) -> list[str]:  # type: ignore[no-untyped-def]
    rows = sort_rows(cell_rows(result.predictions, true, pred), "confidence", ascending=False)
    return list(page_rows(rows, 1, size)["path"]), len(rows)  # type: ignore[return-value]


def _assert_gallery(page, result, true: int, pred: int, method: str = "Grad-CAM") -> None:  # type: ignore[no-untyped-def]
    names = result.classes
    n = wait_for_gallery(page, names[true], names[pred])
    paths, total = _first_page(result, true, pred)
    assert n == total
    cards = gallery_cards(page)
    assert [c["path"] for c in cards] == paths  # exactly core's images, in sort order
    other = "true" if true != pred else "runner-up"
    for card in cards:
        captions = card["captions"]
        assert captions[0] == "image"
        assert captions[1] == f"{method} · predicted {names[pred]}"
        assert captions[2].startswith(f"{method} · {other} ")
        assert card["loaded"] == [True, True, True]  # all three panels actually rendered
    assert f"cell={true}%2C{pred}" in page.url or f"cell={true},{pred}" in page.url


def test_click_off_diagonal_then_diagonal_cell(server: str, browser, project: Path) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    pair = top_confused_pairs(result.predictions, result.classes, 1).iloc[0]
    page = new_page(browser)
    page.goto(server)
    wait_for_matrix(page)
    screenshot(page, "01_start")
    click_cell(page, int(pair["true"]), int(pair["pred"]))
    _assert_gallery(page, result, int(pair["true"]), int(pair["pred"]))
    page.locator(".cam-card").first.scroll_into_view_if_needed()
    screenshot(page, "02_error_cell")
    assert selected_cells(page) == [(int(pair["true"]), int(pair["pred"]))]
    click_cell(page, 9, 9)
    _assert_gallery(page, result, 9, 9)
    assert selected_cells(page) == [(9, 9)]  # the outline moved with the click
    assert len(gallery_cards(page)) == 24  # a full first page of a 50+ image cell
    screenshot(page, "03_diagonal_cell")
    page.context.close()


def test_a_confused_pair_row_opens_its_cell(server: str, browser, project: Path) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    pairs = top_confused_pairs(result.predictions, result.classes, 15)
    true, pred = int(pairs.iloc[0]["true"]), int(pairs.iloc[0]["pred"])
    page = new_page(browser)
    page.goto(server)
    wait_for_matrix(page)
    page.get_by_text("Most confused pairs").click()  # unfold the table above the matrix
    grid = page.get_by_test_id("stDataFrame").first
    select_grid_row(page, grid, 0, result.classes[true])
    page.wait_for_url(re.compile(rf"cell={true}(%2C|,){pred}"))
    _assert_gallery(page, result, true, pred)
    page.context.close()


def test_download_gives_every_row_of_the_cell(server: str, browser, project: Path) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    names = result.classes
    page = new_page(browser)
    page.goto(f"{server}/?model=digits-cnn&dataset=digits-test&cell=9,9&sort=loss_desc")
    wait_for_gallery(page, names[9], names[9])
    with page.expect_download() as download:
        page.get_by_role("button", name="Download rows (CSV)").click()
    table = pd.read_csv(download.value.path(), dtype={"true": str, "pred": str})
    rows = sort_rows(cell_rows(result.predictions, 9, 9), "loss", ascending=False)
    assert len(rows) > 24  # more than the page on screen: the whole cell
    assert list(table["path"]) == list(rows["path"])
    assert (table["true"] == names[9]).all() and (table["pred"] == names[9]).all()
    assert np.allclose(table["loss"], rows["loss"], atol=1e-6)
    page.context.close()


def test_deep_link_restores_the_view(server: str, browser, project: Path) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    # a fresh context: no cookies, no session, nothing but the URL
    page = new_page(browser)
    page.goto(f"{server}/?model=digits-cnn&dataset=digits-test&cell=9,9&method=Grad-CAM%2B%2B")
    wait_for_matrix(page)
    _assert_gallery(page, result, 9, 9, method="Grad-CAM++")
    assert selected_cells(page) == [(9, 9)]  # the matrix outlines the linked cell, only it
    screenshot(page, "04_deep_link")


def _choose(page, label: str, option: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_test_id("stSelectbox").filter(has_text=label).first.click()
    page.get_by_role("option", name=option, exact=True).click()


def test_switch_dataset_and_model(server: str, browser, project: Path) -> None:  # type: ignore[no-untyped-def]
    even = expected(project, dataset="digits-even")
    shifted = expected(project, model="digits-cnn-shifted", dataset="digits-even")
    page = new_page(browser)
    page.goto(server)
    wait_for_matrix(page)
    _choose(page, "Dataset", "digits-even")
    page.get_by_text(f"{len(even.predictions)} images · rows: true class").wait_for()
    assert "dataset=digits-even" in page.url
    _choose(page, "Model", "digits-cnn-shifted")
    page.wait_for_url(re.compile("model=digits-cnn-shifted"))
    accuracy = (shifted.predictions["true"] == shifted.predictions["pred"]).mean()
    page.get_by_test_id("stMetricValue").filter(has_text=f"{accuracy:.2%}").wait_for()
    pair = (0, 0)
    click_cell(page, *pair)
    _assert_gallery(page, shifted, *pair)
    page.context.close()


def test_broken_entry_shows_error_panel_and_app_keeps_working(server: str, browser) -> None:  # type: ignore[no-untyped-def]
    page = new_page(browser)
    page.goto(f"{server}/?model=broken")
    alert = page.get_by_test_id("stAlert").filter(has_text="checkpoint not found")
    alert.wait_for()
    assert "missing.safetensors" in alert.inner_text()
    screenshot(page, "05_error_panel")
    _choose(page, "Model", "digits-cnn")
    wait_for_matrix(page)
    assert page.get_by_test_id("stAlert").filter(has_text="checkpoint not found").count() == 0
    page.context.close()

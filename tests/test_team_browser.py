"""A team on one shared URL: independent views at the same time, notes that persist."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import top_confused_pairs
from tests.browser import (
    click_cell,
    gallery_cards,
    new_page,
    open_inspect,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
)
from tests.projects import expected, write_config

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_config(tmp_path_factory.mktemp("team"))
    expected(path)
    return path


def test_eight_users_clicking_different_cells_at_once(project: Path, browser) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    errors = top_confused_pairs(result.predictions, result.classes, 8)
    cells = [(int(t), int(p)) for t, p in zip(errors["true"], errors["pred"], strict=True)]
    cells += [(k, k) for k in range(8 - len(cells))]
    with streamlit_server("--config", str(project)) as url:
        pages = [new_page(browser) for _ in cells]
        for page in pages:
            page.goto(url)
        for page in pages:
            wait_for_matrix(page)
        for page, cell in zip(pages, cells, strict=True):  # all clicks in flight together
            click_cell(page, *cell)
        for page, (true, pred) in zip(pages, cells, strict=True):
            names = result.classes
            n = wait_for_gallery(page, names[true], names[pred])
            in_cell = result.predictions.query("true == @true and pred == @pred")
            assert n == len(in_cell)
            shown = {card["path"] for card in gallery_cards(page)}
            assert shown <= set(in_cell["path"]) and len(shown) == min(n, 24)
            assert f"cell={true}%2C{pred}" in page.url  # each user keeps their own URL
        for page in pages:
            page.context.close()


def _add_note(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.get_by_label("Your name (for tags and notes)").fill("Grace")
    page.get_by_label("Your name (for tags and notes)").press("Enter")
    dialog = open_inspect(page)
    dialog.get_by_label("Add a note").fill(text)
    dialog.get_by_role("button", name="Save note").click()
    dialog.get_by_test_id("stText").get_by_text(text, exact=True).wait_for()  # the saved note


def test_notes_are_shared_plain_text_and_survive_a_restart(project: Path, browser) -> None:  # type: ignore[no-untyped-def]
    text = "<b>not bold</b> — the stroke looks like a 9"
    link = "/?model=digits-cnn&dataset=digits-test&cell=3,9"
    with streamlit_server("--config", str(project)) as url:
        writer = new_page(browser)
        writer.goto(url + link)
        wait_for_gallery(writer, "3", "9")
        _add_note(writer, text)
        writer.context.close()
    with streamlit_server("--config", str(project)) as url:  # a new server process
        reader = new_page(browser)
        reader.goto(url + link)
        wait_for_gallery(reader, "3", "9")
        assert reader.get_by_text("1 note", exact=True).count() == 1  # badge on the card
        dialog = open_inspect(reader)
        dialog.get_by_test_id("stText").get_by_text(text, exact=True).wait_for()  # as typed
        assert dialog.locator("b", has_text="not bold").count() == 0
        reader.context.close()


def test_read_only_server_hides_editing(project: Path, browser) -> None:  # type: ignore[no-untyped-def]
    with streamlit_server("--config", str(project), "--read-only") as url:
        page = new_page(browser)
        page.goto(url + "/?model=digits-cnn&dataset=digits-test&cell=3,9")
        wait_for_gallery(page, "3", "9")
        page.get_by_text("Read-only server").wait_for()
        assert page.get_by_label("Your name (for tags and notes)").count() == 0
        dialog = open_inspect(page)
        dialog.get_by_text("Tags").first.wait_for()
        assert dialog.get_by_label("Add a note").count() == 0
        page.context.close()

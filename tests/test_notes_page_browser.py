"""The Tags & notes page in Chromium: it lists what the team wrote on a dataset and exports it.

Its screenshot is the README's (dashboard/assets/notes.png).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from core import dataset_key, load_config
from core.notes import NotesStore
from tests.browser import chromium, new_page, streamlit_server, wait_idle
from tests.projects import ROOT, SAMPLE, marked_paths

pytestmark = pytest.mark.browser
ASSET = ROOT / "dashboard" / "assets" / "notes.png"


def _config(folder: Path) -> Path:
    """The shapes sample's data and shortcut model, with the notes in ``folder``."""
    sample = load_config(SAMPLE / "config.toml")
    model, data = sample.model("shapes-resnet (shortcut)"), sample.dataset("shapes-test")
    path = folder / "config.toml"
    path.write_text(
        f"""
cache_dir = "cache"
[[models]]
name = "{model.name}"
factory = "{model.factory}"
weights = "{model.weights.as_posix() if model.weights else ""}"
[[datasets]]
name = "{data.name}"
root = "{data.root.as_posix()}"
""",
        encoding="utf-8",
    )
    return path


def _marked(shape: str, n: int) -> list[str]:
    return [p for p in marked_paths() if p.startswith(f"{shape}/")][:n]


def test_the_page_lists_every_tag_and_note_of_the_dataset(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path))
    data = config.dataset()
    store = NotesStore(config.notes_db, default_tags=config.tags)
    key = dataset_key(data)
    squares, circles = _marked("square", 2), _marked("circle", 1)
    for path in squares + circles:
        store.set_tags(key, path, ["spurious cue"], "Ada")
    store.add_note(key, squares[0], "Ada", "Called star: the map sits on the magenta corner mark.")
    store.add_note(key, circles[0], "Grace", "Same mark, same mistake; the shape itself is clear.")
    written = len(squares) + len(circles) + 2

    with streamlit_server("--config", str(config.path)) as url, chromium() as browser:
        page = new_page(browser)
        page.set_viewport_size({"width": 1500, "height": 700})
        page.goto(f"{url}/notes?dataset={data.name}")
        page.get_by_role("heading", name="Tags & notes").wait_for(timeout=60_000)
        page.get_by_text(f"{written} tags and notes · stored in").wait_for(timeout=60_000)
        page.get_by_test_id("stDataFrame").wait_for()
        button = page.get_by_test_id("stDownloadButton").get_by_role("button")
        button.wait_for()
        wait_idle(page)
        with page.expect_download() as download:
            button.click()
        with open(download.value.path(), newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        assert len(rows) == written
        assert {r["path"] for r in rows} == set(squares + circles)
        assert {r["author"] for r in rows} == {"Ada", "Grace"}
        assert all(r["dataset"] == data.name for r in rows)
        page.get_by_test_id("stDataFrame").locator("canvas").first.wait_for()
        page.screenshot(path=str(ASSET), full_page=False)
        page.context.close()

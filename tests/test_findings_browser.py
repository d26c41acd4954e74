"""Findings in the browser, end to end: pin the first pattern on the Patterns page, set its
status and owner on the Findings page, download the report, and open that file in Chromium
with the network blocked: the finding is there with its images and both maps drawn."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest

from core import evaluate, load_config, load_model, open_dataset, result_patterns
from core.findings import FindingsStore
from core.notes import NotesStore
from tests.browser import (
    SCREENSHOTS,
    chromium,
    new_page,
    screenshot,
    streamlit_server,
    wait_idle,
)
from tests.projects import SAMPLE, sample_config
from tests.test_patterns import SHAPES

pytestmark = pytest.mark.browser
MODEL = "shapes-resnet (shortcut)"
NAME = "Your name (for tags and notes)"


def _config(folder: Path) -> Path:
    """The sample with absolute paths, its stored evaluations and a notes database of its own."""
    path = sample_config(folder)
    cache = (SAMPLE / ".cache").as_posix()
    notes = (folder / "notes.sqlite").as_posix()
    text = path.read_text(encoding="utf-8")
    path.write_text(
        text.replace('cache_dir = "cache"', f'cache_dir = "{cache}"\nnotes_db = "{notes}"'),
        encoding="utf-8",
    )
    return path


def _sign(page, name: str) -> None:  # type: ignore[no-untyped-def]
    """Type the author's name in the sidebar, as a person does (Enter commits it)."""
    box = page.get_by_label(NAME)
    box.wait_for(timeout=120_000)
    box.fill(name)
    box.press("Enter")
    wait_idle(page)


def test_pin_a_pattern_set_status_and_owner_and_read_the_report_offline(tmp_path: Path) -> None:
    config_path = _config(tmp_path)
    config = load_config(config_path)
    model = load_model(config.model(MODEL))
    dataset = open_dataset(config.dataset(SHAPES), model.spec.classes)
    result = evaluate(model, dataset, config.cache_dir)  # the server opens these results
    first = result_patterns(result)[0]
    paths = result.manifest.column("path").to_pylist()
    held = [paths[int(r)] for r in first.rows[:50]]
    names = result.classes
    query = f"model={quote(MODEL)}&dataset={quote(SHAPES)}"

    with streamlit_server("--config", str(config_path)) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(f"{url}/patterns?{query}")
        page.locator(".pattern-grid .pattern-card").first.wait_for(timeout=120_000)
        _sign(page, "ana")
        page.get_by_role("button", name=re.compile("Pin as finding")).first.click()
        page.get_by_label("What it shows").fill("The star's maps look at the corner mark.")
        page.get_by_test_id("stBaseButton-primaryFormSubmit").click()  # Pin
        page.get_by_text("Pinned as finding #1").wait_for(timeout=60_000)
        screenshot(page, "findings_pin_pattern")

        page.goto(f"{url}/findings?{query}&finding=1")
        title = f"#1 · Pattern {first.cluster} of true {names[first.true]} → predicted"
        page.get_by_text(title).wait_for(timeout=120_000)
        _sign(page, "bo")
        form = page.get_by_test_id("stForm")
        form.get_by_test_id("stSelectbox").click()
        page.get_by_role("option", name="confirmed").click()
        form.get_by_label("Owner").fill("bob")
        form.get_by_role("button", name="Save changes").click()
        page.get_by_text("Saved as version 2.").wait_for(timeout=60_000)
        page.locator(".cam-gallery .cam-card").first.wait_for(timeout=120_000)
        page.wait_for_function(  # the finding's cards, each with its image and both maps
            "() => [...document.querySelectorAll('.cam-gallery img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        screenshot(page, "findings_page")
        page.locator(".cam-gallery").scroll_into_view_if_needed()
        page.screenshot(path=str(SCREENSHOTS / "findings_page_images.png"))
        finding = FindingsStore(NotesStore(config.notes_db)).get(1)
        assert (finding.status, finding.owner, finding.editor) == ("confirmed", "bob", "bo")
        assert list(finding.paths) == held and finding.kind == "pattern"

        with page.expect_download(timeout=180_000) as info:
            page.get_by_role("button", name=re.compile("Download report")).click()
        report = tmp_path / "report.html"
        info.value.save_as(report)

        offline = browser.new_context(offline=True, viewport={"width": 1300, "height": 1000})
        asked: list[str] = []

        def block(route) -> None:  # type: ignore[no-untyped-def]
            if route.request.url.startswith(("file:", "data:")):
                route.continue_()
            else:
                asked.append(route.request.url)
                route.abort()

        offline.route("**/*", block)
        reader = offline.new_page()
        reader.goto(report.as_uri())
        article = reader.locator("#finding-1")
        article.wait_for()
        text = article.inner_text()
        assert "confirmed" in text and "owner: bob" in text
        assert "The star's maps look at the corner mark." in text
        cards = article.locator("figure.card")
        assert cards.count() == len(held)
        shown = [c.split("\n")[0] for c in cards.locator("figcaption").all_inner_texts()]
        assert shown == held
        drawn = reader.evaluate(
            """() => [...document.querySelectorAll('#finding-1 figure.card')].map(card =>
                [...card.querySelectorAll('img')].map(i => i.complete && i.naturalWidth > 0))"""
        )
        assert drawn == [[True, True, True]] * len(held)  # the image and both maps, drawn
        link = article.locator("a.deep").get_attribute("href")
        assert link is not None and link.startswith(url) and f"pattern={first.cluster}" in link
        assert asked == []  # nothing fetched from anywhere
        article.screenshot(path=str(SCREENSHOTS / "findings_report_offline.png"))


def test_pin_an_image_from_the_inspect_dialog(tmp_path: Path) -> None:
    """The pin inside *Inspect an image* (a popover in a dialog) saves that one image."""
    from tests.browser import open_inspect, wait_for_gallery
    from tests.projects import expected, write_config

    config_path = write_config(tmp_path)
    result = expected(config_path)
    with streamlit_server("--config", str(config_path)) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(f"{url}/?model=digits-cnn&dataset=digits-test&cell=3%2C3")
        wait_for_gallery(page, "3", "3")
        _sign(page, "ana")
        dialog = open_inspect(page)
        path = dialog.locator("strong").first.inner_text()
        dialog.get_by_role("button", name=re.compile("Pin image")).click()
        page.get_by_label("What it shows").fill("the loop is open")
        page.get_by_test_id("stBaseButton-primaryFormSubmit").click()  # Pin
        page.get_by_text("Pinned as finding #1").wait_for(timeout=60_000)
        screenshot(page, "findings_pin_image")
    finding = FindingsStore(NotesStore(load_config(config_path).notes_db)).get(1)
    assert (finding.kind, finding.paths, finding.text) == ("image", (path,), "the loop is open")
    assert path in set(result.predictions["path"].astype(str))

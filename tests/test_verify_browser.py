"""**Test this pattern** in the browser: open the Patterns page on the shortcut sample, click the
button on the first pattern as a person would, watch the test run and find its verdict (causal,
as core finds it: tests/test_causal.py), the interval chart and the example images; the card's
label fills in without a page rerun and the poll stops. A reload shows the stored verdict at
once, and the cell view's strip shows the same test.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

import pytest

from core import evaluate, load_config, load_model, open_dataset, result_patterns
from core.analysis.causal import pattern_subject, stored_verdict
from tests.browser import Reruns, chromium, new_page, screenshot, streamlit_server, wait_idle
from tests.projects import sample_config
from tests.test_causal import SHORTCUT

pytestmark = pytest.mark.browser
SHAPES = "shapes-test"
VERDICT = ".verdict-result[data-verdict]"
EXAMPLES_LOADED = """() => {
    const images = [...document.querySelectorAll('.verdict-examples img')];
    return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
}"""


def _example_count(page) -> int:  # type: ignore[no-untyped-def]
    return int(page.locator(".verdict-examples img").count())


def test_click_test_this_pattern_and_see_the_verdict(tmp_path: Path) -> None:
    config_path = sample_config(tmp_path)
    config = load_config(config_path)
    model = load_model(config.model(SHORTCUT))
    dataset = open_dataset(config.dataset(SHAPES), model.spec.classes)
    result = evaluate(model, dataset, config.cache_dir)  # the server opens these results
    first = result_patterns(result)[0]
    subject = pattern_subject(result, first)
    assert stored_verdict(result, subject) is None  # the page computes a fresh verdict
    names = result.classes
    query = f"model={quote(SHORTCUT)}&dataset={SHAPES}"

    with streamlit_server("--config", str(config_path)) as url, chromium() as browser:
        page = new_page(browser)
        reruns = Reruns(page)
        page.goto(f"{url}/patterns?{query}")
        card = page.locator(".pattern-grid .pattern-card").first
        card.wait_for(timeout=120_000)
        assert card.locator(".verdict-label[data-verdict]").count() == 0  # not tested yet
        wait_idle(page)
        button = page.get_by_role("button", name="Test this pattern").first
        button.scroll_into_view_if_needed()
        button.click()

        panel = page.locator(VERDICT)
        running = page.get_by_text("forward passes").or_(page.get_by_text("Loading the model"))
        running.or_(panel).first.wait_for(timeout=120_000)
        if not panel.count():  # caught while it runs (a shapes test takes seconds)
            screenshot(page, "verify_running")
        panel.wait_for(timeout=120_000)
        assert panel.get_attribute("data-verdict") == "causal"
        page.wait_for_function(EXAMPLES_LOADED, timeout=120_000)
        stored = stored_verdict(result, subject)  # the server stored what it showed
        assert stored is not None and stored.verdict == "causal"
        t, e = stored.transplant, stored.erase
        text = page.locator('[data-testid="stVerticalBlock"]', has=panel).last.inner_text()
        assert "Causal test of pattern #1" in text
        assert f"{t.hits} of {t.n} = {t.rate:.2f}" in text and f"{e.hits} of {e.n}" in text
        assert f"p = {stored.p_transplant:.2g}" in text
        transplants, erasures = min(4, len(stored.target_rows)), min(4, len(stored.erase_rows))
        assert _example_count(page) == 5 * transplants + 3 * erasures
        captions = page.locator(".verdict-transplants figcaption").all_inner_texts()
        assert any(f"predicted {names[first.pred]} (" in c for c in captions)  # a flip
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # drawn after the text
        assert page.locator(".js-plotly-plot").count() == 1  # the interval chart
        assert parse_qs(urlparse(page.url).query)["test"] == ["1"]
        # the card's label is filled in place, and the poll has stopped its timer
        label = card.locator(".verdict-label")
        content = label.evaluate("(e) => getComputedStyle(e, '::after').content")
        assert content == '"causal"'
        reruns.assert_quiet(page, 3.0)
        page.mouse.move(1300, 40)  # no button's tooltip over the panel
        page.evaluate("() => document.activeElement && document.activeElement.blur()")
        page.wait_for_timeout(500)
        panel.scroll_into_view_if_needed()
        screenshot(page, "verify_panel")
        page.locator(".verdict-erasures").scroll_into_view_if_needed()
        screenshot(page, "verify_examples")

        page.reload()  # stored: the verdict at once, and on the card
        page.locator(VERDICT).wait_for(timeout=60_000)
        assert page.locator(VERDICT).get_attribute("data-verdict") == "causal"
        labelled = page.locator(".pattern-grid .pattern-card").first.locator(".verdict-label")
        assert labelled.get_attribute("data-verdict") == "causal"
        page.wait_for_function(EXAMPLES_LOADED, timeout=120_000)
        screenshot(page, "verify_reloaded")

        # the cell view's strip: the same pattern, its label and its open test
        cell = f"{first.true},{first.pred}"
        page.goto(f"{url}/?{query}&cell={quote(cell)}&test=1")
        strip = page.locator(".pattern-strip .pattern-card[data-pattern]")
        strip.first.wait_for(timeout=120_000)
        page.locator(VERDICT).wait_for(timeout=60_000)
        assert page.locator(VERDICT).get_attribute("data-verdict") == "causal"
        tested = page.locator(
            f'.pattern-strip .pattern-card[data-pattern="{first.cluster}"] .verdict-label'
        )
        assert tested.get_attribute("data-verdict") == "causal"
        page.wait_for_function(EXAMPLES_LOADED, timeout=120_000)
        page.locator(VERDICT).scroll_into_view_if_needed()
        screenshot(page, "verify_cell_strip")
        page.context.close()

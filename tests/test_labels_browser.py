"""In Chromium: open a cell of the model comparison, and the suspected-label-errors view.

Screenshots go to ``dashboard/assets/compare_fixed.png`` and ``dashboard/assets/label_errors.png``
(the README shows them).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from core.analysis.comparison import Agreement, compare
from core.analysis.label_quality import label_quality
from core.cli import _arrays
from tests.browser import chromium, new_page, streamlit_server, wait_idle
from tests.projects import ROOT, marked_paths
from tests.test_shortcut_compare import CLEAN, SHORTCUT, _evaluation

sys.path.insert(0, str(ROOT / "sample_models"))
from plant_labels import plant

pytestmark = pytest.mark.browser
ASSETS = ROOT / "dashboard" / "assets"
CARDS = """(n) => {
    if (document.querySelector('[data-stale="true"]')) return false;
    const cards = Array.from(document.querySelectorAll('.cam-card'));
    return cards.length > 0 && cards.every(card => {
        const imgs = Array.from(card.querySelectorAll('figure img'));
        return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0);
    });
}"""
PATHS = "() => Array.from(document.querySelectorAll('.cam-card strong')).map(s => s.innerText)"


def test_compare_click_into_fixed(tmp_path: Path) -> None:
    a, b = (_arrays(_evaluation(name, tmp_path)) for name in (SHORTCUT, CLEAN))
    result = compare(a, b)
    fixed = result.cell_positions(Agreement.FIXED)
    marked = set(marked_paths())
    query = f"model={quote(SHORTCUT)}&model_b={quote(CLEAN)}&dataset=shapes-test"
    with streamlit_server() as url, chromium() as browser:  # the bundled sample
        page = new_page(browser)
        page.goto(f"{url}/compare-models?{query}")  # a deep link as the server's first request
        button = page.get_by_role("button", name=f"fixed: {len(fixed)}", exact=True)
        button.wait_for(timeout=180_000)
        page.get_by_text(f"p {result.p_value():.3g}"[2:], exact=True).wait_for()
        button.click()
        page.get_by_text(f"{Agreement.FIXED.label}: {len(fixed)} images").wait_for()
        page.wait_for_function(CARDS, arg=5, timeout=180_000)
        wait_idle(page)
        paths = page.evaluate(PATHS)
        assert paths == [str(p) for p in result.paths[fixed][:12]]
        assert set(paths) <= marked  # the fixed images carry the mark
        assert "agree=fixed" in page.url  # deep link
        captions = page.locator(".cam-card").first.locator("figcaption").all_inner_texts()
        assert captions[1] == "A · predicted star" and captions[3].startswith("B · predicted")
        page.locator(".cam-card").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ASSETS / "compare_fixed.png"), full_page=False)
        page.context.close()


def test_label_errors_view(tmp_path: Path) -> None:
    config = plant(tmp_path / "planted", "digits-test", count=8)
    with (config.parent / "planted.csv").open(newline="", encoding="utf-8") as handle:
        planted = {row["path"] for row in csv.DictReader(handle)}
    from tests.projects import expected

    result = expected(config, dataset="digits-test-planted")
    rows = _arrays(result)
    ranked = label_quality(rows.true, result.probs(result.index)).ranked_issues()
    with streamlit_server("--config", str(config)) as url, chromium() as browser:
        page = new_page(browser)
        page.goto(url)
        page.get_by_role("link", name="Suspected label errors").click()
        page.get_by_text(f"flags {len(ranked)} of 540").wait_for(timeout=180_000)
        page.wait_for_function(CARDS, arg=3, timeout=180_000)
        wait_idle(page)
        paths = page.evaluate(PATHS)
        assert sorted(paths) == sorted(str(p) for p in rows.paths[ranked])
        assert set(paths) <= planted
        assert "/label-errors" in page.url
        page.get_by_label("Your name (for tags and notes)").fill("Ada")
        page.keyboard.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="label error").first.click()
        page.get_by_text("tags: label error").first.wait_for(timeout=60_000)
        page.screenshot(path=str(ASSETS / "label_errors.png"), full_page=False)
        page.context.close()

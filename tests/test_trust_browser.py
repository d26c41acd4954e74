"""Faithfulness badges in Chromium: the cards come first, then each map gets its badge.

On the shortcut ResNet's cell "other shape → star", every predicted-class map gets a badge
("drop N %", with a tooltip) once the background scoring is done, and the page's medians are
shown; the scores equal core's on the same maps.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from core.analysis.badges import badge_text
from core.analysis.gallery import page_rows, stored_maps
from core.analysis.trust import load_images
from core.explain.faithfulness import faithfulness
from tests.browser import (
    SCREENSHOTS,
    chromium,
    click_cell,
    gallery_cards,
    new_page,
    open_dashboard,
    open_inspect,
    screenshot,
    streamlit_server,
    wait_for_gallery,
    wait_for_matrix,
    wait_idle,
)
from tests.projects import shortcut_cell

pytestmark = pytest.mark.browser
MODEL, DATASET, MARKED = "shapes-resnet (shortcut)", "shapes-test", "star"

BADGES_JS = """() => Array.from(document.querySelectorAll('.cam-card')).map(card =>
    Array.from(card.querySelectorAll('.cam-fb')).map(b => {
        const after = getComputedStyle(b, '::after').content;
        const extra = after && after !== 'none' ? after.replace(/"/g, '') : '';
        const text = (b.innerText || '') + extra;
        return {text, shown: getComputedStyle(b).display !== 'none', title: b.title};
    }))"""


def test_badges_follow_the_cards(tmp_path: Path) -> None:
    cell = shortcut_cell(MODEL, DATASET, tmp_path, MARKED)
    model, dataset, result, rows = cell.model, cell.dataset, cell.result, cell.rows
    true, star, names = cell.true, cell.marked, result.classes
    assert len(rows) <= 24  # one page: the whole cell's order is visible
    page_of = page_rows(rows, 1, 24)
    maps = torch.from_numpy(np.stack(stored_maps(result, page_of, (64, 64))))
    images, _, _ = load_images(model, dataset, list(page_of["path"]))
    cls = torch.tensor([[star, true]] * len(page_of))
    expected = faithfulness(model.module, images, maps, cls, keep=False).score

    with streamlit_server() as url, chromium() as browser:
        page = new_page(browser)
        asked: list[object] = []  # what the browser sends that is more than a heartbeat
        page.on(
            "websocket",
            lambda ws: ws.on("framesent", lambda m: asked.append(m) if len(m) > 40 else None),
        )
        page.goto(f"{url}/?model={MODEL}&dataset={DATASET}".replace(" ", "+"))
        wait_for_matrix(page)
        click_cell(page, true, star)
        wait_for_gallery(page, names[true], MARKED)
        page.wait_for_function(
            f"() => ({BADGES_JS})().flat().filter(b => b.shown && /(drop|gain) \\d+ %/"
            f".test(b.text)).length === {2 * len(page_of)}",
            timeout=120_000,
        )
        badges = page.evaluate(BADGES_JS)
        assert len(badges) == len(page_of)
        for card, scores in zip(badges, expected, strict=True):
            assert [b["text"] for b in card] == [badge_text(float(s)) for s in scores]
            assert all("removed" in b["title"] for b in card)
        page.get_by_text(re.compile(r"Map faithfulness, median of this page")).wait_for()
        page.wait_for_function("() => !document.body.innerText.includes('scoring ')")
        # Then the poll stops its timer and the page is not rerun (a rerun could swallow a
        # click): the cards are the ones first sent, their slots filled by the poll's style...
        slots = page.evaluate(
            "() => Array.from(document.querySelectorAll('.cam-card .cam-fb'), b => b.innerText)"
        )
        assert slots == [""] * (2 * len(page_of))
        page.wait_for_timeout(1_000)
        before = len(asked)
        page.wait_for_timeout(3_000)  # ...and the browser asks for no more reruns
        assert len(asked) == before
        page.locator(".cam-card").first.scroll_into_view_if_needed()
        screenshot(page, "faithfulness_badges")

        # Inspect: the deletion and insertion curves of the chosen map, on demand
        dialog = open_inspect(page)
        dialog.get_by_text("Deletion and insertion curves").click()
        dialog.locator(".js-plotly-plot").wait_for(timeout=120_000)
        dialog.locator(".js-plotly-plot .legendtext").nth(3).wait_for()
        legend = dialog.locator(".js-plotly-plot .legendtext").all_text_contents()
        assert [t.split(" (AUC")[0] for t in legend] == [
            "deletion",
            "insertion",
            "random deletion",
            "random insertion",
        ]
        dialog.get_by_text(re.compile(r"Deletion AUC \d\.\d{3} \(random")).wait_for()
        chart = dialog.locator(".js-plotly-plot")
        chart.scroll_into_view_if_needed()
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        chart.screenshot(path=str(SCREENSHOTS / "faithfulness_curves.png"))
        page.context.close()

        # sorted "least faithful maps first": by the predicted-class map's score, ties by path
        order = page_of.assign(score=expected[:, 0]).sort_values(["score", "path"])
        page = new_page(browser)
        query = f"model={MODEL}&dataset={DATASET}&cell={true},{star}&sort=faithfulness_asc"
        page.goto(f"{url}/?{query}".replace(" ", "+"))
        wait_for_gallery(page, names[true], MARKED)
        cards = gallery_cards(page)
        assert [c["path"] for c in cards] == list(order["path"])
        page.context.close()


def test_layer_picker_shows_each_layers_faithfulness(tmp_path: Path) -> None:
    from core.analysis.trust import load_layer_scores
    from tests.projects import expected as evaluated
    from tests.projects import write_config

    config = write_config(tmp_path)
    result = evaluated(config)
    with open_dashboard(
        "--config", str(config), path="/?model=digits-cnn&dataset=digits-test"
    ) as page:
        page.get_by_text("Gallery settings", exact=True).click()
        page.get_by_text(re.compile("Faithfulness of each layer's Grad-CAM maps")).wait_for(
            timeout=400_000  # every layer on 64 images, in the background: slow on a busy machine
        )
        picker = page.get_by_test_id("stSelectbox").filter(has_text="Target layer")
        for attempt in range(3):  # a rerun that lands mid-click closes the list: open it again
            wait_idle(page)
            picker.get_by_role("combobox").click()
            try:
                page.get_by_role("option").first.wait_for(timeout=5_000)
                break
            except Exception:
                if attempt == 2:
                    raise
        options = [o.strip() for o in page.get_by_role("option").all_inner_texts()]
        scored = [o for o in options if re.search(r"faithfulness -?\d\.\d\d$", o)]
        assert len(scored) > 2
        assert all(o.endswith("×1×1") for o in options if o not in scored)  # no map to score
        page.keyboard.press("Escape")
        page.get_by_test_id("stSidebar").screenshot(
            path=str(SCREENSHOTS / "layer_faithfulness.png")
        )
        page.context.close()
    saved = load_layer_scores(result, "Grad-CAM")  # computed once, kept beside the result
    assert saved is not None and len(saved) == len(scored)

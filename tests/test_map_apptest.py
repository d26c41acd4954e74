"""The Map page and the calibration charts with AppTest, driven by the URL (no browser)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.analysis.embedding_map import result_layout
from tests.apptest import VIEWS, card_paths, run
from tests.projects import expected, region_around_median, write_config

MAP = str(VIEWS / "map.py")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_config(tmp_path_factory.mktemp("map"))
    result_layout(expected(path))  # evaluated, and its UMAP layout stored
    return path


def test_a_region_in_the_url_lists_its_images(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    xy = result_layout(result).xy
    region = region_around_median(xy)
    inside = region.contains(xy)
    assert inside.sum() >= 30  # more than one page of 12
    at = run(MAP, project, monkeypatch, sel=region.to_param(), page_size="12", page="2")
    assert not at.exception
    assert any(f"{int(inside.sum())} images in the selection" in s.value for s in at.subheader)
    paths = set(result.predictions["path"][inside])
    shown = card_paths(at)
    assert len(shown) == min(12, int(inside.sum()) - 12) and set(shown) <= paths


@pytest.mark.parametrize(
    "params",
    [
        {"sel": "box:junk"},
        {"sel": "lasso:1,2;3,4"},
        {"sel": "box:1e308,1e308;-1e308,-1e308", "page": "999"},
        {"mapcolor": "nonsense", "cell": "99,99"},
        {"mapcolor": "label", "cell": "3,9"},
        {"mapcolor": "true"},
        {"mapcolor": "pattern", "cell": "3,9"},  # digits has no pattern
    ],
)
def test_malformed_or_odd_map_urls_never_fail(project: Path, monkeypatch, params) -> None:  # type: ignore[no-untyped-def]
    at = run(MAP, project, monkeypatch, **params)
    assert not at.exception
    assert at.title and at.title[0].value == "Map of the test set"


def test_results_without_embeddings_say_so(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path)
    text = config.read_text().replace(
        'name = "digits-cnn"\n', 'name = "digits-cnn"\nembeddings = false\n', 1
    )
    config.write_text(text)
    assert not expected(config).has_embeddings
    at = run(MAP, config, monkeypatch)
    assert not at.exception
    assert any("hold no embeddings" in i.value for i in at.info)


def test_a_clicked_bar_selects_exactly_its_images(project: Path) -> None:
    from dashboard.parts.calibration import HISTOGRAM_BINS, chart_rows

    result = expected(project)
    table = result.predictions
    right = table["true"] == table["pred"]
    found = chart_rows(result, f"wrong:{HISTOGRAM_BINS - 1}")
    assert found is not None
    rows, heading = found
    top = (table["confidence"] >= 0.95) & ~right
    assert sorted(rows["path"]) == sorted(table["path"][top])
    assert heading.startswith(f"{int(top.sum())} wrong predictions")
    rows, _ = chart_rows(result, "precision:9") or pytest.fail("a class")
    assert sorted(rows["path"]) == sorted(table["path"][table["pred"] == 9])
    assert list(rows["true"] != rows["pred"])[: int((~right & (table["pred"] == 9)).sum())] == [
        True
    ] * int((~right & (table["pred"] == 9)).sum())  # errors first
    for junk in ("rel:99", "precision:-1", "what:3", "rel:", "recall:10"):
        assert chart_rows(result, junk) is None


def _early_chart_page() -> None:
    import streamlit as st

    from dashboard.parts.plotly_early import plotly_loading

    with plotly_loading():
        st.title("page")
        if st.query_params.get("stop"):
            st.stop()
        if st.query_params.get("fail"):
            raise ValueError("the page failed")
        st.write("end of the page")


@pytest.mark.parametrize("ending", ["done", "stop", "fail"])
def test_the_early_plotly_chart_never_outlives_its_page(ending: str) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_early_chart_page, default_timeout=60)
    if ending != "done":
        at.query_params[ending] = "1"
    at.run()
    assert at.title[0].value == "page"
    assert bool(at.exception) == (ending == "fail")
    charts = at.get("plotly_chart")
    if ending == "stop":  # nothing can be sent after st.stop(): it stays, hidden by its style
        (style,) = [h.value for h in at.html if "display: none" in h.value]
        assert ".st-key-plotly-early" in style and len(charts) == 1
    else:
        assert not charts  # the empty chart went with the page's end

"""Page logic with Streamlit's AppTest, driven through query parameters (no browser)."""

from __future__ import annotations

import html
import re
import shutil
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from core import cell_rows
from core.analysis.gallery import first_pages, page_rows, sort_rows
from dashboard.parts.notes import AUTHOR_KEY
from dashboard.parts.sidebar import GALLERY_SETTINGS_OPEN
from dashboard.state import resources
from tests.apptest import APP, card_paths, run
from tests.projects import ROOT, expected, write_config


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_config(tmp_path_factory.mktemp("apptest"))
    expected(path)  # fill the disk cache once
    return path


def test_without_a_cell_the_page_invites_a_click(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(APP, project, monkeypatch)
    assert not at.exception
    assert any("Click any cell" in i.value for i in at.info)
    assert at.query_params.get("cell") is None


def test_cell_and_page_from_the_url(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    rows = sort_rows(cell_rows(result.predictions, 9, 9), "loss", ascending=False)
    at = run(APP, project, monkeypatch, cell="9,9", sort="loss_desc", page="2", page_size="12")
    assert not at.exception
    assert any(f"true *9* → predicted *9*: {len(rows)} images" in s.value for s in at.subheader)
    assert card_paths(at) == list(page_rows(rows, 2, 12)["path"])


def test_invalid_url_values_fall_back(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(APP, project, monkeypatch, model="../../etc/passwd", cell="99,1", page="abc")
    assert not at.exception
    assert at.selectbox(key="url:model").value == "digits-cnn"
    assert any("Click any cell" in i.value for i in at.info)


def test_changing_dataset_updates_url_and_clears_cell(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(APP, project, monkeypatch, cell="3,9", page="2")
    at.selectbox(key="url:dataset").set_value("digits-even").run()
    assert not at.exception
    assert (
        at.query_params["dataset"] == ["digits-even"] or at.query_params["dataset"] == "digits-even"
    )
    assert "cell" not in at.query_params and "page" not in at.query_params
    even = expected(project, dataset="digits-even")
    assert any(f"{len(even.predictions)} images" in c.value for c in at.caption)


def test_broken_model_entry_shows_error_and_others_stay_usable(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(APP, project, monkeypatch, model="broken")
    assert not at.exception
    assert any("checkpoint not found" in e.value for e in at.error)
    at.selectbox(key="url:model").set_value("digits-cnn").run()
    assert not at.exception and not at.error
    assert any("Accuracy" in m.label for m in at.metric)


def test_bad_config_file_shows_error_panel(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "config.toml"
    bad.write_text("[[models]\nname = ")
    at = run(APP, bad, monkeypatch)
    assert not at.exception
    assert any("not valid TOML" in e.value for e in at.error)


def test_class_count_mismatch_names_both_numbers(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path)
    text = config.read_text().replace(
        'classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]',
        'classes = ["0", "2", "4", "6", "8"]',
    )
    config.write_text(text)
    at = run(APP, config, monkeypatch, dataset="digits-even")
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "10 classes" in message and "has 5" in message


def _card_captions(at: AppTest) -> list[str]:
    return [
        html.unescape(c) for h in at.html for c in re.findall(r"<figcaption[^>]*>(.*?)<", h.value)
    ]


def open_gallery_settings(at: AppTest) -> AppTest:
    """Unfold the sidebar's gallery settings, as a click on their expander does."""
    at.session_state[GALLERY_SETTINGS_OPEN] = True
    return at.run()


def test_gallery_settings_are_folded_until_opened(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(APP, project, monkeypatch, method="Grad-CAM++", sort="loss_desc")
    assert not at.exception
    keys = {w.key for w in at.sidebar.selectbox} | {w.key for w in at.sidebar.slider}
    assert "url:method" not in keys and "url:opacity" not in keys  # not built while folded
    summary = " ".join(c.value for c in at.sidebar.caption)
    assert "Grad-CAM++ at layer" in summary and "24 per page" in summary  # what is in use, said
    open_gallery_settings(at)
    assert at.sidebar.selectbox(key="url:method").value == "Grad-CAM++"  # the URL's choice
    assert at.sidebar.selectbox(key="url:sort").value == "loss_desc"
    assert at.sidebar.slider(key="url:opacity").value == pytest.approx(0.5)


def test_sidebar_settings_change_the_gallery_and_the_url(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    at = open_gallery_settings(run(APP, project, monkeypatch, cell="9,9"))
    assert "Grad-CAM · predicted 9" in _card_captions(at)
    at.sidebar.selectbox(key="url:method").set_value("Grad-CAM++").run()
    at.sidebar.selectbox(key="url:sort").set_value("loss_desc").run()
    assert not at.exception
    assert at.query_params["method"] in (["Grad-CAM++"], "Grad-CAM++")
    assert "Grad-CAM++ · predicted 9" in _card_captions(at)
    rows = sort_rows(cell_rows(result.predictions, 9, 9), "loss", ascending=False)
    assert card_paths(at) == list(page_rows(rows, 1, 24)["path"])


def test_first_pages_are_warmed_once_the_predictions_are_ready(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Opening the app (no cell selected, so no map asked for) warms page 1 of every cell."""
    result = expected(project)
    pages = first_pages(result.predictions, "confidence", False, 24, resources.WARM_UP_IMAGES)
    assert len(pages) == len(result.predictions.groupby(["true", "pred"]))  # every cell
    at = run(APP, project, monkeypatch)
    assert not at.exception
    # the maps come from the result (made in the evaluation): warming encodes every panel
    thread = resources.warm_up(str(project), "digits-cnn", "digits-test", result.fingerprint)
    assert thread is not None
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert len(resources.panel_cache()) >= sum(len(rows) for rows in pages)


def _no_image():  # type: ignore[no-untyped-def]
    raise LookupError("not warmed: the image had to be loaded")


def _not_computed(images, classes):  # type: ignore[no-untyped-def]
    raise LookupError("not warmed: maps had to be computed")


def test_a_model_without_a_spatial_layer_still_shows_its_matrix_and_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from torch import nn

    (tmp_path / "flat_model.py").write_text(
        "from torch import nn\n\n\ndef build(num_classes=10):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, num_classes))\n"
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    torch.save(model.state_dict(), tmp_path / "flat.pt")
    config = write_config(tmp_path)
    text = config.read_text().replace(
        "[[datasets]]",
        '[[models]]\nname = "flat"\nweights = "flat.pt"\nfactory = "flat_model:build"\n'
        "input_size = [32, 32]\nchannels = 1\n\n[[datasets]]",
        1,
    )
    config.write_text(text)
    result = expected(config, model="flat")
    true, pred = map(int, result.predictions.iloc[0][["true", "pred"]])
    at = run(APP, config, monkeypatch, model="flat", cell=f"{true},{pred}")
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "no module with a spatial" in warnings  # says why there are no maps
    rows = sort_rows(cell_rows(result.predictions, true, pred), "confidence", ascending=False)
    assert card_paths(at) == list(page_rows(rows, 1, 24)["path"])  # the images are there
    open_gallery_settings(at)
    at.sidebar.selectbox(key="url:method").set_value("Saliency").run()  # needs no layer
    assert not at.exception and not at.warning
    assert f"Saliency · predicted {result.classes[pred]}" in _card_captions(at)


# --- malformed input from the URL and the widgets: a message or a fallback, never a traceback


def _assert_no_traceback(at: AppTest) -> None:
    """No exception element, with ``client.showErrorDetails`` at its default (so one would
    be shown in full)."""
    assert st.get_option("client.showErrorDetails") == "full"
    assert not at.exception, [e.value for e in at.exception]


BAD_CELLS = ["a,b,c", "1,2,3", "-1,0", "3", ",", "99,1", "3,99999999999999999999999", "💥,1"]
BAD_VIEW = [  # with a valid cell: the cell's first page at the defaults
    {"page": "-3"},
    {"page": "0"},
    {"page": "99999999999999999999999"},
    {"page": "1e3"},
    {"page": "abc"},
    {"page": "²"},
    {"model": "nope"},
    {"model": "../../etc/passwd\x00"},
    {"method": "Grad-CAM; drop"},
    {"layer": "no.such.layer"},
    {"layer": "\u202e💥" * 500},
    {"sort": "bogus"},
    {"opacity": "nan"},
    {"opacity": "inf"},
    {"opacity": "-0.5"},
    {"page_size": "7"},
    {"page_size": "-24"},
    {"color": "<script>"},
    {"top": "-5"},
]


@pytest.mark.parametrize("cell", BAD_CELLS)
def test_a_malformed_cell_shows_the_matrix_and_the_invitation(
    project: Path, monkeypatch: pytest.MonkeyPatch, cell: str
) -> None:
    at = run(APP, project, monkeypatch, cell=cell, page="2")
    _assert_no_traceback(at)
    assert any("Accuracy" in m.label for m in at.metric)
    assert any("Click any cell" in i.value for i in at.info) and not at.subheader


@pytest.mark.parametrize(
    "params", BAD_VIEW, ids=lambda p: f"{next(iter(p))}={next(iter(p.values()))[:16]!r}"
)
def test_malformed_view_values_fall_back_to_the_defaults(
    project: Path, monkeypatch: pytest.MonkeyPatch, params: dict[str, str]
) -> None:
    result = expected(project)
    at = run(APP, project, monkeypatch, cell="9,9", **params)
    _assert_no_traceback(at)
    rows = sort_rows(cell_rows(result.predictions, 9, 9), "confidence", ascending=False)
    assert any(f"true *9* → predicted *9*: {len(rows)} images" in s.value for s in at.subheader)
    assert card_paths(at) == list(page_rows(rows, 1, 24)["path"])
    assert "Grad-CAM · predicted 9" in _card_captions(at)
    assert at.selectbox(key="url:model").value == "digits-cnn"


def test_an_unknown_dataset_falls_back_to_the_model_s_first(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = run(APP, project, monkeypatch, cell="9,9", dataset="nope\u202e")
    _assert_no_traceback(at)
    assert at.query_params["dataset"] in (["digits-test"], "digits-test")  # the URL is fixed
    assert "cell" not in at.query_params  # a cell of another dataset means nothing here
    assert any("Click any cell" in i.value for i in at.info)


def test_a_junk_tag_filter_is_a_filter_with_no_images(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    junk = "\u202e<b>💥</b>\x00"
    at = run(APP, project, monkeypatch, cell="9,9", tag=junk)
    _assert_no_traceback(at)
    assert any("No images in this cell" in i.value for i in at.info)
    assert not card_paths(at)


def test_widgets_at_their_limits_never_show_a_traceback(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = expected(project)
    rows = sort_rows(cell_rows(result.predictions, 9, 9), "confidence", ascending=False)
    at = run(APP, project, monkeypatch, cell="9,9", page="99")  # past the end: the last page
    _assert_no_traceback(at)
    last = (len(rows) + 23) // 24
    assert at.number_input(key="url:page").value == last
    assert card_paths(at) == list(page_rows(rows, last, 24)["path"])
    at.number_input(key="url:page").set_value(1).run()
    open_gallery_settings(at)
    at.sidebar.selectbox(key="url:page_size").set_value(96).run()
    at.sidebar.slider(key="url:opacity").set_value(0.0).run()
    at.sidebar.selectbox(key="url:layer").set_value("0").run()  # the first conv layer
    at.sidebar.text_input(key=AUTHOR_KEY).set_value("\u202e💥" * 20).run()
    _assert_no_traceback(at)
    assert card_paths(at) == list(rows["path"][:96])
    at.sidebar.selectbox(key="url:method").set_value("CAM").run()
    at.sidebar.selectbox(key="url:dataset").set_value("digits-even").run()
    _assert_no_traceback(at)
    assert "cell" not in at.query_params


def _cards(at: AppTest) -> dict[str, tuple[int, str]]:
    """Each card's file name: its number of images and its problem message ('' if none)."""
    out = {}
    for h in at.html:
        for card in re.findall(r'class="cam-card".*?(?=class="cam-card"|$)', h.value, re.S):
            path = html.unescape(re.search(r"<strong>(.*?)</strong>", card).group(1))  # type: ignore[union-attr]
            problem = re.search(r'class="cam-card-problem"[^>]*>(.*?)</p>', card)
            out[path] = (card.count("<img "), html.unescape(problem.group(1)) if problem else "")
    return out


def test_a_card_whose_file_broke_after_evaluation_fails_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path)
    source = ROOT / "sample_models" / "digits" / "test"
    copy = tmp_path / "digits"
    shutil.copytree(source, copy)
    config.write_text(config.read_text().replace(source.as_posix(), copy.as_posix(), 1))
    result = expected(config)
    at = run(APP, config, monkeypatch)  # the server evaluates; then files change under it
    _assert_no_traceback(at)
    rows = sort_rows(cell_rows(result.predictions, 9, 9), "confidence", ascending=False)
    paths = list(page_rows(rows, 1, 24)["path"])
    gone, broken = paths[1], paths[3]
    (copy / gone).unlink()
    (copy / broken).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    for method in ("Grad-CAM++", "Grad-CAM"):  # maps to compute, and maps warmed at start-up
        at.query_params["cell"] = "9,9"
        at.query_params["method"] = method
        at.run()
        _assert_no_traceback(at)
        cards = _cards(at)
        assert list(cards) == paths  # every card is there, in order
        assert cards[gone][0] == 0 and "cannot be shown" in cards[gone][1]
        assert "file not found" in cards[gone][1]
        assert cards[broken][0] == 0 and "cannot be shown" in cards[broken][1]
        assert all(cards[p] == (3, "") for p in paths if p not in (gone, broken))


def test_stored_results_open_without_the_model(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A fresh server draws the matrix, and a cell's stored maps, from stored results without
    the model; a model that cannot be loaded then costs only the maps that need it."""
    import core.data.models
    from core.errors import ModelLoadError

    config = write_config(tmp_path)
    stored = expected(config)  # evaluated and stored, as by an earlier server or the CLI

    def refuse(spec):  # type: ignore[no-untyped-def]
        raise ModelLoadError(f"{spec.name}: weights unreadable today")

    monkeypatch.setattr(core.data.models, "load_model", refuse)
    at = run(APP, config, monkeypatch)
    assert not at.exception
    right = (stored.predictions["true"] == stored.predictions["pred"]).mean()
    assert next(m for m in at.metric if m.label == "Accuracy").value == f"{right:.2%}"
    for _ in range(50):  # the model loads (and here fails) on a thread: the page says so
        if any("weights unreadable today" in e.value for e in at.error):
            break
        time.sleep(0.1)
        at.run()
    assert any("weights unreadable today" in e.value for e in at.error)
    at.query_params["cell"] = "3,9"  # the stored maps need no model: the cards are drawn
    at.run()
    assert not at.exception
    assert len(_cards(at)) == int(
        ((stored.predictions["true"] == 3) & (stored.predictions["pred"] == 9)).sum()
    )
    assert all(n == 3 for n, _ in _cards(at).values())
    at.query_params["method"] = "Grad-CAM++"  # maps to compute need the model: it says so, alone
    at.run()
    assert not at.exception
    assert any("no maps can be shown" in e.value for e in at.error)
    assert next(m for m in at.metric if m.label == "Accuracy").value == f"{right:.2%}"


def test_the_dashboard_modules_import_no_torch() -> None:
    """The matrix of stored results needs neither torch nor SciPy, the Map's PCA layout no UMAP:
    the dashboard's modules import them when a cell's maps, a comparison or a UMAP layout are
    asked for (a fresh server's first page waited ~7 s for these imports)."""
    import subprocess
    import sys

    heavy = ("torch", "torchvision", "timm", "scipy", "sklearn", "cleanlab", "umap", "numba")
    code = (  # every module of dashboard.state and dashboard.parts (new ones included)
        "import importlib, pkgutil, sys, dashboard.parts, dashboard.state\n"
        "for package in (dashboard.state, dashboard.parts):\n"
        "    for found in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(found.name)\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_matrix_does_not_wait_for_a_long_label_quality_pass(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Past ``WAIT_FOR_QUALITY_UP_TO`` probabilities the matrix is drawn while suspected label
    errors are still being found, says so, and is marked on the run after they are."""
    import threading
    import time

    from dashboard.state import analyses

    release = threading.Event()
    real = analyses.result_label_quality

    def slow(result):  # type: ignore[no-untyped-def]
        assert release.wait(120)
        return real(result)

    monkeypatch.setattr(analyses, "result_label_quality", slow)
    monkeypatch.setattr(analyses, "WAIT_FOR_QUALITY_UP_TO", 0)
    analyses._quality_pass.clear()
    try:
        at = run(APP, project, monkeypatch)
        assert not at.exception
        assert "flagged" not in at.session_state["chart"].data
        assert any("finding suspected label errors" in c.value for c in at.caption)
        release.set()
        for _ in range(600):  # until the pass is done (the page's 2 s poll, done by hand)
            at.run()
            if "flagged" in at.session_state["chart"].data:
                break
            time.sleep(0.1)
        assert not at.exception
        assert "flagged" in at.session_state["chart"].data
        assert not any("finding suspected label errors" in c.value for c in at.caption)
    finally:
        release.set()
        analyses._quality_pass.clear()

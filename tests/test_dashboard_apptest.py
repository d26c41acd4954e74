"""Page logic with Streamlit's AppTest, driven through query parameters (no browser)."""

from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import cell_rows
from core.gallery import compared_classes, first_pages, page_rows, sort_rows
from core.map_cache import MapRequest
from dashboard import resources
from tests.projects import ROOT, expected, write_config

APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_config(tmp_path_factory.mktemp("apptest"))
    expected(path)  # fill the disk cache once
    return path


def run(project: Path, monkeypatch: pytest.MonkeyPatch, **params: str) -> AppTest:
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    at = AppTest.from_file(APP, default_timeout=120)
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def _card_paths(at: AppTest) -> list[str]:
    """File names of the gallery cards, in order (the page's cards are one ``st.html``)."""
    return [
        html.unescape(name)
        for h in at.html
        for name in re.findall(r'class="cam-card".*?<strong>(.*?)</strong>', h.value)
    ]


def test_without_a_cell_the_page_invites_a_click(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(project, monkeypatch)
    assert not at.exception
    assert any("Click any cell" in i.value for i in at.info)
    assert at.query_params.get("cell") is None


def test_cell_and_page_from_the_url(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    rows = sort_rows(cell_rows(result.predictions, 9, 9), "loss", ascending=False)
    at = run(project, monkeypatch, cell="9,9", sort="loss_desc", page="2", page_size="12")
    assert not at.exception
    assert any(f"true *9* → predicted *9*: {len(rows)} images" in s.value for s in at.subheader)
    assert _card_paths(at) == list(page_rows(rows, 2, 12)["path"])


def test_invalid_url_values_fall_back(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(project, monkeypatch, model="../../etc/passwd", cell="99,1", page="abc")
    assert not at.exception
    assert at.selectbox(key="url:model").value == "digits-cnn"
    assert any("Click any cell" in i.value for i in at.info)


def test_changing_dataset_updates_url_and_clears_cell(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(project, monkeypatch, cell="3,9", page="2")
    at.selectbox(key="url:dataset").set_value("digits-even").run()
    assert not at.exception
    assert (
        at.query_params["dataset"] == ["digits-even"] or at.query_params["dataset"] == "digits-even"
    )
    assert "cell" not in at.query_params and "page" not in at.query_params
    even = expected(project, dataset="digits-even")
    assert any(f"{len(even.predictions)} images" in c.value for c in at.caption)


def test_broken_model_entry_shows_error_and_others_stay_usable(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(project, monkeypatch, model="broken")
    assert not at.exception
    assert any("checkpoint not found" in e.value for e in at.error)
    at.selectbox(key="url:model").set_value("digits-cnn").run()
    assert not at.exception and not at.error
    assert any("Accuracy" in m.label for m in at.metric)


def test_bad_config_file_shows_error_panel(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "config.toml"
    bad.write_text("[[models]\nname = ")
    at = run(bad, monkeypatch)
    assert not at.exception
    assert any("not valid TOML" in e.value for e in at.error)


def test_class_count_mismatch_names_both_numbers(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path)
    text = config.read_text().replace(
        'classes = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]',
        'classes = ["0", "2", "4", "6", "8"]',
    )
    config.write_text(text)
    at = run(config, monkeypatch, dataset="digits-even")
    assert not at.exception
    message = " ".join(e.value for e in at.error)
    assert "10 classes" in message and "has 5" in message


def _card_captions(at: AppTest) -> list[str]:
    return [
        html.unescape(c) for h in at.html for c in re.findall(r"<figcaption[^>]*>(.*?)<", h.value)
    ]


def test_sidebar_settings_change_the_gallery_and_the_url(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    at = run(project, monkeypatch, cell="9,9")
    assert "Grad-CAM · predicted 9" in _card_captions(at)
    at.sidebar.selectbox(key="url:method").set_value("Grad-CAM++").run()
    at.sidebar.selectbox(key="url:sort").set_value("loss_desc").run()
    assert not at.exception
    assert at.query_params["method"] in (["Grad-CAM++"], "Grad-CAM++")
    assert "Grad-CAM++ · predicted 9" in _card_captions(at)
    rows = sort_rows(cell_rows(result.predictions, 9, 9), "loss", ascending=False)
    assert _card_paths(at) == list(page_rows(rows, 1, 24)["path"])


def test_first_pages_are_warmed_once_the_predictions_are_ready(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Opening the app (no cell selected, so no map asked for) warms page 1 of every cell."""
    result = expected(project)
    pages = first_pages(result.predictions, "confidence", False, 24, resources.WARM_UP_IMAGES)
    assert len(pages) == len(result.predictions.groupby(["true", "pred"]))  # every cell
    at = run(project, monkeypatch)
    assert not at.exception
    scope = (result.fingerprint, "Grad-CAM", resources.layers(str(project), "digits-cnn")[1])
    requests = [
        [MapRequest(row["path"], compared_classes(row), _no_image) for _, row in rows.iterrows()]
        for rows in pages
    ]
    deadline = time.monotonic() + 60
    while True:  # the app's warm-up thread fills the server-wide cache in the background
        try:
            for page in requests:  # what each cell's first click asks for is all there
                resources.map_cache().get_many(scope, page, _not_computed)
            break
        except LookupError:
            assert time.monotonic() < deadline, "page 1 of some cells was not warmed in 60 s"
            time.sleep(0.2)


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
    at = run(config, monkeypatch, model="flat", cell=f"{true},{pred}")
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "no module with a spatial" in warnings  # says why there are no maps
    rows = sort_rows(cell_rows(result.predictions, true, pred), "confidence", ascending=False)
    assert _card_paths(at) == list(page_rows(rows, 1, 24)["path"])  # the images are there
    at.sidebar.selectbox(key="url:method").set_value("Saliency").run()  # needs no layer
    assert not at.exception and not at.warning
    assert f"Saliency · predicted {result.classes[pred]}" in _card_captions(at)

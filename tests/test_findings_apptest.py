"""Findings in the dashboard with AppTest, driven by the URL and the session: pinning a cell, a
pattern, a slice and an image; the Findings page's filters, editing with history, a refused
save that keeps the text, bad parameters, read-only servers; the relabelling exports; and the
corrected labels on the Error-analysis page."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from core import cell_rows, load_config, result_patterns
from core.analysis.gallery import sort_rows
from core.corrections import CorrectionsStore
from core.data.datasets import dataset_key
from core.findings import FindingSaveError, FindingsStore
from core.notes import NotesStore
from tests.apptest import VIEWS, card_paths, run
from tests.projects import expected, region_around_median, write_config

ANALYSIS = str(VIEWS / "analysis.py")
FINDINGS = str(VIEWS / "findings.py")
PATTERNS = str(VIEWS / "patterns.py")
LABELS = str(VIEWS / "labels.py")
DIGITS = {"model": "digits-cnn", "dataset": "digits-test"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_config(tmp_path_factory.mktemp("findings-apptest"))
    expected(path)  # fill the disk cache once
    return path


@pytest.fixture
def project(shared: Path, tmp_path: Path) -> Path:
    """The shared project with a notes database of its own (the server caches are per config)."""
    text = shared.read_text().replace(
        'cache_dir = "cache"', f'cache_dir = "{(shared.parent / "cache").as_posix()}"'
    )
    path = tmp_path / "config.toml"
    path.write_text(f'notes_db = "{(tmp_path / "notes.sqlite").as_posix()}"\n{text}')
    return path


def _store(config: Path, read_only: bool = False) -> tuple[FindingsStore, str]:
    project = load_config(config)
    notes = NotesStore(project.notes_db, read_only=read_only)
    return FindingsStore(notes), dataset_key(project.dataset("digits-test"))


def _popovers(at: AppTest) -> dict[str, object]:
    return {p.proto.popover.label: p.proto.popover for p in at.get("popover")}


def _pin(at: AppTest, key: str, text: str = "", owner: str = "") -> AppTest:
    """Open the pin popover ``key``, type, and press Pin."""
    at.session_state[key] = True
    at.run()
    assert not at.exception
    if text:
        at.text_area(key=f"{key}:text").input(text)
    if owner:
        at.text_input(key=f"{key}:owner").input(owner)
    at.button(key=f"FormSubmitter:{key}:form-Pin").click()
    return at.run()


def _cell(result, true: int, pred: int) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return sort_rows(cell_rows(result.predictions, true, pred), "confidence", False)


def test_pinning_a_cell_keeps_its_filter_link_and_images(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    rows = _cell(result, 3, 3)
    assert len(rows) > 50  # more than a finding holds
    at = AppTest.from_file(ANALYSIS, default_timeout=120)
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    for name, value in {**DIGITS, "cell": "3,3"}.items():
        at.query_params[name] = value
    at.session_state["author"] = "ana"
    at.run()
    assert not at.exception
    _pin(at, "pin:cell", "the model is sure of every 3", "bob")
    assert not at.exception
    assert any("Pinned as finding #1" in s.value for s in at.success)
    store, key = _store(project)
    (finding,) = store.findings(key)
    assert (finding.kind, finding.author, finding.owner, finding.status) == (
        "cell",
        "ana",
        "bob",
        "open",
    )
    assert finding.title == "true 3 → predicted 3"
    assert finding.text == "the model is sure of every 3"
    assert list(finding.paths) == list(rows["path"][:50])  # as the gallery orders them
    assert finding.more == len(rows) - 50
    assert finding.context["cell"] == [3, 3] and finding.context["images"] == len(rows)
    assert finding.link.startswith("./?") and "cell=3%2C3" in finding.link
    assert finding.model == "digits-cnn"


def test_a_cell_pin_carries_its_slice(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    at = AppTest.from_file(ANALYSIS, default_timeout=120)
    for name, value in {**DIGITS, "where": "class:3"}.items():
        at.query_params[name] = value
    at.session_state["author"] = "ana"
    at.run()
    assert not at.exception
    _pin(at, "pin:slice")
    store, key = _store(project)
    (finding,) = store.findings(key)
    threes = np.flatnonzero(result.true == 3)
    wrong = result.true[threes] != result.pred[threes]
    assert finding.kind == "slice" and finding.context["where"] == "class:3"
    assert finding.images == len(threes) and finding.context["errors"] == int(wrong.sum())
    paths = result.manifest.column("path").to_pylist()
    first = [paths[int(result.index[i])] for i in threes[wrong]]  # its errors come first
    assert list(finding.paths[: len(first)]) == first
    assert "where=class%3A3" in finding.link


def test_pinning_a_pattern_keeps_its_images_and_link(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    found = result_patterns(result)
    first = found[0]
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    at = AppTest.from_file(PATTERNS, default_timeout=120)
    for name, value in {**DIGITS, "flagged": "0"}.items():
        at.query_params[name] = value
    at.session_state["author"] = "ana"
    at.run()
    assert not at.exception
    assert "Pin as finding" in _popovers(at)
    _pin(at, "pin:grid:1", "looks at the top stroke")
    store, key = _store(project)
    (finding,) = store.findings(key)
    paths = result.manifest.column("path").to_pylist()
    assert finding.kind == "pattern"
    assert list(finding.paths) == [paths[int(r)] for r in first.rows[:50]]
    assert finding.images == first.images
    assert finding.context["pattern"] == first.cluster and finding.context["rank"] == 1
    assert f"cell={first.true}%2C{first.pred}" in finding.link
    assert f"pattern={first.cluster}" in finding.link


def test_the_pin_says_why_it_is_disabled(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    at = run(ANALYSIS, project, monkeypatch, **DIGITS, cell="3,3")
    assert not at.exception
    pin = _popovers(at)["Pin as finding"]
    assert pin.disabled and "Type your name in the sidebar" in pin.help
    monkeypatch.setenv("CAM_DASHBOARD_READ_ONLY", "1")
    at = run(ANALYSIS, project, monkeypatch, **DIGITS, cell="3,3")
    pin = _popovers(at)["Pin as finding"]
    assert pin.disabled and "Read-only server" in pin.help


def test_a_failed_pin_keeps_the_text_and_says_why(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def refuse(self, dataset, kind, title, author, **fields):  # type: ignore[no-untyped-def]
        draft = {"title": title, **fields}
        raise FindingSaveError("the finding was not saved: database is locked", draft)

    real = FindingsStore.create
    monkeypatch.setattr(FindingsStore, "create", refuse)
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    at = AppTest.from_file(ANALYSIS, default_timeout=120)
    for name, value in {**DIGITS, "cell": "3,3"}.items():
        at.query_params[name] = value
    at.session_state["author"] = "ana"
    at.run()
    _pin(at, "pin:cell", "kept across a failure", "bob")
    assert not at.exception
    assert any("database is locked" in e.value for e in at.error)
    assert at.text_area(key="pin:cell:text").value == "kept across a failure"
    at.session_state["pin:cell"] = False  # closed and opened again: the draft is back
    at.run()
    at.session_state["pin:cell"] = True
    at.run()
    assert at.text_area(key="pin:cell:text").value == "kept across a failure"
    assert at.text_input(key="pin:cell:owner").value == "bob"
    monkeypatch.setattr(FindingsStore, "create", real)
    at.button(key="FormSubmitter:pin:cell:form-Pin").click().run()
    store, key = _store(project)
    (finding,) = store.findings(key)
    assert (finding.text, finding.owner) == ("kept across a failure", "bob")


def test_pinning_an_image_from_the_inspect_dialog(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    row = _cell(result, 3, 3).iloc[0]
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    at = AppTest.from_file(ANALYSIS, default_timeout=120)
    for name, value in {**DIGITS, "cell": "3,3"}.items():
        at.query_params[name] = value
    at.session_state["author"] = "ana"
    at.session_state["inspect-path"] = row["path"]  # as the picker leaves it: the dialog opens
    at.session_state["pin:image"] = True
    at.run()
    assert not at.exception
    assert "Pin image" in _popovers(at)
    at.text_area(key="pin:image:text").input("a 3 drawn like a 5")
    at.button(key="FormSubmitter:pin:image:form-Pin").click().run()
    assert not at.exception
    store, key = _store(project)
    (finding,) = store.findings(key)
    assert (finding.kind, finding.paths, finding.images) == ("image", (row["path"],), 1)
    assert finding.context["true"] == "3" and finding.text == "a 3 drawn like a 5"
    assert "cell=3%2C3" in finding.link


def test_pinning_a_map_selection(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from core.analysis.embedding_map import result_layout

    result = expected(project)
    xy = result_layout(result).xy  # computed once, stored beside the result
    region = region_around_median(xy)
    inside = np.flatnonzero(region.contains(xy))
    assert len(inside) >= 30
    rows = result.predictions.iloc[inside]
    rows = rows.iloc[np.lexsort((-rows["confidence"].to_numpy(), rows["true"] == rows["pred"]))]
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    at = AppTest.from_file(str(VIEWS / "map.py"), default_timeout=120)
    for name, value in {**DIGITS, "sel": region.to_param()}.items():
        at.query_params[name] = value
    at.session_state["author"] = "ana"
    at.run()
    assert not at.exception
    _pin(at, "pin:map")
    assert not at.exception
    store, key = _store(project)
    (finding,) = store.findings(key)
    assert finding.kind == "map selection" and finding.images == len(inside)
    assert list(finding.paths) == list(rows["path"][:50])  # errors first, as listed
    assert finding.context["selection"] == region.to_param()
    assert "sel=box" in finding.link


def _seed(config: Path) -> list[int]:
    """Four findings: open/ana, confirmed/bob, confirmed/unassigned, fixed/bob."""
    store, key = _store(config)
    made = [
        store.create(key, "cell", "first", "ana", owner="ana"),
        store.create(key, "pattern", "second", "ana", status="confirmed", owner="bob"),
        store.create(key, "slice", "third", "cy", status="confirmed"),
        store.create(key, "image", "fourth", "cy", status="fixed", owner="bob"),
    ]
    return [f.id for f in made]


def _listed(at: AppTest) -> list[str]:
    table = next(d.value for d in at.dataframe if "title" in d.value.columns)
    return list(table["title"])


@pytest.mark.parametrize(
    ("params", "titles"),
    [
        ({}, ["fourth", "third", "second", "first"]),
        ({"status": "confirmed"}, ["third", "second"]),
        ({"owner": "bob"}, ["fourth", "second"]),
        ({"status": "confirmed", "owner": "bob"}, ["second"]),
        ({"owner": "-"}, ["third"]),
        ({"status": "nonsense"}, ["fourth", "third", "second", "first"]),  # ignored
    ],
)
def test_the_findings_page_filters_by_status_and_owner(  # type: ignore[no-untyped-def]
    project: Path, monkeypatch, params: dict[str, str], titles: list[str]
) -> None:
    _seed(project)
    at = run(FINDINGS, project, monkeypatch, **DIGITS, **params)
    assert not at.exception
    assert _listed(at) == titles
    assert any(c.value.startswith(f"{len(titles)} of 4 findings") for c in at.caption)


@pytest.mark.parametrize("finding", ["abc", "-3", "999", "1" * 40])
def test_a_bad_finding_in_the_url_opens_none(project: Path, monkeypatch, finding: str) -> None:  # type: ignore[no-untyped-def]
    _seed(project)
    at = run(FINDINGS, project, monkeypatch, **DIGITS, finding=finding)
    assert not at.exception
    assert len(_listed(at)) == 4
    assert not at.subheader  # nothing opened
    if finding == "999":
        assert any("There is no finding 999" in i.value for i in at.info)


def test_opening_and_editing_a_finding_keeps_its_history(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    rows = _cell(result, 3, 3)
    store, key = _store(project)
    pinned = store.create(
        key,
        "cell",
        "threes",
        "ana",
        model="digits-cnn",
        link="./?cell=3%2C3",
        paths=list(rows["path"][:5]),
        total=len(rows),
    )
    monkeypatch.setenv("CAM_DASHBOARD_CONFIG", str(project))
    at = AppTest.from_file(FINDINGS, default_timeout=120)
    for name, value in {**DIGITS, "finding": str(pinned.id)}.items():
        at.query_params[name] = value
    at.session_state["author"] = "cy"
    at.run()
    assert not at.exception
    assert at.subheader[0].value == f"#{pinned.id} · threes"
    assert any("(./?cell=3%2C3)" in m.value for m in at.markdown)  # the deep link
    assert card_paths(at) == list(rows["path"][:5])  # its images, as cards with both maps
    assert all(len(re.findall(r"<img ", h.value)) == 15 for h in at.html if "cam-card" in h.value)
    labels = [d.label for d in at.get("download_button")]
    assert {"Download report", "Label Studio tasks (JSON)", "Labelling config (XML)"} <= set(labels)
    form = f"finding:{pinned.id}"
    at.selectbox(key=f"{form}:status").select("confirmed")
    at.text_input(key=f"{form}:owner").input("dee")
    at.button(key=f"FormSubmitter:{form}:form-Save changes").click().run()
    assert not at.exception
    now = store.get(pinned.id)
    assert (now.status, now.owner, now.editor, now.version) == ("confirmed", "dee", "cy", 2)
    history = at.dataframe[-1].value
    assert list(history["version"]) == [1, 2]
    assert "status: open → confirmed" in history["changes"].iloc[1]

    # someone else saves meanwhile: this save is refused, the typed text stays
    store.update(pinned.id, "eve", text="eve's words")
    at.text_area(key=f"{form}:text").input("my words")
    at.button(key=f"FormSubmitter:{form}:form-Save changes").click().run()
    assert not at.exception
    assert any("was changed by eve" in e.value for e in at.error)
    assert at.text_area(key=f"{form}:text").value == "my words"
    assert store.get(pinned.id).text == "eve's words"
    at.button(key=f"{form}:reload").click().run()
    assert at.text_area(key=f"{form}:text").value == "eve's words"


def test_a_read_only_server_shows_findings_without_editing(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ids = _seed(project)
    monkeypatch.setenv("CAM_DASHBOARD_READ_ONLY", "1")
    at = run(FINDINGS, project, monkeypatch, **DIGITS, finding=str(ids[1]))
    assert not at.exception
    assert at.subheader[0].value == f"#{ids[1]} · second"
    assert not at.get("form")
    assert any("Read-only server" in c.value for c in at.caption)
    assert any("confirmed" in m.value and "bob" in m.value for m in at.markdown)


def test_the_label_errors_page_exports_for_relabelling(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """On the planted digits (eight wrong labels), the flagged images go to Label Studio."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sample_models"))
    from plant_labels import plant

    from core.labelstudio import tasks_for
    from dashboard.parts import relabel

    config = plant(tmp_path, "digits-test", count=8)
    at = run(LABELS, config, monkeypatch)
    assert not at.exception
    labels = [d.label for d in at.get("download_button")]
    assert "Label Studio tasks (JSON)" in labels and "Labelling config (XML)" in labels
    popover = next(p for p in at.get("popover") if "relabelling" in p.proto.popover.label)
    flagged = int(re.search(r"\((\d+)\)", popover.proto.popover.label).group(1))
    assert flagged >= 7  # cleanlab flags 7 of the 8 planted
    project = load_config(config)
    model, dataset = project.models[0].name, project.datasets[0].name
    result = expected(config, model, dataset)
    some = list(result.predictions["path"].astype(str)[:3])
    tasks = relabel._json(lambda: relabel._tasks(result, lambda: some, model, None, "/d"))
    made = json.loads(tasks)
    assert made == tasks_for(result, some, model, lambda p: f"/data/local-files/?d=d/{p}")


def test_corrected_labels_change_the_matrix_metrics_and_gallery(project: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    result = expected(project)
    rows = _cell(result, 3, 3)
    moved = list(rows["path"][:3])  # three 3s relabelled 5
    notes = NotesStore(load_config(project).notes_db)
    key = dataset_key(load_config(project).dataset("digits-test"))
    CorrectionsStore(notes).add(key, [(p, "3", "5") for p in moved], "ana", "test")
    paths = result.predictions["path"].astype(str)
    true = np.where(paths.isin(moved), 5, result.true)
    want = pd.crosstab(pd.Series(true), pd.Series(result.pred)).reindex(
        index=range(10), columns=range(10), fill_value=0
    )
    at = run(ANALYSIS, project, monkeypatch, **DIGITS, labels="corrected", cell="5,3")
    assert not at.exception
    assert any("3 of 540 images have a label other than" in i.value for i in at.info)
    data = pd.DataFrame(at.session_state["chart"].data)
    got = data.pivot(index="t", columns="p", values="count").to_numpy()
    assert (got == want.to_numpy()).all()
    accuracy = float(np.mean(true == result.pred))
    assert next(m for m in at.metric if m.label == "Accuracy").value == f"{accuracy:.2%}"
    assert sorted(card_paths(at)) == sorted(moved)  # the cell true 5 → predicted 3
    assert at.toggle(key="labels-corrected").value
    at.toggle(key="labels-corrected").set_value(False).run()  # back to the dataset's labels
    assert "labels" not in at.query_params
    assert not any("have a label other than" in i.value for i in at.info)

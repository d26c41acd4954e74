"""The relabelling round trip with Label Studio's documented formats (fixtures written from its
docs), on the digits sample with planted wrong labels: export the top 20 label issues, correct
them in a Label Studio export, import it, and the corrected matrix is pandas' count on the
corrected labels. Bad tasks are listed and skipped; the dataset's files never change."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.analysis.metrics import confusion_matrix
from core.cli import main
from core.cli.common import results as evaluated
from core.config import load_config
from core.corrections import CorrectionsStore, corrected_true, manifest_rows
from core.data.datasets import dataset_key
from core.labelstudio import Answer, image_url, labelling_config, read_answers, resolve, task
from core.notes import NotesStore

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "labelstudio"
sys.path.insert(0, str(REPO / "sample_models"))
from plant_labels import plant  # noqa: E402

PETS = ["cat/1.png", "dog/2.png", "bird/3.png", "cat/4.png", "cat/5.png", "dog/7.png"]


# ------------------------------------------------------------------------ the formats


def test_a_task_has_the_documented_import_shape() -> None:
    (documented,) = json.loads((FIXTURES / "tasks.json").read_text(encoding="utf-8"))
    url = image_url("cat/1.png", document_root="data/pets")
    ours = task("cat/1.png", "cat", "dog", 0.91, "pets-resnet", url)
    assert ours == documented


def test_the_labelling_config_is_the_documented_one_and_escapes_class_names() -> None:
    expected = ET.fromstring((FIXTURES / "config.xml").read_text(encoding="utf-8"))
    ours = ET.fromstring(labelling_config(["bird", "cat", "dog"]))
    assert ET.tostring(ours) == ET.tostring(expected)
    odd = ET.fromstring(labelling_config(['a "quoted" <class> & more', "b"]))
    assert [c.get("value") for c in odd.iter("Choice")] == ['a "quoted" <class> & more', "b"]


def test_image_urls() -> None:
    assert image_url("a b/c#1.png", "https://img.example/set/") == (
        "https://img.example/set/a%20b/c%231.png"
    )
    assert image_url("cat/1.png", document_root="/srv/data/pets") == (
        "/data/local-files/?d=srv/data/pets/cat/1.png"
    )


def test_a_label_studio_export_is_read_as_documented() -> None:
    answers, problems = read_answers(FIXTURES / "export.json")
    got = {a.ref: (a.path, a.label, a.author) for a in answers}
    assert got == {
        "task 1": ("cat/1.png", "dog", "10"),
        "task 2": ("dog/2.png", "bird", "bob@example.com"),  # latest not cancelled
        "task 3": ("", "cat", "10"),  # no meta: matched later by its URL
        "task 5": ("cat/5.png", "hamster", "10"),
        "task 6": ("fish/6.png", "cat", "10"),
    }
    why = {p.ref: p.reason for p in problems}
    assert set(why) == {"task 4", "task 7"}
    assert "cancelled" in why["task 4"] and "several" in why["task 7"]
    kept, unknown = resolve(answers, PETS, ["bird", "cat", "dog"])
    assert [(a.ref, a.path, a.label) for a in kept] == [
        ("task 1", "cat/1.png", "dog"),
        ("task 2", "dog/2.png", "bird"),
        ("task 3", "bird/3.png", "cat"),
    ]
    reasons = {p.ref: p.reason for p in unknown}
    assert "not a class" in reasons["task 5"] and "not an image" in reasons["task 6"]


def test_a_csv_of_labels_is_read_and_bad_lines_listed(tmp_path: Path) -> None:
    source = tmp_path / "labels.csv"
    source.write_text("path,label,extra\ncat/1.png,dog,x\n,cat,\ndog/2.png,,\n", encoding="utf-8")
    answers, problems = read_answers(source)
    assert answers == [Answer("line 2", "cat/1.png", "dog")]
    assert [p.ref for p in problems] == ["line 3", "line 4"]
    (tmp_path / "bad.csv").write_text("file,class\na,b\n", encoding="utf-8")
    with pytest.raises(Exception, match="path,label"):
        read_answers(tmp_path / "bad.csv")


# ------------------------------------------------------------------------ the round trip


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[str, str]]]:
    """The planted digits project and {path: (true label, planted label)}."""
    config = plant(tmp_path_factory.mktemp("relabel"), "digits-test", count=8)
    with (config.parent / "planted.csv").open(encoding="utf-8") as handle:
        rows = {r["path"]: (r["label"], r["planted"]) for r in csv.DictReader(handle)}
    return config, rows


def _export_of(tasks: list[dict], planted: dict[str, tuple[str, str]]) -> list[dict]:
    """A Label Studio JSON export of ``tasks`` as its docs show one: each task annotated by a
    labeller who gives a planted image its true label and confirms the others; a first,
    cancelled annotation says something else."""
    exported = []
    for number, item in enumerate(tasks, 1):
        path = item["meta"]["path"]
        answer = planted[path][0] if path in planted else item["meta"]["label"]
        exported.append(
            {
                "id": number,
                "data": item["data"],
                "meta": item["meta"],
                "predictions": item.get("predictions", []),
                "annotations": [
                    _annotation(number, "7", cancelled=True, when="2026-03-01T10:00:00Z"),
                    _annotation(number, answer, cancelled=False, when="2026-03-01T09:00:00Z"),
                ],
            }
        )
    return exported


def _annotation(task: int, label: str, cancelled: bool, when: str) -> dict:
    region = {"from_name": "label", "to_name": "image", "type": "choices"}
    return {
        "id": task * 10 + cancelled,
        "completed_by": {"id": 3, "email": "labeller@example.com"},
        "result": [{"id": f"r{task}", **region, "value": {"choices": [label]}}],
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": when,
        "updated_at": when,
        "task": task,
    }


def _digest(folder: Path) -> str:
    files = sorted(folder.rglob("*.png"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def test_round_trip_corrects_the_planted_labels(planted, tmp_path: Path, capsys) -> None:
    config_path, rows = planted
    config = load_config(config_path)
    spec = config.dataset()
    before = _digest(spec.root)
    manifest_before = (config_path.parent / "labels.csv").read_bytes()
    tasks_file = tmp_path / "tasks.json"
    argv = ["export-labels", "--config", str(config_path), "--label-issues", "--top", "20"]
    assert main([*argv, "--format", "labelstudio", "--out", str(tasks_file)]) == 0
    tasks = json.loads(tasks_file.read_text(encoding="utf-8"))
    result = evaluated(config, None, None)
    names = result.classes
    assert len(tasks) == 20
    exported = [t["meta"]["path"] for t in tasks]
    assert set(rows) <= set(exported)  # every planted label is among the 20 most suspect
    at = manifest_rows(result, exported)
    for item, row in zip(tasks, at, strict=True):
        assert item["data"]["image"].startswith("/data/local-files/?d=")
        assert item["data"]["image"].endswith(item["meta"]["path"])
        assert item["meta"]["label"] == names[int(result.manifest.column("label")[row].as_py())]
        (prediction,) = item["predictions"]
        assert prediction["model_version"] == "digits-cnn"
        assert prediction["score"] == pytest.approx(float(result.columns["confidence"][row]), 1e-5)
        (region,) = prediction["result"]
        assert (region["from_name"], region["to_name"], region["type"]) == (
            "label",
            "image",
            "choices",
        )
        assert region["value"] == {"choices": [names[int(result.columns["pred"][row])]]}
    labelling = ET.parse(tasks_file.with_name("tasks.config.xml")).getroot()
    assert [c.get("value") for c in labelling.iter("Choice")] == list(names)

    export = _export_of(tasks, rows)
    export.append({**export[0], "id": 900, "meta": {"path": "9/no_such.png", "label": "9"}})
    export.append({**export[1], "id": 901, "annotations": [_annotation(901, "ten", False, "x")]})
    export.append({**export[2], "id": 902, "annotations": []})
    export_file = tmp_path / "export.json"
    export_file.write_text(json.dumps(export), encoding="utf-8")
    capsys.readouterr()
    back = ["import-labels", "--config", str(config_path), "--from", str(export_file)]
    assert main([*back, "--author", "carol"]) == 0
    out = capsys.readouterr().out
    assert "stored 8 corrections" in out and "12 answers kept the current label" in out
    assert "3 skipped" in out
    for ref, why in (("task 900", "not an image"), ("task 901", "not a class"), ("task 902", "")):
        assert f"skipped {ref}" in out and why in out

    key = dataset_key(spec)
    store = CorrectionsStore(NotesStore(config.notes_db))
    history = store.history(key)
    assert {(c.path, c.old, c.new, c.author) for c in history} == {
        (path, wrong, true, "carol") for path, (true, wrong) in rows.items()
    }
    fixed = corrected_true(result, store.latest(key))
    assert fixed.count == len(rows) == 8 and fixed.ignored == 0

    # pandas' count on the corrected labels
    labels = pd.read_csv(config_path.parent / "labels.csv", dtype=str)
    labels["label"] = (
        labels["path"].map({p: t for p, (t, _) in rows.items()}).fillna(labels["label"])
    )
    preds = pd.DataFrame(
        {"path": result.predictions["path"].astype(str), "pred": np.asarray(names)[result.pred]}
    )
    joined = preds.merge(labels, on="path", how="left", validate="one_to_one")
    expected = pd.crosstab(joined["label"], joined["pred"]).reindex(
        index=list(names), columns=list(names), fill_value=0
    )
    table = pd.DataFrame({"true": fixed.true, "pred": result.pred})
    np.testing.assert_array_equal(confusion_matrix(table, len(names)), expected.to_numpy())
    before_matrix = confusion_matrix(pd.DataFrame({"true": result.true, "pred": result.pred}), 10)
    assert np.trace(expected.to_numpy()) - np.trace(before_matrix) == 8  # all now agree

    # importing again stores nothing new; the dataset's files never changed
    capsys.readouterr()
    assert main([*back, "--author", "carol"]) == 0
    assert "stored 0 corrections" in capsys.readouterr().out
    assert len(store.history(key)) == 8
    assert _digest(spec.root) == before
    assert (config_path.parent / "labels.csv").read_bytes() == manifest_before

    # the exported table gains the corrected labels
    table_file = tmp_path / "table.csv"
    assert main(["evaluate", "--config", str(config_path), "--out", str(table_file)]) == 0
    exported_table = pd.read_csv(table_file, dtype=str)
    want = exported_table["path"].map(dict(zip(labels["path"], labels["label"], strict=True)))
    assert (exported_table["corrected"] == want).all()
    assert (exported_table["corrected"] != exported_table["true"]).sum() == 8


def test_csv_export_and_import(planted, tmp_path: Path, capsys) -> None:
    config_path, rows = planted
    out = tmp_path / "issues.csv"
    argv = ["export-labels", "--config", str(config_path), "--label-issues", "--format", "csv"]
    assert main([*argv, "--out", str(out), "--image-root", "https://img.example/d"]) == 0
    table = pd.read_csv(out, dtype=str)
    assert list(table.columns) == ["path", "label", "predicted", "score", "image"]
    assert set(table["path"]) <= set(rows) and len(table) >= 7  # the flagged ones
    assert (table["image"] == "https://img.example/d/" + table["path"]).all()
    path = table["path"].iloc[0]
    edited = tmp_path / "edited.csv"
    edited.write_text(f"path,label\n{path},4\nnope.png,1\n{path},99\n", encoding="utf-8")
    capsys.readouterr()
    back = ["import-labels", "--config", str(config_path), "--from", str(edited), "--author", "d"]
    assert main([*back, "--dry-run"]) == 0
    out_text = capsys.readouterr().out
    assert "would store" in out_text and "skipped line 3: nope.png" in out_text
    assert "skipped line 4" in out_text and "not a class" in out_text


def test_export_refuses_an_empty_selection_and_bad_options(planted, tmp_path: Path, capsys) -> None:
    config_path, _ = planted
    base = ["export-labels", "--config", str(config_path), "--out", str(tmp_path / "x.json")]
    assert main([*base, "--tag", "never-used"]) == 2
    assert "carries the tag" in capsys.readouterr().err
    assert main([*base, "--finding", "12345"]) == 2
    assert "no finding 12345" in capsys.readouterr().err
    assert main([*base, "--label-issues", "--image-root", "ftp://x"]) == 2
    assert not (tmp_path / "x.json").exists()


def test_tag_command_writes_the_dashboards_store(planted, capsys) -> None:
    config_path, rows = planted
    config = load_config(config_path)
    paths = sorted(rows)[:3]
    argv = ["tag", "--config", str(config_path), "--tag", "relabel", "--author", "ann"]
    assert main([*argv, "--note", "sent to the labelling team", *paths, "not/there.png"]) == 0
    out = capsys.readouterr().out
    assert "tagged 3 images" in out and "skipped not/there.png" in out
    notes = NotesStore(config.notes_db)
    key = dataset_key(config.dataset())
    assert notes.paths_with_tag(key, "relabel") == set(paths)
    assert [n.text for n in notes.notes(key, paths[0])] == ["sent to the labelling team"]
    assert main([*argv, "only/unknown.png"]) == 2
    assert "none of the paths" in capsys.readouterr().err

"""``core.analysis.checkpoints``: N candidates against one baseline as a groups × models grid.

Tiny stored results with hand-made predictions; every expected number is counted here from the
labels and predictions, independently of the module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.analysis.checkpoints import GRID_VALUES, check_checkpoints
from core.analysis.regression import check_results
from core.results import BatchScores, ResultWriter

CLASSES = ["x", "y", "z"]
LABELS = [0] * 20 + [1] * 20 + [2] * 20


def _result(folder: Path, pred: list[int], labels: list[int] = LABELS, classes=CLASSES):  # type: ignore[no-untyped-def]
    rows = np.arange(len(labels))
    p = np.asarray(pred, np.int32)
    ones = np.ones(len(rows), np.float32)
    meta = {"model": folder.name, "dataset": "tiny"}
    manifest = [(f"{classes[lab]}/{i}.png", lab) for i, lab in enumerate(labels)]
    with ResultWriter(folder, manifest, classes, folder.name, meta=meta, durable=False) as w:
        probs = np.zeros((len(rows), len(classes)))
        w.write(BatchScores(rows, p, ones, ones, ones, p, ones, probs))
        return w.finish()


@pytest.fixture
def results(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A baseline right on every image; "worse" misses 15 of class x (a significant
    regression), "slightly" 2 of class z (not significant); "other" has its classes in another
    order."""
    labels = np.array(LABELS)
    worse = labels.copy()
    worse[:15] = 1
    slightly = labels.copy()
    slightly[40:42] = 0
    return {
        "base": _result(tmp_path / "base", LABELS),
        "worse": _result(tmp_path / "worse", worse.tolist()),
        "slightly": _result(tmp_path / "slightly", slightly.tolist()),
        "other": _result(tmp_path / "other", LABELS, classes=["y", "x", "z"]),
    }


def test_grid_holds_each_gate_and_leaves_out_what_cannot_be_paired(results) -> None:  # type: ignore[no-untyped-def]
    base = results["base"]
    found = check_checkpoints(
        base, {m: results[m] for m in ("worse", "other", "slightly")}, baseline_name="base"
    )
    assert found.candidates == ["worse", "slightly"]  # the order given, "other" left out
    assert set(found.refused) == {"other"} and "classes differ" in found.refused["other"]
    assert list(zip(found.groups["group"], found.groups["name"], strict=True)) == [
        ("overall", "overall"), ("class", "x"), ("class", "y"), ("class", "z"),
    ]  # fmt: skip
    for name in GRID_VALUES:
        assert found.values[name].shape == (4, 2)
    labels = np.array(LABELS)
    for col, model in enumerate(found.candidates):
        pred = results[model].pred
        for row, members in enumerate([np.ones(60, bool), *(labels == k for k in range(3))]):
            right = pred[members] == labels[members]
            assert found.values["n"][row, col] == members.sum()
            assert found.values["baseline"][row, col] == 1.0
            assert found.values["candidate"][row, col] == pytest.approx(right.mean())
            assert found.values["change"][row, col] == pytest.approx(right.mean() - 1.0)
            assert found.values["broken"][row, col] == (~right).sum()
            assert found.values["fixed"][row, col] == 0
        gate = check_results(base, results[model])  # the same verdicts as one `check`
        assert list(found.values["verdict"][:, col]) == list(gate.table["verdict"])
        assert np.allclose(found.values["p"][:, col], gate.table["p"])
    assert found.values["verdict"][1, 0] == "regression"  # 15 of 20 broken: significant
    assert found.values["verdict"][3, 1] == ""  # 2 of 20: not significant


def test_significant_rows_and_subset(results) -> None:  # type: ignore[no-untyped-def]
    found = check_checkpoints(results["base"], {"slightly": results["slightly"]}, "base")
    assert list(found.significant_rows()) == [0]  # overall only: nothing significant
    found = check_checkpoints(
        results["base"], {m: results[m] for m in ("slightly", "worse")}, "base"
    )
    rows = found.significant_rows()
    assert list(found.groups["name"].iloc[rows]) == ["overall", "x"]
    part = found.subset(rows)
    assert part.row_of("class", "x") == 1 and part.row_of("class", "y") is None
    assert np.array_equal(part.values["change"], found.values["change"][rows])
    assert found.row_of("class", "z") == 3 and found.row_of("slice", "z") is None


def test_accuracy_across_checkpoints_in_the_order_asked(results) -> None:  # type: ignore[no-untyped-def]
    found = check_checkpoints(
        results["base"], {m: results[m] for m in ("worse", "slightly")}, "base"
    )
    table = found.accuracy(["slightly", "base", "worse"])
    assert list(table.columns) == ["group", "name", "slightly", "base", "worse"]
    labels = np.array(LABELS)
    for model in ("slightly", "base", "worse"):
        right = results[model].pred == labels
        expected = [right.mean(), *(right[labels == k].mean() for k in range(3))]
        assert np.allclose(table[model], expected)


def test_no_candidate_gives_an_empty_grid(results) -> None:  # type: ignore[no-untyped-def]
    found = check_checkpoints(results["base"], {"other": results["other"]}, "base")
    assert found.candidates == [] and set(found.refused) == {"other"}
    assert found.values["change"].shape == (0, 0)


def test_a_slice_restricts_every_group_and_test(results) -> None:  # type: ignore[no-untyped-def]
    """``Comparison.subset``, ``Gate.subset`` and ``Checkpoints.within``: the same numbers as a
    check of results that hold only the slice's images, counted here."""
    from core.analysis.regression import mcnemar_p

    base, worse = results["base"], results["worse"]
    labels = np.array(LABELS)
    inside = np.arange(60) % 2 == 0  # every other image: 10 of each class
    halves = {"first": np.arange(60) < 30, "second": np.arange(60) >= 30}
    gate = check_results(base, worse, slices=halves)
    part = gate.subset(inside[gate.comparison.rows_a])
    assert list(part.comparison.paths) == list(gate.comparison.paths[inside])
    assert part.comparison.counts() == {
        c: int((gate.comparison.cell[inside] == c).sum()) for c in gate.comparison.counts()
    }
    right = worse.pred == labels
    table = part.table.set_index(["group", "name"])
    for key, members in [
        (("overall", "overall"), inside),
        *((("class", c), inside & (labels == k)) for k, c in enumerate(CLASSES)),
        *((("slice", n), inside & m) for n, m in halves.items()),
    ]:
        broken = int((~right & members).sum())
        assert table.loc[key, "n"] == members.sum()
        assert table.loc[key, "broken"] == broken and table.loc[key, "fixed"] == 0
        assert table.loc[key, "p_raw"] == pytest.approx(mcnemar_p(broken, 0))
    assert list(part.rows("slice", "first")) == [  # positions into the subset's images
        i for i, p in enumerate(part.comparison.paths) if p in gate.comparison.paths[:30]
        and part.comparison.cell[i] == 2  # newly broken
    ]  # fmt: skip
    found = check_checkpoints(base, {"worse": worse}, "base", slices=halves,
                              by=("overall", "class", "slice"))  # fmt: skip
    within = found.within(inside)
    assert np.array_equal(within.values["n"][:, 0], table["n"].to_numpy())
    assert np.allclose(within.values["p"][:, 0], table["p"].to_numpy())
    nothing = found.within(np.arange(60) < 20)  # class x only: y, z and "second" drop out
    assert list(nothing.groups["name"]) == ["overall", "x", "first"]
    with pytest.raises(ValueError, match="mask of"):
        gate.comparison.subset(inside[:10])


def test_slice_groups_are_named_slices_then_metadata_values() -> None:
    from core.analysis.slice_groups import slice_groups
    from core.data.metadata import Column, ColumnSet

    site = Column("site", "categorical", np.array([0, 1, 1, -1, 0], np.int32), ("A", "B"))
    size = Column("size", "numeric", np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    columns = ColumnSet([site, size])
    named = [("Bs", "site:B"), ("gone", "colour:red"), ("site = A", "size:4..")]
    found = slice_groups(columns, ["site"], named)
    assert list(found.masks)[:2] == ["Bs", "site = A"]  # the named slices keep their names
    assert found.masks["Bs"].tolist() == [False, True, True, False, False]
    assert found.masks["site = A"].tolist() == [False, False, False, True, True]  # named wins
    assert found.masks["site = B"].tolist() == [False, True, True, False, False]
    assert found.masks["site = (missing)"].tolist() == [False, False, False, True, False]
    assert not any(name.startswith("size") for name in found.masks)  # not metadata
    assert set(found.skipped) == {"gone"} and "colour" in found.skipped["gone"]

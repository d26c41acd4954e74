"""URL query parameters <-> view state: a copied link must restore the same view."""

from __future__ import annotations

import pytest

from dashboard.parts.matrix import cell_of_selection, matrix_chart, overview_chart
from dashboard.state.view_state import SORTS, ViewState, parse_view, to_params

MODELS = ["digits-cnn", "resnet"]
DATASETS = ["digits-test", "other"]


def test_round_trip_restores_every_field() -> None:
    view = ViewState(
        model="resnet", dataset="other", cell=(3, 9), sort="loss_desc", page=4, page_size=48,
        method="Grad-CAM++", layer="layer4.1", opacity=0.3, color="row", top=20, tag="ambiguous",
        pattern=2,
    )  # fmt: skip
    assert parse_view(to_params(view), MODELS, DATASETS, num_classes=10) == view


def test_defaults_are_first_entries_and_short_urls() -> None:
    view = parse_view({}, MODELS, DATASETS)
    assert (view.model, view.dataset, view.cell, view.page) == (
        "digits-cnn",
        "digits-test",
        None,
        1,
    )
    assert to_params(view) == {"model": "digits-cnn", "dataset": "digits-test"}


@pytest.mark.parametrize(
    ("params", "field", "expected"),
    [
        ({"model": "not-in-config"}, "model", "digits-cnn"),
        ({"dataset": "../../etc"}, "dataset", "digits-test"),
        ({"cell": "3,99"}, "cell", None),  # outside the class count
        ({"cell": "-1,2"}, "cell", None),
        ({"cell": "a,b"}, "cell", None),
        ({"cell": "1,2,3"}, "cell", None),
        ({"page": "0"}, "page", 1),
        ({"page": "x"}, "page", 1),
        ({"page_size": "7"}, "page_size", 24),
        ({"sort": "drop table"}, "sort", "confidence_desc"),
        ({"method": "eval"}, "method", "Grad-CAM"),
        ({"opacity": "2"}, "opacity", 0.5),
        ({"color": "x"}, "color", "count"),
        ({"pattern": "0"}, "pattern", 0),
        ({"pattern": "two"}, "pattern", 0),
        ({"pattern": "-1"}, "pattern", 0),
    ],
)
def test_bad_values_fall_back_to_defaults(params: dict, field: str, expected: object) -> None:
    assert getattr(parse_view(params, MODELS, DATASETS, num_classes=10), field) == expected


def test_new_cell_starts_on_first_page() -> None:
    assert ViewState(page=5).with_cell((1, 2)) == ViewState(cell=(1, 2), page=1)
    assert ViewState(page=5, pattern=3).with_cell((1, 2)).pattern == 0  # all its images


def test_every_sort_names_a_table_column() -> None:
    assert {column for column, _, _ in SORTS.values()} == {
        "confidence",
        "true_prob",
        "loss",
        "label_quality",
        "faithfulness",
    }


def test_selection_gives_the_clicked_cell() -> None:
    assert cell_of_selection({"cell": [{"t": 7, "p": 3}]}) == (7, 3)
    assert cell_of_selection({"cell": []}) is None  # nothing selected
    assert cell_of_selection({}) is None


def test_chart_has_one_cell_per_shown_pair_in_row_major_order() -> None:
    import numpy as np

    counts = np.arange(16).reshape(4, 4)
    chart = matrix_chart(counts, ["a", "b", "c", "d"], "count", [0, 2, 3], selected=(2, 3))
    data = chart.data
    # the selection fields are the original class indices, row-major over the shown classes
    assert list(data["t"]) == [0] * 3 + [2] * 3 + [3] * 3
    assert list(data["p"]) == [0, 2, 3] * 3
    assert list(data["count"]) == list(counts[np.ix_([0, 2, 3], [0, 2, 3])].ravel())
    assert tuple(data.iloc[5][["true", "pred", "count"]]) == ("c", "d", counts[2, 3])
    (cells, text) = chart.spec["layer"]
    select = cells["params"][0]
    assert select["select"]["fields"] == ["t", "p"] and select["value"] == [{"t": 2, "p": 3}]
    # the axes list the shown classes in order; the layout is fixed, so a cell's place is too
    assert chart.spec["encoding"]["x"]["scale"]["domain"] == ["a", "c", "d"]
    assert chart.spec["autosize"] == {"type": "none"}
    assert chart.spec["width"] == chart.spec["height"]
    assert text["mark"]["type"] == "text"  # counts written in the cells of a small matrix
    assert "value" not in matrix_chart(counts, list("abcd")).spec["layer"][0]["params"][0]


def test_chart_is_identical_across_reruns() -> None:
    import json

    import numpy as np

    counts = np.random.default_rng(0).integers(0, 9, (6, 6))
    names = list("abcdef")
    one, two = matrix_chart(counts, names, "row"), matrix_chart(counts, names, "row")
    assert json.dumps(one.spec) == json.dumps(two.spec)
    assert one.data.equals(two.data)


def test_row_share_colouring() -> None:
    import numpy as np

    counts = np.array([[3, 1], [0, 0]])
    value = matrix_chart(counts, ["a", "b"], "row").data["value"]
    assert np.allclose(value, [0.75, 0.25, 0.0, 0.0])  # an empty row stays 0, not NaN


def test_overview_chart_colours_blocks_by_log_count() -> None:
    import numpy as np

    sums = np.array([[100, 0], [9, 50]])
    chart = overview_chart(sums, ["a…b", "c…d"], selected=(1, 0))
    assert np.allclose(chart.data["value"], np.log1p([100, 0, 9, 50]))
    assert list(chart.data["count"]) == [100, 0, 9, 50]
    assert chart.spec["layer"][0]["params"][0]["value"] == [{"t": 1, "p": 0}]

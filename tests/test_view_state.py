"""URL query parameters <-> view state: a copied link must restore the same view."""

from __future__ import annotations

import pytest

from dashboard.matrix_figure import cell_of_point, matrix_figure, point_of_cell
from dashboard.view_state import SORTS, ViewState, parse_view, to_params

MODELS = ["digits-cnn", "resnet"]
DATASETS = ["digits-test", "other"]


def test_round_trip_restores_every_field() -> None:
    view = ViewState(
        model="resnet", dataset="other", cell=(3, 9), sort="loss_desc", page=4, page_size=48,
        method="Grad-CAM++", layer="layer4.1", opacity=0.3, color="row", top=20, tag="ambiguous",
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
    ],
)
def test_bad_values_fall_back_to_defaults(params: dict, field: str, expected: object) -> None:
    assert getattr(parse_view(params, MODELS, DATASETS, num_classes=10), field) == expected


def test_new_cell_starts_on_first_page() -> None:
    assert ViewState(page=5).with_cell((1, 2)) == ViewState(cell=(1, 2), page=1)


def test_every_sort_names_a_table_column() -> None:
    assert {column for column, _, _ in SORTS.values()} == {
        "confidence",
        "true_prob",
        "loss",
        "label_quality",
    }


@pytest.mark.parametrize("shown", [list(range(5)), [0, 3, 7, 9]])
def test_point_cell_mapping_round_trips(shown: list[int]) -> None:
    m = len(shown)
    for index in range(m * m):
        cell = cell_of_point(index, shown)
        assert cell[0] in shown and cell[1] in shown
        assert point_of_cell(cell, shown) == index
    assert point_of_cell((1, 2), [0, 3]) is None


def test_figure_click_layer_covers_every_cell_in_row_major_order() -> None:
    import numpy as np

    counts = np.arange(16).reshape(4, 4)
    fig = matrix_figure(counts, ["a", "b", "c", "d"], "count", [0, 2, 3], selected=(2, 3))
    heat, dots = fig.data
    assert np.array_equal(np.asarray(heat.z), counts[np.ix_([0, 2, 3], [0, 2, 3])])
    assert list(dots.x) == [0, 1, 2] * 3 and list(dots.y) == [0] * 3 + [1] * 3 + [2] * 3
    assert list(dots.selectedpoints) == [point_of_cell((2, 3), [0, 2, 3])]
    # hover names the original classes of the point
    assert tuple(dots.customdata[5][:3]) == ("c", "d", counts[2, 3])
    assert fig.layout.xaxis.fixedrange and fig.layout.yaxis.fixedrange
    # each marker spans exactly one cell of the fixed-size plot
    plot_px = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
    assert dots.marker.size == pytest.approx(plot_px / 3)


def test_figure_is_identical_across_reruns() -> None:
    import numpy as np

    counts = np.random.default_rng(0).integers(0, 9, (6, 6))
    names = list("abcdef")
    assert (
        matrix_figure(counts, names, "row").to_json()
        == matrix_figure(counts, names, "row").to_json()
    )


def test_row_share_colouring() -> None:
    import numpy as np

    counts = np.array([[3, 1], [0, 0]])
    z = np.asarray(matrix_figure(counts, ["a", "b"], "row").data[0].z)
    assert np.allclose(z, [[0.75, 0.25], [0.0, 0.0]])  # an empty row stays 0, not NaN

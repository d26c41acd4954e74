"""Metrics over a predictions table, checked against numpy by hand and scikit-learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from core.analysis.metrics import (
    accuracy,
    cell_rows,
    confusion_matrix,
    most_confused_classes,
    per_class_metrics,
    top_confused_pairs,
)

K = 7  # classes 5 and 6 never occur as true class; class 6 is never predicted either
CLASSES = [f"class_{i}" for i in range(K)]


@pytest.fixture(params=[0, 1, 2])
def table(request) -> pd.DataFrame:
    rng = np.random.default_rng(request.param)
    n = 300
    true = rng.integers(0, 5, n)
    pred = np.where(rng.random(n) < 0.55, true, rng.integers(0, 6, n))
    return pd.DataFrame(
        {
            "index": np.arange(n),
            "path": [f"{t}/img_{i}.png" for i, t in enumerate(true)],
            "true": true,
            "pred": pred,
            "confidence": rng.random(n),
        }
    ).sample(frac=1.0, random_state=request.param)  # row order must not matter


def counts_by_hand(table: pd.DataFrame) -> np.ndarray:
    matrix = np.zeros((K, K), dtype=np.int64)
    np.add.at(matrix, (table["true"].to_numpy(), table["pred"].to_numpy()), 1)
    return matrix


def shares(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    out = np.zeros(np.broadcast(numerator, denominator).shape, dtype=float)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def test_confusion_matrix_counts(table: pd.DataFrame) -> None:
    matrix = confusion_matrix(table, K)
    assert matrix.shape == (K, K)
    np.testing.assert_array_equal(matrix, counts_by_hand(table))
    np.testing.assert_array_equal(
        matrix, skm.confusion_matrix(table["true"], table["pred"], labels=range(K))
    )
    assert matrix.sum() == len(table)
    assert (matrix[5:] == 0).all() and (matrix[:, 6] == 0).all()


@pytest.mark.parametrize("normalize", ["true", "pred", "all"])
def test_confusion_matrix_normalized(table: pd.DataFrame, normalize: str) -> None:
    counts = counts_by_hand(table).astype(float)
    expected = {
        "true": shares(counts, counts.sum(axis=1, keepdims=True)),
        "pred": shares(counts, counts.sum(axis=0, keepdims=True)),
        "all": counts / counts.sum(),
    }[normalize]
    matrix = confusion_matrix(table, K, normalize=normalize)
    np.testing.assert_allclose(matrix, expected)
    np.testing.assert_allclose(
        matrix,
        skm.confusion_matrix(table["true"], table["pred"], labels=range(K), normalize=normalize),
    )
    assert not np.isnan(matrix).any()  # empty rows/columns are 0, not NaN


def test_accuracy(table: pd.DataFrame) -> None:
    expected = float((table["true"].to_numpy() == table["pred"].to_numpy()).mean())
    assert accuracy(table) == pytest.approx(expected)
    assert accuracy(table) == pytest.approx(skm.accuracy_score(table["true"], table["pred"]))


def test_per_class_metrics(table: pd.DataFrame) -> None:
    counts = counts_by_hand(table)
    tp = np.diag(counts).astype(float)
    precision = shares(tp, counts.sum(axis=0))
    recall = shares(tp, counts.sum(axis=1))
    f1 = shares(2 * precision * recall, precision + recall)
    result = per_class_metrics(table, CLASSES)
    assert list(result.columns) == ["class", "precision", "recall", "f1", "support"]
    assert result["class"].tolist() == CLASSES
    np.testing.assert_allclose(result["precision"], precision)
    np.testing.assert_allclose(result["recall"], recall)
    np.testing.assert_allclose(result["f1"], f1)
    np.testing.assert_array_equal(result["support"], counts.sum(axis=1))
    sk = skm.precision_recall_fscore_support(
        table["true"], table["pred"], labels=range(K), zero_division=0
    )
    for column, values in zip(["precision", "recall", "f1", "support"], sk, strict=True):
        np.testing.assert_allclose(result[column], values)
    assert result.loc[5:, "support"].tolist() == [0, 0]


def test_top_confused_pairs(table: pd.DataFrame) -> None:
    counts = counts_by_hand(table)
    cells = sorted(
        ((-counts[t, p], t, p) for t in range(K) for p in range(K) if t != p and counts[t, p]),
    )
    for k in (1, 5, 100):
        top = top_confused_pairs(table, CLASSES, k=k)
        expected = cells[:k]
        assert list(zip(top["true"], top["pred"], strict=True)) == [(t, p) for _, t, p in expected]
        assert top["count"].tolist() == [-c for c, _, _ in expected]
        assert (top["true"] != top["pred"]).all()
        assert top["true_name"].tolist() == [CLASSES[t] for _, t, _ in expected]
        assert top["pred_name"].tolist() == [CLASSES[p] for _, _, p in expected]
    assert len(top_confused_pairs(table, CLASSES, k=100)) == len(cells)  # no empty cells


def test_top_confused_pairs_ties_break_by_row_then_column() -> None:
    table = pd.DataFrame({"true": [2, 0, 1, 0, 2, 1, 1], "pred": [0, 2, 0, 1, 1, 2, 1]})
    top = top_confused_pairs(table, ["a", "b", "c"], k=10)
    assert list(zip(top["true"], top["pred"], strict=True)) == [
        (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)
    ]  # fmt: skip
    perfect = pd.DataFrame({"true": [0, 1], "pred": [0, 1]})
    assert top_confused_pairs(perfect, ["a", "b"]).empty


def test_cell_rows_are_exactly_that_cell(table: pd.DataFrame) -> None:
    counts = counts_by_hand(table)
    seen = 0
    for t in range(K):
        for p in range(K):
            rows = cell_rows(table, t, p)
            assert len(rows) == counts[t, p]
            assert (rows["true"] == t).all() and (rows["pred"] == p).all()
            expected = table[(table["true"] == t) & (table["pred"] == p)]
            assert rows["path"].tolist() == expected["path"].tolist()
            assert rows.index.tolist() == list(range(len(rows)))
            assert list(rows.columns) == list(table.columns)
            seen += len(rows)
    assert seen == len(table)


def test_most_confused_classes(table: pd.DataFrame) -> None:
    counts = counts_by_hand(table)
    off = counts - np.diag(np.diag(counts))
    errors = off.sum(axis=0) + off.sum(axis=1)
    for n in (1, 3, K):
        ranked = sorted(range(K), key=lambda c: (-errors[c], c))[:n]
        chosen = most_confused_classes(table, K, n)
        assert chosen == sorted(ranked)
        assert len(chosen) == n
        assert min(errors[chosen]) >= max(np.delete(errors, chosen), default=0)
    assert 6 not in most_confused_classes(table, K, 5)  # never seen, never an error


def test_empty_table() -> None:
    # every image unreadable: metrics are empty, not an exception
    empty = pd.DataFrame({"true": pd.Series(dtype=object), "pred": pd.Series(dtype=object)})
    assert np.isnan(accuracy(empty))
    assert confusion_matrix(empty, 3).tolist() == [[0] * 3] * 3
    assert confusion_matrix(empty, 3, normalize="true").sum() == 0
    assert per_class_metrics(empty, ["a", "b", "c"])["support"].tolist() == [0, 0, 0]
    assert top_confused_pairs(empty, ["a", "b", "c"]).empty
    assert cell_rows(empty, 0, 0).empty
    assert len(most_confused_classes(empty, 3, 2)) == 2

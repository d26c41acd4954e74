"""Two-model comparison: agreement cells, McNemar's exact test, per-class changes, errors."""

from __future__ import annotations

import numpy as np
import pytest

from core.analysis.comparison import Agreement, ModelResults, compare, mcnemar_exact
from core.errors import UserFacingError

CLASSES = ("cat", "dog", "fox")


def results(model: str, true, pred, prob, paths=None, dataset="val", classes=CLASSES):
    n = len(true)
    return ModelResults(
        model=model,
        dataset=dataset,
        classes=classes,
        paths=np.array(paths if paths is not None else [f"img_{i}.png" for i in range(n)]),
        true=np.array(true),
        pred=np.array(pred),
        true_prob=np.array(prob, dtype=np.float32),
    )


def test_mcnemar_exact_by_hand() -> None:
    # 1 fixed, 7 broken: two-sided binomial p = 2 * P(X <= 1 | n=8, p=1/2) = 2 * 9 / 256
    assert mcnemar_exact(1, 7) == pytest.approx(18 / 256)
    assert mcnemar_exact(7, 1) == pytest.approx(18 / 256)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(4, 4) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_cells_matched_by_path_in_any_order() -> None:
    rng = np.random.default_rng(0)
    n = 200
    true = rng.integers(0, 3, n)
    pred_a = np.where(rng.random(n) < 0.6, true, rng.integers(0, 3, n))
    pred_b = np.where(rng.random(n) < 0.8, true, rng.integers(0, 3, n))
    prob_a, prob_b = rng.random(n), rng.random(n)
    a = results("A", true, pred_a, prob_a)
    shuffle = rng.permutation(n)[:-3]  # B lacks three images and lists the rest shuffled
    paths = np.array([f"img_{i}.png" for i in range(n)])
    b = results("B", true[shuffle], pred_b[shuffle], prob_b[shuffle], paths[shuffle])
    result = compare(a, b)
    assert (result.only_a, result.only_b, len(result.paths)) == (3, 0, n - 3)
    kept = np.sort(shuffle)
    expected = {cell: 0 for cell in Agreement}
    for i in kept:  # by hand, one image at a time
        ra, rb = pred_a[i] == true[i], pred_b[i] == true[i]
        if ra and rb:
            expected[Agreement.BOTH_RIGHT] += 1
        elif rb:
            expected[Agreement.FIXED] += 1
        elif ra:
            expected[Agreement.BROKEN] += 1
        elif pred_a[i] == pred_b[i]:
            expected[Agreement.SAME_WRONG] += 1
        else:
            expected[Agreement.DIFFERENT_WRONG] += 1
    assert result.counts() == expected
    assert min(expected.values()) > 0
    table = result.table()
    assert table.loc["A wrong", "B right"] == expected[Agreement.FIXED]
    assert table.loc["A right", "B wrong"] == expected[Agreement.BROKEN]
    assert table.to_numpy().sum() == n - 3
    assert result.p_value() == pytest.approx(
        mcnemar_exact(expected[Agreement.FIXED], expected[Agreement.BROKEN])
    )
    # every matched image's values come from its own row in both results
    for pos in range(len(result.paths)):
        i = int(result.paths[pos][4:-4])
        assert result.pred_a[pos] == pred_a[i] and result.pred_b[pos] == pred_b[i]
        assert result.prob_b[pos] == np.float32(prob_b[i])
    fixed = result.cell_positions(Agreement.FIXED)
    assert len(fixed) == expected[Agreement.FIXED]
    assert (np.diff(result.prob_change[fixed]) <= 0).all()
    ascending = result.cell_positions(Agreement.FIXED, descending=False)
    assert (ascending == fixed[::-1]).all()


def test_per_class_changes() -> None:
    true = [0, 0, 0, 0, 1, 1, 2, 2]
    a = results("A", true, [0, 0, 1, 1, 1, 1, 2, 0], [0.5] * 8)
    b = results("B", true, [0, 0, 0, 0, 1, 1, 2, 2], [0.9] * 8)
    frame = compare(a, b).per_class().set_index("class")
    # class cat: A finds 2 of 4 (recall 0.5), precision 2/3 → F1 = 4/7; B all right
    assert frame.loc["cat", "recall_a"] == pytest.approx(0.5)
    assert frame.loc["cat", "f1_a"] == pytest.approx(4 / 7)
    assert frame.loc["cat", "recall_change"] == pytest.approx(0.5)
    assert frame.loc["cat", "f1_change"] == pytest.approx(3 / 7)
    assert frame.loc["dog", "recall_change"] == 0
    assert list(frame["support"]) == [4, 2, 2]
    assert frame.loc["dog", "f1_change"] == pytest.approx(1 / 3)  # precision 1/2 → 1
    top = compare(a, b).top_class_changes(2)
    assert list(top["class"]) == ["cat", "dog"]  # largest |F1 change| first, ties in class order


def test_mismatched_pairs_are_named() -> None:
    a = results("A", [0, 1], [0, 1], [1, 1])
    with pytest.raises(UserFacingError, match=r"'A' was evaluated on dataset 'val', 'B' on 'x'"):
        compare(a, results("B", [0, 1], [0, 1], [1, 1], dataset="x"))
    other = ("cat", "dog", "wolf")
    with pytest.raises(UserFacingError, match=r"class 2 is 'fox' vs 'wolf'"):
        compare(a, results("B", [0, 1], [0, 1], [1, 1], classes=other))
    with pytest.raises(UserFacingError, match="3 classes vs 2"):
        compare(a, results("B", [0, 1], [0, 1], [1, 1], classes=("cat", "dog")))
    with pytest.raises(UserFacingError, match="share no image path"):
        compare(a, results("B", [0, 1], [0, 1], [1, 1], paths=["x.png", "y.png"]))


def test_cli_compare_prints_table_p_and_changes(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from core.cli import _arrays, main
    from tests.projects import expected, write_config

    config = write_config(tmp_path)
    a, b = (_arrays(expected(config, model=m)) for m in ("digits-cnn-shifted", "digits-cnn"))
    result = compare(a, b)
    args = ["compare", "--config", str(config), "--model", "digits-cnn-shifted"]
    assert main([*args, "--model", "digits-cnn", "--top", "3"]) == 0
    out = capsys.readouterr().out
    counts = result.counts()
    assert f"fixed (A wrong, B right): {counts[Agreement.FIXED]}\n" in out
    assert f"newly broken (A right, B wrong): {counts[Agreement.BROKEN]}\n" in out
    assert f"p = {result.p_value():.4g}\n" in out
    top = result.top_class_changes(3)
    assert "3 largest F1 changes of 10 classes" in out
    lines = out.split("per-class change")[1].splitlines()[2:]
    assert [line.split()[0] for line in lines] == list(top["class"])
    assert main([*args, "--model", "digits-cnn", "--dataset", "nope"]) == 2
    assert main(args) == 2
    assert "compare takes --model exactly twice, got 1" in capsys.readouterr().err

"""The causal test of a pattern (``core.analysis.causal``) and ``python -m core verify``.

Hand-checked unit tests of the pieces (pixel boxes, the hot region's box, control placement,
pasting, inpainting, the spread of targets over classes, Wilson and Fisher numbers from their
formulas), then the bundled samples: on the shortcut ResNet the top "→ star" pattern is causal
and erasing its region gives most images back their shape; the star corner is sufficient on
the shortcut model and not shown on the clean one; verdicts are stored, listed by
``patterns --json`` and regenerate their images.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.analysis.causal import (
    HOLD_MARGIN,
    Arm,
    Verdict,
    hot_box,
    one_sided_fisher,
    pattern_subject,
    region_subject,
    result_verdict,
    stored_verdict,
    verify_subject,
    wilson,
)
from core.analysis.causal_examples import verdict_examples
from core.analysis.transplant import (
    control_corners,
    erase,
    outline,
    paste,
    pixel_box,
    spread_sample,
)
from core.cli import main
from tests.projects import sample_config

SAMPLE = Path(__file__).resolve().parents[1] / "sample_models"
SHORTCUT = "shapes-resnet (shortcut)"
CLEAN = "shapes-resnet (clean)"
CORNER = (0.75, 0.75, 1.0, 1.0)

# ------------------------------------------------------------------------------ units


def test_pixel_box_covers_every_touched_pixel() -> None:
    assert pixel_box(CORNER, (64, 64)) == (48, 48, 64, 64)
    assert pixel_box((0.1, 0.3, 0.35, 0.5), (10, 20)) == (2, 3, 7, 5)  # x by width, y by height
    assert pixel_box((0.5, 0.5, 0.5001, 0.5001), (64, 64)) == (32, 32, 33, 33)  # one pixel
    third = 1 / 3  # 0.333...·3 = 0.999...: still pixel 1, not 0
    assert pixel_box((third, third, 2 * third, 1.0), (3, 3)) == (1, 1, 2, 3)


def test_hot_box_of_a_corner_cell() -> None:
    """All the mass in cell (3, 3) of a 4×4 map, drawn at 16×16 (half-pixel bilinear): along
    each axis the values are 0 up to pixel 9, then 1/8, 3/8, 5/8, 7/8, 1, 1 (total 4 per row,
    16 in all). Half the mass (8) takes the four 1s (4), the four 7/8s next to them (3.5) and
    pixel (13, 13) at 49/64 (8.27 once added, but 7.5 before it): rows and columns 13-15."""
    mean = np.zeros((4, 4), np.float32)
    mean[3, 3] = 1.0
    assert hot_box(mean, (16, 16)) == (13 / 16, 13 / 16, 1.0, 1.0)
    assert hot_box(np.zeros((4, 4), np.float32), (8, 8)) == (0.0, 0.0, 1.0, 1.0)  # nowhere
    flat = np.full((4, 4), 1 / 16, np.float32)  # no place stands out: half the image, any half
    x0, y0, x1, y1 = hot_box(flat, (8, 8))
    assert (x1 - x0) * (y1 - y0) >= 0.5


def test_control_corners_avoid_the_region() -> None:
    rng = np.random.default_rng(0)
    box = (0, 0, 4, 4)  # 10×10 image: a 4×4 box elsewhere never needs to touch it
    corners = control_corners(box, (10, 10), 500, rng)
    assert corners.min() >= 0 and corners.max() <= 6
    assert np.all((corners[:, 0] >= 4) | (corners[:, 1] >= 4))
    assert len({tuple(c) for c in corners}) > 20  # spread over the free places
    # a 4×4 box in the middle of 8×8: every other 4×4 box overlaps it, least (2×2) at the corners
    corners = control_corners((2, 2, 6, 6), (8, 8), 200, np.random.default_rng(1))
    assert {tuple(c) for c in corners} == {(0, 0), (4, 0), (0, 4), (4, 4)}
    again = control_corners((2, 2, 6, 6), (8, 8), 200, np.random.default_rng(1))
    np.testing.assert_array_equal(corners, again)  # seeded


def test_paste_at_the_same_place_and_from_elsewhere() -> None:
    targets = np.zeros((2, 6, 6, 3), np.uint8)
    sources = np.arange(2 * 6 * 6 * 3, dtype=np.int64).reshape(2, 6, 6, 3).astype(np.uint8)
    box = (1, 2, 3, 5)  # x 1-2, y 2-4
    same = paste(targets, sources, box)
    np.testing.assert_array_equal(same[:, 2:5, 1:3], sources[:, 2:5, 1:3])
    same[:, 2:5, 1:3] = 0
    assert not same.any() and not targets.any()  # nothing else changed, targets untouched
    cut_at = np.array([[3, 0], [4, 3]])  # (x, y) of each source's patch
    moved = paste(targets, sources, box, cut_at)
    np.testing.assert_array_equal(moved[0, 2:5, 1:3], sources[0, 0:3, 3:5])
    np.testing.assert_array_equal(moved[1, 2:5, 1:3], sources[1, 3:6, 4:6])


def test_erase_inpaints_only_the_box() -> None:
    image = np.full((1, 32, 32, 3), 90, np.uint8)
    image[0, 20:28, 20:28] = (255, 0, 255)  # a mark on a plain background
    box = (20, 20, 28, 28)
    gone = erase(image, box)
    assert np.abs(gone[0].astype(int) - 90).max() <= 2  # filled from the background around it
    other = erase(image, box, np.array([[2, 3]]))  # the same size elsewhere: the mark stays
    np.testing.assert_array_equal(other[0, 20:28, 20:28], image[0, 20:28, 20:28])
    np.testing.assert_array_equal(other[0, :, 12:], image[0, :, 12:])
    gray = erase(image[..., :1], box)
    assert gray.shape == (1, 32, 32, 1)
    drawn = outline(image[0], (2, 2, 6, 6))
    assert tuple(drawn[2, 3]) == (255, 0, 255) and tuple(drawn[3, 3]) == (90, 90, 90)


def test_spread_sample_takes_from_every_class_in_turn() -> None:
    labels = np.array([0] * 5 + [1] * 1 + [2] * 3)
    rng = np.random.default_rng(3)
    picked = spread_sample(labels, 6, rng)
    assert len(picked) == 6 == len(set(picked.tolist()))
    counts = np.bincount(labels[picked], minlength=3)
    assert counts[1] == 1  # the small class gives all it has
    assert sorted(counts[[0, 2]].tolist()) == [2, 3]  # the others differ by at most one
    assert len(spread_sample(labels, 100, np.random.default_rng(3))) == 9
    np.testing.assert_array_equal(picked, spread_sample(labels, 6, np.random.default_rng(3)))


def _wilson_formula(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def _fisher_greater(a: int, n1: int, c: int, n2: int) -> float:
    """P(X ≥ a) for X hypergeometric: n1 draws from n1 + n2 items of which a + c are hits."""
    hits, total = a + c, n1 + n2
    top = min(hits, n1)
    return sum(math.comb(hits, x) * math.comb(total - hits, n1 - x) for x in range(a, top + 1)) / (
        math.comb(total, n1)
    )


@pytest.mark.parametrize(("k", "n"), [(165, 200), (0, 20), (20, 20), (3, 7)])
def test_wilson_interval_matches_its_formula(k: int, n: int) -> None:
    np.testing.assert_allclose(wilson(k, n), _wilson_formula(k, n), atol=1e-9)


@pytest.mark.parametrize(("a", "n1", "c", "n2"), [(165, 200, 0, 200), (4, 8, 1, 8), (3, 10, 3, 10)])
def test_one_sided_fisher_matches_the_hypergeometric_tail(a: int, n1: int, c: int, n2: int) -> None:
    assert one_sided_fisher(a, n1, c, n2) == pytest.approx(_fisher_greater(a, n1, c, n2), rel=1e-9)
    assert one_sided_fisher(0, 0, 0, 5) == 1.0


def _verdict(arms: list[tuple[int, int]], p: tuple[float, float]) -> Verdict:
    from core.analysis.causal import Subject

    made = [Arm(n, h, wilson(h, n), None if i < 2 else 0) for i, (n, h) in enumerate(arms)]
    empty = np.zeros(0, np.int64)
    return Verdict(
        Subject(1, 2, np.arange(5), CORNER, 3),
        200,
        0,
        *made,
        *p,
        empty,
        empty,
        empty,
        empty,
        np.zeros((0, 2), np.int64),
        empty,
        empty,
        empty,
        np.zeros((0, 2), np.int64),
    )


def test_verdict_rule_and_round_trip() -> None:
    strong, weak = (100, 80), (100, 2)
    assert _verdict([strong, weak, strong, weak], (1e-9, 1e-9)).verdict == "causal"
    assert _verdict([strong, weak, weak, weak], (1e-9, 1.0)).verdict == "sufficient"
    assert _verdict([weak, weak, strong, weak], (1.0, 1e-9)).verdict == "necessary"
    # p too large, or the margin too small, and the arm does not hold
    assert _verdict([strong, weak, strong, weak], (2e-3, 2e-3)).verdict == "not shown"
    close = (100, 2 + int(100 * HOLD_MARGIN) - 1)
    assert _verdict([close, weak, weak, weak], (1e-9, 1.0)).verdict == "not shown"
    made = _verdict([strong, weak, strong, weak], (1e-9, 1e-9))
    back = Verdict.from_arrays(made.to_arrays())
    assert back.to_dict(("a", "b", "c")) == made.to_dict(("a", "b", "c"))
    assert back.subject.key == made.subject.key and back.subject.pattern == 3


# ------------------------------------------------------------------------------ samples


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sample_config(tmp_path_factory.mktemp("causal-sample"))


@pytest.fixture(scope="module")
def shortcut(sample: Path) -> dict[str, Any]:
    return _opened(sample, SHORTCUT)


def _opened(config: Path, name: str) -> dict[str, Any]:
    """The model, shapes-test, the model's result on it (evaluated into the test's cache) and
    its patterns."""
    from core import evaluate, load_config, load_model, open_dataset
    from core.analysis.patterns import result_patterns

    project = load_config(config)
    model = load_model(project.model(name))
    dataset = open_dataset(project.dataset("shapes-test"), model.spec.classes)
    result = evaluate(model, dataset, project.cache_dir)
    patterns = result_patterns(result)
    return {"patterns": patterns, "result": result, "model": model, "dataset": dataset}


def _corner(opened: dict[str, Any]) -> Verdict:
    result = opened["result"]
    star = result.classes.index("star")
    subject = region_subject(result, star, star, CORNER)
    return verify_subject(opened["model"], opened["dataset"], result, subject)


def test_shortcut_top_star_pattern_is_causal(shortcut: dict[str, Any]) -> None:
    result, patterns = shortcut["result"], shortcut["patterns"]
    star = result.classes.index("star")
    rank = next(i for i in range(len(patterns)) if patterns[i].pred == star != patterns[i].true)
    subject = pattern_subject(result, patterns[rank])
    assert subject.box[0] > 0.5 and subject.box[1] > 0.5 and subject.box[2:] == (1.0, 1.0)
    verdict = verify_subject(shortcut["model"], shortcut["dataset"], result, subject)
    assert verdict.verdict == "causal", verdict.to_dict(result.classes)
    assert verdict.transplant.rate >= 0.5 and verdict.transplant_control.rate <= 0.1
    assert verdict.erase.to_true is not None and verdict.erase.to_true > verdict.erase.n / 2
    # the targets: right, of other classes than star, spread over them (20 images a class at most)
    rows = verdict.target_rows
    position = np.searchsorted(result.index, rows)
    assert np.all(result.true[position] == result.pred[position])
    counts = np.bincount(result.true[position], minlength=len(result.classes))
    available = np.bincount(
        result.true[(result.true == result.pred) & (result.true != star)],
        minlength=len(result.classes),
    )
    assert counts[star] == 0 and len(rows) == min(200, available.sum())
    full = counts < available  # classes not exhausted take turns: at most one apart
    assert np.ptp(counts[full]) <= 1 if full.any() else True
    # every control box was cut where it does not overlap the region
    x0, y0, x1, y1 = pixel_box(subject.box, result.meta["input_size"])
    w, h = x1 - x0, y1 - y0
    cx, cy = verdict.control_from[:, 0], verdict.control_from[:, 1]
    assert np.all((cx + w <= x0) | (cx >= x1) | (cy + h <= y0) | (cy >= y1))


def test_star_corner_is_sufficient_on_the_shortcut_model_only(
    sample: Path, shortcut: dict[str, Any]
) -> None:
    marked = _corner(shortcut)
    assert marked.sufficient and marked.verdict in ("sufficient", "causal")
    clean = _opened(sample, CLEAN)
    assert _corner(clean).verdict == "not shown"


def test_verdicts_are_stored_listed_and_regenerate_their_images(
    sample: Path, shortcut: dict[str, Any]
) -> None:
    result = shortcut["result"]
    subject = pattern_subject(result, shortcut["patterns"][0])
    assert stored_verdict(result, subject) is None
    run = main(["verify", "--config", str(sample), "--model", SHORTCUT, "--pattern", "1"])
    assert run == 0
    stored = stored_verdict(result, subject, 200, 0)
    assert stored is not None and stored_verdict(result, subject) is not None
    again = result_verdict(result, None, None, subject)  # type: ignore[arg-type]  # stored: no model
    assert again.to_dict(result.classes) == stored.to_dict(result.classes)
    examples = verdict_examples(shortcut["model"], shortcut["dataset"], result, stored, count=3)
    flips = stored.transplant_pred != subject.pred
    order = np.argsort(flips, kind="stable")[:3]
    np.testing.assert_array_equal(examples.pred_after, stored.transplant_pred[order])
    np.testing.assert_array_equal(examples.pred_control, stored.control_pred[order])
    recovered = np.argsort(stored.erase_pred == subject.pred, kind="stable")[:3]
    np.testing.assert_array_equal(examples.erased_pred, stored.erase_pred[recovered])
    np.testing.assert_array_equal(
        examples.erased_control_pred, stored.erase_control_pred[recovered]
    )
    x0, y0, x1, y1 = examples.box
    changed = np.any(examples.after != examples.before, axis=(0, 3))
    assert changed[y0:y1, x0:x1].any() and not changed.sum() > changed[y0:y1, x0:x1].sum()
    assert examples.after_maps.shape == examples.after.shape[:3]


def test_verify_json_and_patterns_listing(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--config", str(sample), "--model", SHORTCUT]
    assert main(["verify", *base, "--pattern", "1", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert set(found) == {
        "pattern",
        "region",
        "transplant",
        "transplant_control",
        "erase",
        "erase_control",
        "p",
        "verdict",
    }
    assert (
        set(found["pattern"]) == {"true", "pred", "images"} and found["pattern"]["pred"] == "star"
    )
    assert (
        set(found["transplant"])
        == set(found["transplant_control"])
        == {"n", "flipped", "rate", "ci"}
    )
    assert (
        set(found["erase"])
        == set(found["erase_control"])
        == {
            "n",
            "recovered",
            "to_true",
            "rate",
            "ci",
        }
    )
    assert found["transplant"]["rate"] == round(
        found["transplant"]["flipped"] / found["transplant"]["n"], 4
    )
    lo, hi = found["transplant"]["ci"]
    assert lo <= found["transplant"]["rate"] <= hi and set(found["p"]) == {"transplant", "erase"}
    assert main(["patterns", *base, "--top", "3", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["verdict"] == found["verdict"] and "verdict" not in listed[2]
    cell = ["--cell", "star,star", "--region", "0.75,0.75,1,1", "--targets", "40", "--seed", "2"]
    assert main(["verify", *base, *cell, "--json"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["transplant"]["n"] == 40 and small["region"] == [0.75, 0.75, 1.0, 1.0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--pattern", "999"], "--pattern takes a rank"),
        (["--cell", "star,star"], "--cell needs --region"),
        (["--cell", "star,star", "--region", "0.8,0,0.5,1"], "--region needs"),
        (["--cell", "star,star", "--region", "a,b"], "--region takes"),
        (["--pattern", "1", "--region", "0,0,1,1"], "--region goes with --cell"),
        (["--pattern", "1", "--targets", "0"], "--targets must be"),
        (["--pattern", "1", "--seed", "-1"], "--seed must be"),
    ],
)
def test_verify_refuses_bad_input(
    sample: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["verify", "--config", str(sample), "--model", SHORTCUT, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err

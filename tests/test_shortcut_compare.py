"""Comparing the shortcut ResNet (A) with the same recipe trained without the mark (B).

The marked images of other shapes are most of what B **fixed**: A called them ``star``, B gets
most of them right. Their Grad-CAMs say why: A's predicted-class map sits on the corner mark,
B's on the shape. (B never saw the mark either: it calls some marked circles and triangles
``square`` and most marked stars ``cross``, which the comparison shows as "newly broken".)
Mass shares are measured as in ``tests/test_shortcut.py`` (mark box dilated by 4 px, shape box
by 2 px, share of the [0, 1] map's total mass).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.analysis.comparison import Agreement, compare
from core.cli import _arrays
from core.config import load_config
from core.data.datasets import open_dataset
from core.data.models import load_model
from core.explain.cam import grad_cam
from core.results.evaluate import evaluate
from tests.test_shortcut import (
    CONFIG,
    DATASET,
    MARK_DILATION,
    MARKED_CLASS,
    SHAPE_DILATION,
    Run,
    _dilate,
    _mass_share,
    _run,
)

SHORTCUT, CLEAN = "shapes-resnet (shortcut)", "shapes-resnet (clean)"


def _evaluation(name: str, cache: Path):  # type: ignore[no-untyped-def]
    config = load_config(CONFIG)
    model = load_model(config.model(name))
    return evaluate(model, open_dataset(config.dataset(DATASET), model.spec.classes), cache)


@pytest.fixture(scope="module")
def runs() -> tuple[Run, Run]:
    return _run(SHORTCUT), _run(CLEAN)


def test_clean_model_is_not_fooled(runs: tuple[Run, Run]) -> None:
    _, clean = runs
    unmarked = ~clean.marked
    accuracy = (clean.pred[unmarked] == clean.labels[unmarked]).float().mean().item()
    star = clean.classes.index(MARKED_CLASS)
    other_marked = clean.marked & (clean.labels != star)
    fooled = (clean.pred[other_marked] == star).float().mean().item()
    assert accuracy >= 0.9, f"clean model, unmarked images: accuracy {accuracy:.3f}"
    assert fooled <= 0.05, f"clean model calls {fooled:.3f} of marked other shapes {MARKED_CLASS}"


def test_marked_non_stars_are_fixed_and_the_maps_say_why(
    runs: tuple[Run, Run], tmp_path: Path
) -> None:
    shortcut, clean = runs
    a, b = (_arrays(_evaluation(name, tmp_path)) for name in (SHORTCUT, CLEAN))
    result = compare(a, b)
    assert len(result.paths) == len(shortcut.labels)
    paths = list(open_dataset(load_config(CONFIG).dataset(DATASET)).samples)
    position = {path: i for i, (path, _) in enumerate(paths)}  # row in the Run tensors
    rows = torch.tensor([position[str(p)] for p in result.paths])
    star = shortcut.classes.index(MARKED_CLASS)
    marked_other = (shortcut.marked & (shortcut.labels != star))[rows].numpy()
    fooled = marked_other & (result.pred_a == star)
    fixed = result.cell == Agreement.FIXED
    share_fixed = fixed[fooled].mean()
    assert share_fixed >= 0.6, f"only {share_fixed:.3f} of the fooled marked non-stars are fixed"
    assert marked_other[fixed].mean() >= 0.8  # and "fixed" is mostly them
    assert result.p_value() < 0.01  # more fixed (55) than newly broken (26), beyond chance

    chosen = rows[torch.from_numpy(fixed & marked_other)]
    size = shortcut.images.shape[-1]
    images = shortcut.images[chosen]
    maps_a = grad_cam(shortcut.model.module, images, shortcut.pred[chosen])  # star
    maps_b = grad_cam(clean.model.module, images, clean.pred[chosen])  # the true shape
    marks = _dilate(shortcut.mark_boxes[chosen], MARK_DILATION, size)
    shapes = _dilate(shortcut.shape_boxes[chosen], SHAPE_DILATION, size)
    a_mark, b_mark = _mass_share(maps_a, marks), _mass_share(maps_b, marks)
    a_shape, b_shape = _mass_share(maps_a, shapes), _mass_share(maps_b, shapes)
    a_looks = (a_mark > a_shape).float().mean()  # per image: which box holds more
    b_looks = (b_shape > b_mark).float().mean()
    print(f"A on mark {a_mark.mean():.3f}, on shape {a_shape.mean():.3f}; B on mark "
          f"{b_mark.mean():.3f}, on shape {b_shape.mean():.3f}; A mark > shape on {a_looks:.2f}, "
          f"B shape > mark on {b_looks:.2f} of {len(chosen)} images")  # fmt: skip
    assert a_mark.mean() >= 0.5 and a_mark.mean() >= 3 * b_mark.mean()
    assert b_shape.mean() >= 0.4 and b_shape.mean() >= 2 * a_shape.mean()
    assert a_looks >= 0.8 and b_looks >= 0.8
    assert np.all(result.pred_b[fixed & marked_other] == result.true[fixed & marked_other])

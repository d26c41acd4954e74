"""Map faithfulness, curves, per-layer Grad-CAM and the randomisation check, on small models.

The reference is pytorch-grad-cam's ``CamMultImageConfidenceChange`` with
``ClassifierOutputSoftmaxTarget``, called on the same images and maps (and on the inverted maps
for the removal half).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from core.analysis.badges import badge_text
from core.explain.cam import METHODS, grad_cam
from core.explain.faithfulness import (
    cell_index,
    deletion_insertion,
    faithfulness,
    grid_means,
    random_maps,
)
from core.explain.layer_trust import grad_cam_layers, layer_faithfulness, sample_rows
from core.explain.sanity import edge_map, randomisation_stages, sanity_check, spearman

torch.set_num_threads(2)
Setup = tuple[nn.Module, torch.Tensor, torch.Tensor]


def _small_resnet() -> nn.Module:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    model.eval()
    return model


@pytest.fixture(scope="module")
def setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = _small_resnet()
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(6, 3, 64, 64, generator=gen)
    with torch.no_grad():
        pred = model(images).argmax(1)
    return model, images, pred


def test_scores_equal_pytorch_grad_cam(setup: Setup) -> None:
    model, images, pred = setup
    other = (pred + 1) % 5
    classes = torch.stack([pred, other], 1)
    maps = grad_cam(model, images, classes, layer="layer3")
    assert maps.amax((2, 3)).min() > 0.5  # no comparison passes on blank maps
    ours = faithfulness(model, images, maps, classes)
    for k in range(2):
        targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes[:, k]]
        metric = CamMultImageConfidenceChange()
        keep = np.asarray(metric(images, maps[:, k].numpy(), targets, model)).ravel()
        remove = np.asarray(metric(images, 1 - maps[:, k].numpy(), targets, model)).ravel()
        np.testing.assert_allclose(ours.keep_change[:, k], keep, atol=1e-4)
        np.testing.assert_allclose(ours.remove_change[:, k], remove, atol=1e-4)
    with torch.no_grad():
        probs = model(images).softmax(1)
    np.testing.assert_allclose(ours.before, probs.gather(1, classes).numpy(), atol=1e-5)
    np.testing.assert_allclose(ours.score, -ours.remove_change / ours.before, rtol=1e-5)
    record = ours.record(0, 1)
    assert set(record) >= {"score", "before", "keep", "remove", "keep_change", "remove_change"}


def test_scores_of_full_and_empty_maps(setup: Setup) -> None:
    model, images, pred = setup
    ones = torch.ones(len(images), 64, 64)
    full = faithfulness(model, images, ones, pred)
    np.testing.assert_allclose(full.keep_change, 0, atol=1e-6)  # keeping everything: no change
    with torch.no_grad():
        blank = model(torch.zeros_like(images)).softmax(1).gather(1, pred[:, None])
    np.testing.assert_allclose(full.remove, blank.numpy(), atol=1e-5)  # removing all: the mean
    empty = faithfulness(model, images, torch.zeros_like(ones), pred)
    np.testing.assert_allclose(empty.score, 0, atol=1e-5)  # a map of nothing removes nothing


def test_badge_text() -> None:
    assert badge_text(0.624) == "drop 62 %"
    assert badge_text(-0.05) == "gain 5 %"
    assert badge_text(0.001) == "drop 0 %"
    assert badge_text(float("nan")) == "n/a"


def test_cells_and_random_maps_keep_the_values() -> None:
    index = cell_index((10, 7), (3, 2))
    assert index.shape == (10, 7) and set(index.unique().tolist()) == set(range(6))
    maps = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0)).repeat_interleave(
        4, -1
    )
    maps = maps.repeat_interleave(4, -2)  # 32×32 maps made of 8×8 blocks: cells are exact
    cells = grid_means(maps, (8, 8))
    shuffled = random_maps(maps, (8, 8), seed=3)
    assert shuffled.shape == maps.shape
    assert torch.equal(shuffled, random_maps(maps, (8, 8), seed=3))  # seeded
    assert not torch.equal(shuffled, random_maps(maps, (8, 8), seed=4))
    # the same cell values (up to the min-max rescaling), in another order
    lo, hi = cells.amin(-1, keepdim=True), cells.amax(-1, keepdim=True)
    scaled = ((cells - lo) / (hi - lo)).sort(-1).values
    moved = torch.nn.functional.interpolate(shuffled, size=(8, 8), mode="area").flatten(2)
    assert not torch.allclose(moved, ((cells - lo) / (hi - lo)), atol=0.05)
    assert torch.allclose(moved.sort(-1).values, scaled, atol=0.35)


def test_deletion_insertion_curves(setup: Setup) -> None:
    model, images, pred = setup
    cam_map = grad_cam(model, images[:1], pred[:1], layer="layer3")[0]
    curves = deletion_insertion(model, images[0], cam_map, int(pred[0]), (4, 4), seed=0)
    assert len(curves.fraction) == len(curves.deletion) == 17 == len(curves.random_insertion)
    with torch.no_grad():
        p = model(images[:1]).softmax(1)[0, pred[0]].item()
        p_zero = model(torch.zeros_like(images[:1])).softmax(1)[0, pred[0]].item()
    assert curves.deletion[0] == pytest.approx(p, abs=1e-5)
    assert curves.deletion[-1] == pytest.approx(p_zero, abs=1e-5)
    assert curves.random_deletion[-1] == pytest.approx(p_zero, abs=1e-5)
    assert curves.insertion[-1] == pytest.approx(p, abs=1e-5)
    assert curves.insertion[0] == pytest.approx(curves.random_insertion[0], abs=1e-6)
    assert 0 <= curves.deletion_auc <= 1 and 0 <= curves.insertion_auc <= 1
    assert set(curves.summary()) >= {"deletion_auc", "insertion_auc", "random_deletion_auc"}


def test_grad_cam_layers_equal_grad_cam(setup: Setup) -> None:
    model, images, pred = setup
    layers = ["conv1", "layer1.0.bn2", "layer2", "layer3.1", "layer4"]
    found = grad_cam_layers(model, images, pred, layers, batch_size=4)
    for name in layers:
        expected = grad_cam(model, images, pred, layer=name)
        torch.testing.assert_close(found[name], expected, atol=1e-5, rtol=0)
    scores = layer_faithfulness(model, images, pred, [("layer3", (4, 4)), ("layer4", (2, 2))])
    assert [s.layer for s in scores] == ["layer3", "layer4"]
    assert all(s.count == len(images) and np.isfinite(s.median) for s in scores)


def test_sample_rows_are_fixed() -> None:
    assert np.array_equal(sample_rows(1000, 64), sample_rows(1000, 64))
    assert len(sample_rows(10, 64)) == 10 and len(set(sample_rows(1000, 64))) == 64


def test_spearman() -> None:
    a = np.array([[1.0, 2, 3, 4], [1, 1, 1, 1]])
    np.testing.assert_allclose(spearman(a, a[:, ::-1] * 1.0 + 0), [-1.0, 0.0])
    np.testing.assert_allclose(spearman(a[:1], a[:1] ** 2), [1.0])


def test_randomisation_check_fails_edges_and_leaves_the_model_alone(
    setup: Setup,
) -> None:
    """(That Grad-CAM passes is checked on a trained sample model: tests/test_trust_samples.py;
    on random weights there is nothing learned for the check to destroy.)"""
    model, images, pred = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    stages = randomisation_stages(model, (3, 64, 64))
    assert stages == ["fc", "layer4", "layer3", "layer2", "layer1", "bn1", "conv1"]
    edges = sanity_check(model, images, pred, edge_map, "edges", None)
    assert not edges.passes and [s.randomised for s in edges.stages] == stages
    assert all(s.spearman > 0.99 for s in edges.stages)
    assert set(edges.to_dict()) == {"method", "layer", "stages", "passes"}

    def gradcam(m: nn.Module, x: torch.Tensor, c: torch.Tensor, layer: str | None) -> torch.Tensor:
        return METHODS["Grad-CAM"](m, x, c, layer=layer)

    sanity_check(model, images[:2], pred[:2], gradcam, "Grad-CAM", "layer4")
    after = model.state_dict()  # the check randomised a copy
    assert all(torch.equal(before[k], after[k]) for k in before)

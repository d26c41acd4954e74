"""What the faithfulness scores say on the shortcut sample (``shapes-resnet (shortcut)``).

On the marked non-star images the model calls star, the predicted-class Grad-CAM sits on the
mark (tests/test_shortcut.py); removing what it highlights must cost the model its confidence
far more than removing a random map of the same cells. Per layer, the default layer
(``layer4``) must score above ``conv1``, and Grad-CAM must pass the model-randomisation check
that a weight-independent edge map fails.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.explain.cam import METHODS, candidate_layers, find_target_layer, grad_cam
from core.explain.faithfulness import faithfulness, random_maps
from core.explain.layer_trust import layer_faithfulness, sample_rows
from core.explain.sanity import edge_map, sanity_check
from tests.test_shortcut import MARKED_CLASS, Run, _run

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def resnet() -> Run:
    return _run("shapes-resnet (shortcut)")


def _grids(run: Run) -> dict[str, tuple[int, int]]:
    found = candidate_layers(run.model.module, run.model.input_shape)
    return {i.name: (int(i.shape[1]), int(i.shape[2])) for i in found}


def test_fooled_images_predicted_maps_beat_random_maps(resnet: Run) -> None:
    star = resnet.classes.index(MARKED_CLASS)
    fooled = resnet.marked & (resnet.labels != star) & (resnet.pred == star)
    assert int(fooled.sum()) >= 20
    model, x, pred = resnet.model.module, resnet.images[fooled], resnet.pred[fooled]
    maps = grad_cam(model, x, pred)
    ours = faithfulness(model, x, maps, pred)
    rand = faithfulness(model, x, random_maps(maps, _grids(resnet)["layer4"], seed=0), pred)
    assert np.median(ours.score) >= 0.8, np.median(ours.score)  # measured 0.98
    assert np.median(rand.score) <= 0.2, np.median(rand.score)  # measured 0.00
    assert (ours.score > rand.score).mean() >= 0.9
    # pytorch-grad-cam's own metric (keep the map) agrees in direction on these images
    assert (ours.keep_change > rand.keep_change).mean() >= 0.75


def test_default_layer_is_more_faithful_than_conv1(resnet: Run) -> None:
    model = resnet.model.module
    default = find_target_layer(model, resnet.model.input_shape)
    rows = torch.as_tensor(sample_rows(len(resnet.images), 32))
    grids = _grids(resnet)
    scores = layer_faithfulness(
        model,
        resnet.images[rows],
        resnet.pred[rows],
        [(default, grids[default]), ("conv1", grids["conv1"])],
    )
    by_layer = {s.layer: s for s in scores}
    assert by_layer[default].median > by_layer["conv1"].median  # measured 0.98 vs 0.59
    assert by_layer[default].median > by_layer[default].random_median + 0.5


def test_grad_cam_passes_the_randomisation_check_and_edges_fail(resnet: Run) -> None:
    model = resnet.model.module
    rows = torch.as_tensor(sample_rows(len(resnet.images), 16))
    x, pred = resnet.images[rows], resnet.pred[rows]

    def gradcam(m: torch.nn.Module, xs: torch.Tensor, c: torch.Tensor, layer: str | None):  # type: ignore[no-untyped-def]
        return METHODS["Grad-CAM"](m, xs, c, layer=layer)

    report = sanity_check(model, x, pred, gradcam, "Grad-CAM", "layer4")
    assert report.passes
    assert report.stages[0].randomised == "fc" and report.stages[0].spearman < 0.5
    edges = sanity_check(model, x, pred, edge_map, "edges", None)
    assert not edges.passes

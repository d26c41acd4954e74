"""core.explain.cam.evaluation_maps / finish_maps: logits and both gallery maps from one
forward pass,
equal to model(x) and to grad_cam for the same classes, on the shortcut and the autograd path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import load_file
from torch import nn

import core.explain.cam
from core.explain.cam import evaluation_maps, finish_maps, grad_cam
from sample_models.digits_model import build as build_digits
from sample_models.shapes_models import convnet_shapes, resnet_shapes

torch.set_num_threads(2)

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"


def trained(model: nn.Module, weights: str) -> nn.Module:
    model.load_state_dict(load_file(SAMPLES / weights))
    return model


# name -> (builder, input shape (C, H, W)); the samples with their committed weights
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, int, int]]] = {
    "digits": (lambda: trained(build_digits(), "digits/weights.safetensors"), (1, 32, 32)),
    "shapes-resnet": (
        lambda: trained(resnet_shapes(), "shapes/resnet_shortcut.safetensors"),
        (3, 64, 64),
    ),
    "shapes-convnet": (
        lambda: trained(convnet_shapes(), "shapes/convnet.safetensors"),
        (3, 64, 64),
    ),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None, num_classes=7), (3, 64, 64)),
}


@pytest.fixture(params=["shortcut", "autograd"])
def grad_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "autograd":
        monkeypatch.setattr(core.explain.cam, "_is_gap_linear", lambda *args: False)
    return str(request.param)


def count_backward_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = torch.autograd.grad

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counted)
    return calls


def build(name: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    builder, shape = MODELS[name]
    torch.manual_seed(seed)
    model = builder().eval()
    x = torch.randn(6, *shape, generator=torch.Generator().manual_seed(seed + 1))
    return model, x


@pytest.mark.parametrize("name", list(MODELS))
def test_maps_equal_grad_cam_and_logits_equal_forward(
    name: str, grad_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, x = build(name)
    with torch.no_grad():
        expected_logits = model(x)
    pred = expected_logits.argmax(1)
    # half the labels right (-> runner-up), half wrong (-> true label)
    labels = torch.where(torch.arange(6) % 2 == 0, pred, (pred + 1) % expected_logits.shape[1])
    calls = count_backward_passes(monkeypatch)
    logits, raw = evaluation_maps(model, x, labels)
    if grad_path == "autograd" or name == "shapes-convnet":  # Flatten + Linear: always autograd
        assert len(calls) == 2
    else:
        assert calls == []  # GAP + Linear: no backward pass
    assert logits.dtype == raw.dtype == torch.float32
    assert raw.shape[:2] == (6, 2) and raw.shape[2:] != x.shape[2:]  # layer resolution
    torch.testing.assert_close(logits, expected_logits, atol=1e-6, rtol=0)
    runner_up = expected_logits.topk(2, 1).indices[:, 1]
    second = torch.where(labels == pred, runner_up, labels)
    size = (x.shape[2], x.shape[3])
    for column, classes in enumerate((pred, second)):
        reference = grad_cam(model, x, classes)
        maps = finish_maps(raw[:, column], size)
        assert maps.shape == reference.shape
        assert (reference.amax((1, 2)) > 0.5).sum() >= 4  # mostly not degenerate
        assert (maps - reference).abs().max() <= 1e-6


def test_raw_maps_are_before_relu_and_minmax() -> None:
    model, x = build("resnet18")
    _, raw = evaluation_maps(model, x, torch.zeros(6, dtype=torch.long))
    assert raw.min() < 0  # ReLU not applied
    assert raw.amax((2, 3)).max() != pytest.approx(1.0)  # not min-max scaled


def test_finish_maps_keeps_leading_dims_and_leaves_raw_unchanged() -> None:
    raw = torch.randn(3, 2, 5, 4, generator=torch.Generator().manual_seed(3))
    before = raw.clone()
    maps = finish_maps(raw, (10, 8))
    assert maps.shape == (3, 2, 10, 8)
    assert torch.equal(raw, before)
    assert torch.allclose(maps.amax((2, 3)), torch.ones(3, 2), atol=1e-5)
    assert maps.min() >= 0
    torch.testing.assert_close(finish_maps(raw[1, 0], (10, 8)), maps[1, 0])
    assert finish_maps(torch.zeros(0, 2, 5, 4), (10, 8)).shape == (0, 2, 10, 8)


def test_bad_labels_and_sizes_raise() -> None:
    model, x = build("digits")
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        evaluation_maps(model, x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="labels must be an integer tensor"):
        evaluation_maps(model, x, torch.zeros(6))
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 10\)"):
        evaluation_maps(model, x, torch.full((6,), 10))
    with pytest.raises(ValueError, match="size"):
        finish_maps(torch.zeros(2, 4, 4), (0, 8))
    with pytest.raises(ValueError, match="float tensor"):
        finish_maps(torch.zeros(4, dtype=torch.long), (8, 8))


def test_train_mode_is_refused() -> None:
    model, x = build("digits")
    with pytest.raises(ValueError, match="eval"):
        evaluation_maps(model.train(), x, torch.zeros(6, dtype=torch.long))

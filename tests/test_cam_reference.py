"""core.explain.cam against the reference implementations: pytorch-grad-cam and captum.

Random-init torchvision models (``weights=None``, fixed seeds). Their BatchNorm running
statistics are first set from one calibration batch (a standard recalibration; without it,
EfficientNet's random-init activations die out and its logits differ by ~1e-14, which makes every
map degenerate). Every compared map is checked to be non-trivial (max > 0.5), so no comparison
can pass vacuously.

At a layer whose output is modified in place later in the forward (DenseNet's ``features`` is
followed by ``F.relu(..., inplace=True)``; VGG's convolutions by ``ReLU(inplace=True)``; a ResNet
block's ``bn2`` by ``out += identity``), pytorch-grad-cam stores the modified values (it keeps
the output without copying) and weights them with the gradients of the unmodified output. There
the references are captum's ``LayerGradCam`` (which clones) and pytorch-grad-cam with an extra
hook that hands the rest of the network a clone, so that it keeps the true layer output.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import pytest
import torch
import torch.nn.functional as F
import torchvision
from captum.attr import LayerGradCam
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from core.explain.cam import cam, find_target_layer, grad_cam, grad_cam_pp

torch.set_num_threads(2)
TOL = 1e-4

# name -> (constructor, input size, expected target layer, layer output modified in place later)
MODELS: dict[str, tuple[Callable[[], nn.Module], int, str, bool]] = {
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 96, "layer4", False),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), 64, "layer4", False),
    "vgg16": (lambda: torchvision.models.vgg16(weights=None), 64, "features", False),
    "mobilenet_v3_small": (
        lambda: torchvision.models.mobilenet_v3_small(weights=None),
        96,
        "features",
        False,
    ),
    "efficientnet_b0": (
        lambda: torchvision.models.efficientnet_b0(weights=None),
        64,
        "features",
        False,
    ),
    "densenet121": (lambda: torchvision.models.densenet121(weights=None), 64, "features", True),
    "convnext_tiny": (
        lambda: torchvision.models.convnext_tiny(weights=None),
        64,
        "features",
        False,
    ),
    "conv_blocks": (lambda: conv_blocks(), 64, "3", False),
}


def conv_blocks() -> nn.Module:
    """conv -> ReLU -> BatchNorm -> MaxPool -> Dropout blocks (32-64-128-256), Flatten + Linear."""
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (32, 64, 128, 256):
        conv = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c_out)]
        layers.append(nn.Sequential(*conv, nn.MaxPool2d(2), nn.Dropout(0.1)))
        c_in = c_out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(256 * 4 * 4, 10))


def calibrate_batchnorm(model: nn.Module, batch: torch.Tensor) -> nn.Module:
    """Set every BatchNorm's running statistics to those of ``batch``; return the model in eval."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch gives exactly its statistics
    model.train()
    with torch.no_grad():
        model(batch)
    return model.eval()


@cache
def setup(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The model (eval), 2 inputs and [2, 2] classes: predicted and another non-trivial class."""
    ctor, size, _, _ = MODELS[name]
    torch.manual_seed(0)
    model = ctor()
    gen = torch.Generator().manual_seed(1)
    calibrate_batchnorm(model, torch.randn(4, 3, size, size, generator=gen))
    x = torch.randn(2, 3, size, size, generator=gen)
    with torch.no_grad():
        ranked = model(x).argsort(1, descending=True)
    return model, x, torch.stack([ranked[:, 0], other_class(model, x, ranked)], 1)


def other_class(model: nn.Module, x: torch.Tensor, ranked: torch.Tensor) -> torch.Tensor:
    """Per image, the first class among ranks 2..6 whose Grad-CAM is not degenerate (a random-init
    net gives all-zero Grad-CAMs for many classes)."""
    candidates = ranked[:, 1:6]
    ok = grad_cam(model, x, candidates).amax((2, 3)) > 0.5
    assert ok.any(1).all(), "no non-degenerate class found"
    return candidates.gather(1, ok.int().argmax(1, keepdim=True))[:, 0]


def normalise(raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """pytorch-grad-cam's two-stage normalisation, written out for captum's raw maps."""

    def minmax(m: torch.Tensor) -> torch.Tensor:
        flat = m.flatten(1)
        flat = flat - flat.min(1, keepdim=True).values
        return (flat / (1e-7 + flat.max(1, keepdim=True).values)).view(m.shape)

    maps = minmax(raw.clamp_min(0))
    up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)
    return minmax(up[:, 0])


def pgc_maps(
    method: type,
    model: nn.Module,
    layer: nn.Module,
    x: torch.Tensor,
    classes: torch.Tensor,
    *,
    guard_in_place: bool = False,
) -> torch.Tensor:
    """pytorch-grad-cam maps [N, K, H, W]: one call on the images repeated K times."""
    n, k = classes.shape
    targets = [ClassifierOutputTarget(int(c)) for c in classes.T.reshape(-1)]
    with method(model, target_layers=[layer]) as explainer:
        # registered after pytorch-grad-cam's hooks: it still sees (and keeps) the true output
        guard = layer.register_forward_hook(lambda m, i, o: o.clone()) if guard_in_place else None
        try:
            maps = explainer(x.repeat(k, 1, 1, 1), targets)
        finally:
            if guard is not None:
                guard.remove()
    model.zero_grad(set_to_none=True)  # pytorch-grad-cam's backward() fills parameter .grad
    return torch.from_numpy(maps).view(k, n, *maps.shape[1:]).transpose(0, 1)


def captum_maps(
    model: nn.Module, layer: nn.Module, x: torch.Tensor, classes: torch.Tensor
) -> torch.Tensor:
    explainer = LayerGradCam(model, layer)
    raw = [explainer.attribute(x, target=classes[:, k])[:, 0] for k in range(classes.shape[1])]
    return torch.stack([normalise(r.detach(), tuple(x.shape[-2:])) for r in raw], 1)


def assert_nontrivial(maps: torch.Tensor) -> None:
    assert maps.amax((-2, -1)).min() > 0.5, "a degenerate map would make the comparison vacuous"


@pytest.mark.parametrize("name", list(MODELS))
def test_detected_layer(name: str) -> None:
    model, x, _ = setup(name)
    assert find_target_layer(model, x.shape[1:]) == MODELS[name][2]


@pytest.mark.parametrize("name", list(MODELS))
def test_grad_cam_and_grad_cam_pp_match_pytorch_grad_cam(name: str) -> None:
    model, x, classes = setup(name)
    layer_name, in_place = MODELS[name][2], MODELS[name][3]
    layer = model.get_submodule(layer_name)
    ours = grad_cam(model, x, classes)  # auto-detected layer: the same module
    ours_pp = grad_cam_pp(model, x, classes)
    assert_nontrivial(ours)
    assert_nontrivial(ours_pp)
    ref = pgc_maps(GradCAM, model, layer, x, classes, guard_in_place=in_place)
    ref_pp = pgc_maps(GradCAMPlusPlus, model, layer, x, classes, guard_in_place=in_place)
    assert (ours - ref).abs().max() <= TOL
    assert (ours_pp - ref_pp).abs().max() <= TOL


@pytest.mark.parametrize(
    ("name", "layer_name"),
    [("densenet121", "features"), ("vgg16", "features.28"), ("resnet18", "layer4.1.bn2")],
)
def test_layers_modified_in_place_match_captum(name: str, layer_name: str) -> None:
    model, x, classes = setup(name)
    layer = model.get_submodule(layer_name)
    ours = grad_cam(model, x, classes, layer=layer_name)
    ref = captum_maps(model, layer, x, classes)
    assert_nontrivial(ref[:, :1])  # the predicted-class maps
    assert (ours - ref).abs().max() <= TOL


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "conv_blocks"])
def test_captum_agrees_at_ordinary_layers(name: str) -> None:
    model, x, classes = setup(name)
    layer = model.get_submodule(MODELS[name][2])
    ours = grad_cam(model, x, classes)
    assert_nontrivial(ours)
    assert (ours - captum_maps(model, layer, x, classes)).abs().max() <= TOL


def test_grad_cam_equals_cam_on_resnet18() -> None:
    model, x, classes = setup("resnet18")
    expected = grad_cam(model, x, classes)
    assert_nontrivial(expected)
    assert (cam(model, x, classes) - expected).abs().max() <= 1e-5


def test_cam_refuses_mobilenet_head() -> None:
    model, x, classes = setup("mobilenet_v3_small")
    with pytest.raises(ValueError, match=r"Linear 'classifier\.3'.*Use Grad-CAM"):
        cam(model, x, classes)


def test_one_by_one_warning_on_resnet18_at_32px() -> None:
    model, _, _ = setup("resnet18")
    x = torch.randn(2, 3, 32, 32)
    assert find_target_layer(model, (3, 32, 32)) == "layer3"  # layer4 is 1x1 at 32 px
    with pytest.warns(UserWarning, match="1x1 feature map"):
        grad_cam(model, x, 0, layer="layer4")

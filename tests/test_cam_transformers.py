"""core.explain.cam on transformers and timm models against pytorch-grad-cam with its documented
``reshape_transform`` (prefix tokens dropped, tokens read as a row-major grid; Swin's
channels-last output permuted).

Random weights (``pretrained=False`` / ``weights=None``), eval mode, two images per model, one
model build per module (``scope="module"`` fixtures); the ViTs are built for 112×112 input (a 7×7
grid: the grid comes from the input size, not the model's name) to keep the suite fast.
torchvision's ViT initialises its head to zeros (every gradient would be zero): it is
re-initialised here. Every reference map must have a
per-map std > 0.05, so no comparison can pass on blank maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import timm
import torch
import torchvision
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import core.explain.cam
from core.explain.cam import (
    cam,
    candidate_layers,
    evaluation_maps,
    find_target_layer,
    finish_maps,
    grad_cam,
    grad_cam_pp,
    layer_activations,
)

torch.set_num_threads(2)
TOL = 1e-4
pytestmark = pytest.mark.slow  # builds full-size models; part of the normal suite

Reshape = Callable[[torch.Tensor], torch.Tensor] | None


def tokens(prefix: int, grid: int) -> Reshape:
    """pytorch-grad-cam's ``vit_reshape_transform`` with ``prefix`` leading tokens dropped."""

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return t[:, prefix:].reshape(t.size(0), grid, grid, t.size(2)).permute(0, 3, 1, 2)

    return reshape


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's Swin recipe for torchvision's [B, H, W, C] outputs."""
    return t.permute(0, 3, 1, 2)


def vit_b_16() -> nn.Module:
    model = torchvision.models.vit_b_16(weights=None, num_classes=10, image_size=112)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision's head starts at zeros
    return model


def timm_model(name: str, **kwargs: object) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=10, **kwargs)


# name -> (builder, input size, expected target layer, reference reshape, grid, prefix tokens)
CASES: dict[str, tuple[Callable[[], nn.Module], int, str, Reshape, str]] = {
    "tv_vit_b_16": (vit_b_16, 112, "encoder.layers.encoder_layer_11.ln_1", tokens(1, 7), "tokens"),
    "tv_swin_t": (
        lambda: torchvision.models.swin_t(weights=None, num_classes=10),
        224,
        "features.7.1.norm1",
        channels_last,
        "channels_last",
    ),
    "tv_maxvit_t": (
        lambda: torchvision.models.maxvit_t(weights=None, num_classes=10),
        224,
        "blocks.3",
        None,
        "map",
    ),
    "timm_vit_small": (
        timm_model("vit_small_patch16_224", img_size=112),
        112,
        "blocks.11.norm1",
        tokens(1, 7),
        "tokens",
    ),
    "timm_vit_small_reg4": (
        timm_model("vit_small_patch16_224", reg_tokens=4, img_size=112),
        112,
        "blocks.11.norm1",
        tokens(5, 7),
        "tokens",
    ),
    "timm_deit_distilled": (
        timm_model("deit_small_distilled_patch16_224", img_size=112),
        112,
        "blocks.11.norm1",
        tokens(2, 7),
        "tokens",
    ),
    "timm_convnext_tiny": (timm_model("convnext_tiny"), 96, "stages", None, "map"),
    "timm_efficientnet_b0": (timm_model("efficientnet_b0"), 96, "bn2", None, "map"),
}


@dataclass
class Case:
    name: str
    model: nn.Module
    x: torch.Tensor
    layer: str
    reshape: Reshape
    layout: str
    classes: torch.Tensor  # [2, 2]: predicted, another class
    cache: dict[str, torch.Tensor] = field(default_factory=dict)

    def ours(self) -> torch.Tensor:
        """core.explain.cam.grad_cam's maps for ``classes``, computed once per case."""
        if "ours" not in self.cache:
            self.cache["ours"] = grad_cam(self.model, self.x, self.classes)
        return self.cache["ours"]


@pytest.fixture(scope="module", params=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    builder, size, layer, reshape, layout = CASES[request.param]
    torch.manual_seed(0)
    model = builder().eval()
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        pred = model(x).argmax(1)
    classes = torch.stack([pred, (pred + 3) % 10], 1)
    return Case(request.param, model, x, layer, reshape, layout, classes)


def reference(case: Case, method: type[GradCAM]) -> torch.Tensor:
    """pytorch-grad-cam's maps [2, K, H, W] for ``case.classes``, one call per class column;
    asserts that they are not degenerate (Grad-CAM++ zeroes negative gradients, so only the
    predicted-class maps are required to be non-trivial there)."""
    layer = case.model.get_submodule(case.layer)
    maps = []
    with method(case.model, [layer], reshape_transform=case.reshape) as ref:
        for k in range(case.classes.shape[1]):
            targets = [ClassifierOutputTarget(int(c)) for c in case.classes[:, k]]
            maps.append(torch.from_numpy(ref(case.x, targets)))
    result = torch.stack(maps, 1)
    checked = result if method is GradCAM else result[:, :1]
    assert (checked.flatten(2).std(2) > 0.05).all(), "reference maps are degenerate"
    return result


def test_target_layer_is_the_references_choice(case: Case) -> None:
    assert find_target_layer(case.model, case.x.shape[1:]) == case.layer


def test_grad_cam_equals_pytorch_grad_cam(case: Case) -> None:
    assert (case.ours() - reference(case, GradCAM)).abs().max() <= TOL


def test_grad_cam_pp_equals_pytorch_grad_cam(case: Case) -> None:
    if case.layout == "map":
        pytest.skip("Grad-CAM++ on plain maps: tests/test_cam_reference.py")
    ours = grad_cam_pp(case.model, case.x, case.classes)
    assert (ours - reference(case, GradCAMPlusPlus)).abs().max() <= TOL


def test_evaluation_maps_equal_grad_cam(case: Case) -> None:
    labels = case.classes[:, 1]  # wrong labels: the second map is the label's
    logits, raw = evaluation_maps(case.model, case.x, labels)
    with torch.no_grad():
        torch.testing.assert_close(logits, case.model(case.x), atol=1e-5, rtol=1e-5)
    maps = finish_maps(raw, tuple(case.x.shape[2:]))  # type: ignore[arg-type]
    assert (maps - case.ours()).abs().max() <= 1e-6


def test_candidate_layers_list_the_target_with_its_grid(case: Case) -> None:
    layers = {info.name: info for info in candidate_layers(case.model, case.x.shape[1:])}
    info = layers[case.layer]
    assert info.layout == case.layout
    acts = layer_activations(case.model, case.x[0], case.layer, top_n=3)
    assert info.shape[1:] == acts.maps.shape[1:] and info.shape[1] > 1
    if case.reshape is not None:  # the grid the reference reshape uses
        out: list[torch.Tensor] = []
        handle = case.model.get_submodule(case.layer).register_forward_hook(
            lambda m, i, o: out.append(o)
        )
        try:
            with torch.no_grad():
                case.model(case.x[:1])
        finally:
            handle.remove()
        assert case.reshape(out[0]).shape[1:] == info.shape


def test_class_token_heads_never_take_the_shortcut(
    case: Case, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case.layout != "tokens":
        pytest.skip("no prefix tokens")

    def refuse(*args: object) -> None:
        raise AssertionError("the GAP + Linear shortcut fired on a class-token head")

    monkeypatch.setattr(core.explain.cam, "_is_gap_linear", refuse)
    monkeypatch.setattr(core.explain.cam, "_gap_linear_grads", refuse)
    grad_cam(case.model, case.x[:1], 0)
    with pytest.raises(ValueError, match="class/distillation/register token"):
        cam(case.model, case.x[:1], 0)


class ClassTokenIsTheMean(nn.Module):
    """Tokens [B, 1 + 16, C] whose class token equals the mean of the patch tokens, and a head on
    the class token: the values look like GAP + Linear, but the patch tokens' gradient is zero
    (the class token is read from the layer's output, not recomputed from the patches)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_size = 4
        self.embed = nn.Conv2d(3, 8, 4, stride=4)
        self.tokens = nn.Identity()  # the target layer
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.embed(x).flatten(2).transpose(1, 2)
        seq = self.tokens(torch.cat([patches.mean(1, keepdim=True), patches], 1))
        return self.head(seq[:, 0])


def test_a_class_token_equal_to_the_patch_mean_does_not_fool_the_shortcut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    torch.manual_seed(0)
    model = ClassTokenIsTheMean().eval()
    x = torch.randn(2, 3, 16, 16)
    maps = grad_cam(model, x, torch.tensor([[0, 1]] * 2), layer="tokens")
    assert torch.equal(maps, torch.zeros_like(maps))  # autograd: no gradient on patch tokens
    with pytest.raises(ValueError, match="token"):
        cam(model, x, 0, layer="tokens")


def test_channels_last_gap_head_takes_the_shortcut_and_equals_cam(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Swin's final norm is [B, H, W, C] and its head is avgpool + Linear: Grad-CAM equals CAM,
    and the shortcut (no backward pass) gives the same maps as autograd."""
    torch.manual_seed(0)
    model = torchvision.models.swin_t(weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    classes = torch.tensor([[0, 1], [2, 3]])
    grads: list[int] = []
    original = torch.autograd.grad
    monkeypatch.setattr(
        torch.autograd, "grad", lambda *a, **k: grads.append(1) or original(*a, **k)
    )
    fast = grad_cam(model, x, classes, layer="norm")
    assert grads == []
    assert (fast - cam(model, x, classes, layer="norm")).abs().max() <= 1e-5
    monkeypatch.setattr(core.explain.cam, "_is_gap_linear", lambda *args: False)
    assert (fast - grad_cam(model, x, classes, layer="norm")).abs().max() <= 1e-5
    assert len(grads) == 2
    assert (fast.flatten(2).std(2) > 0.05).all()

"""Behaviour of core.explain.cam and core.explain.overlay: hand-computed maps, API contract,
safety, threads."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import core.explain.cam
from core.explain.cam import (
    METHODS,
    _Resizer,  # the normalisation, checked against F.interpolate + min-max
    cam,
    candidate_layers,
    find_target_layer,
    grad_cam,
    grad_cam_pp,
    layer_activations,
    saliency,
)
from core.explain.overlay import colormap_lut, overlay
from sample_models.digits_model import build as build_digits

torch.set_num_threads(2)

# ------------------------------------------------------------------ models

W_HEAD = [[2.0, 1.0], [0.5, -1.0], [-1.0, -0.5]]  # 3 classes over 2 channels


def tiny_model(stride: int = 1) -> nn.Module:
    """Identity 1x1 conv (2 channels) -> GAP -> Linear with fixed weights: CAMs by hand."""
    conv = nn.Conv2d(2, 2, 1, stride=stride, bias=False)
    head = nn.Linear(2, 3)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2)[:, :, None, None])
        head.weight.copy_(torch.tensor(W_HEAD))
        head.bias.copy_(torch.tensor([0.3, -0.2, 0.1]))
    return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head).eval()


def tiny_input() -> torch.Tensor:
    """Channel 0 is P[i, j] = 4i + j, channel 1 its transpose 4j + i (4x4)."""
    p = torch.arange(16.0).view(4, 4)
    return torch.stack([p, p.T])[None]


def conv_blocks(channels: tuple[int, ...] = (8, 16, 16), nested: bool = True) -> nn.Module:
    """conv -> ReLU -> BatchNorm -> MaxPool -> Dropout blocks, Flatten + Linear (5 classes)."""
    torch.manual_seed(0)
    blocks: list[nn.Module] = []
    c_in = 3
    for c_out in channels:
        block = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(c_out)]
        blocks.append(nn.Sequential(*block, nn.MaxPool2d(2), nn.Dropout(0.1)))
        c_in = c_out
    side = 32 // 2 ** len(channels)
    head = [nn.Flatten(), nn.Linear(c_in * side * side, 5)]
    if nested:
        return nn.Sequential(*blocks, *head).eval()
    return nn.Sequential(*[m for b in blocks for m in b], *head).eval()


def gap_cnn() -> nn.Module:
    """Small GAP + Linear CNN with 8x8 last map at 32px (like the digits sample, 3 channels)."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 6),
    ).eval()


def hook_state(model: nn.Module) -> dict[str, tuple[list[int], list[int], list[int]]]:
    return {
        name: (list(m._forward_hooks), list(m._forward_pre_hooks), list(m._backward_hooks))
        for name, m in model.named_modules()
    }


def count_forwards(module: nn.Module) -> tuple[list[int], torch.utils.hooks.RemovableHandle]:
    sizes: list[int] = []
    handle = module.register_forward_hook(lambda m, i, o: sizes.append(len(i[0])))
    return sizes, handle


@pytest.fixture(params=["shortcut", "autograd"])
def grad_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the GAP + Linear shortcut (gradients W[k] / hw, no backward pass) and
    again with it turned off, so that autograd computes every gradient."""
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


# ------------------------------------------------------------------ hand-computed values

IJ = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")


def test_grad_cam_hand_computed(grad_path: str) -> None:
    i, j = IJ
    maps = grad_cam(tiny_model(), tiny_input(), torch.tensor([[0, 1, 2]]), layer="0")[0]
    # class 0: weights (2, 1)/16 -> 2P + P^T = 9i + 6j, min-max -> (3i + 2j)/15
    torch.testing.assert_close(maps[0], (3 * i + 2 * j) / 15, atol=1e-5, rtol=0)
    # class 1: (0.5P - P^T)/16 = (i - 3.5j)/16 > 0 only at j = 0 -> i/3 there
    torch.testing.assert_close(maps[1], torch.where(j == 0, i / 3, 0.0), atol=1e-5, rtol=0)
    # class 2: -(P + 0.5P^T)/16 <= 0 everywhere -> the map stays exactly zero
    assert torch.equal(maps[2], torch.zeros(4, 4))


def test_grad_cam_hand_computed_with_resize(grad_path: str) -> None:
    # stride 2: layer map P[::2, ::2] etc.; class 0 -> 2A0 + A1 = [[0, 12], [18, 30]] -> minmax
    # [[0, .4], [.6, 1]] = 0.6 r + 0.4 c; a 2 -> 4 bilinear resize (half-pixel centres) samples
    # each axis at [0, .25, .75, 1].
    r = torch.tensor([0.0, 0.25, 0.75, 1.0])
    expected = 0.6 * r[:, None] + 0.4 * r[None, :]
    maps = grad_cam(tiny_model(stride=2), tiny_input(), 0, layer="0")
    assert maps.shape == (1, 4, 4)
    torch.testing.assert_close(maps[0], expected, atol=1e-5, rtol=0)


def test_grad_cam_pp_hand_computed(grad_path: str) -> None:
    i, j = IJ
    p, pt = 4 * i + j, 4 * j + i

    def weight(g: float, sum_a: float = 120.0) -> float:  # sum of P = sum of P^T = 120
        aij = g * g / (2 * g * g + sum_a * g**3 + 1e-6)
        return 16 * max(g, 0.0) * aij  # 16 positions with the same gradient

    maps = grad_cam_pp(tiny_model(), tiny_input(), torch.tensor([[0, 1]]), layer="0")[0]
    w0, w1 = weight(2 / 16), weight(1 / 16)
    raw0 = w0 * p + w1 * pt
    torch.testing.assert_close(maps[0], raw0 / raw0.max(), atol=1e-5, rtol=0)
    # class 1: the gradient of channel 1 is negative -> weight 0 -> the map is P / 15
    torch.testing.assert_close(maps[1], p / 15, atol=1e-5, rtol=0)
    # and it is not Grad-CAM's map
    assert (maps[0] - grad_cam(tiny_model(), tiny_input(), 0, layer="0")[0]).abs().max() > 0.01


def test_cam_hand_computed_and_equal_to_grad_cam(grad_path: str) -> None:
    i, j = IJ
    classes = torch.tensor([[0, 1, 2]])
    maps = cam(tiny_model(), tiny_input(), classes, layer="0")[0]
    torch.testing.assert_close(maps[0], (3 * i + 2 * j) / 15, atol=1e-5, rtol=0)
    reference = grad_cam(tiny_model(), tiny_input(), classes, layer="0")[0]
    assert (maps - reference).abs().max() <= 1e-5


def test_grad_cam_equals_cam_on_gap_linear_cnn(grad_path: str) -> None:
    model = gap_cnn()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    classes = torch.arange(6).repeat(4, 1)
    expected = cam(model, x, classes)
    maps = grad_cam(model, x, classes)
    assert (maps.amax((2, 3)) > 0.5).sum() >= 12  # most maps are not degenerate
    assert (maps - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("method", [grad_cam, grad_cam_pp])
def test_gap_linear_shortcut_equals_autograd(method, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    model = build_digits().eval()
    x = torch.randn(6, 1, 32, 32, generator=torch.Generator().manual_seed(4))
    classes = torch.randint(0, 10, (6, 3), generator=torch.Generator().manual_seed(5))
    calls = count_backward_passes(monkeypatch)
    fast = method(model, x, classes)
    assert calls == []  # GAP + Linear head: gradients without a backward pass
    monkeypatch.setattr(core.explain.cam, "_is_gap_linear", lambda *args: False)
    slow = method(model, x, classes)
    assert len(calls) == 3  # one backward pass per class column
    assert (fast - slow).abs().max() <= 1e-5


def gap_relu_linear() -> tuple[nn.Module, str]:
    """conv -> BatchNorm (target, negative values) -> GAP -> ReLU -> Linear: the Linear's input
    is not the mean of the layer, so the gradient is not W[k] / hw."""
    torch.manual_seed(8)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.ReLU(),
        nn.Linear(8, 4),
    ).eval()
    with torch.no_grad():
        model[1].bias.copy_(torch.linspace(-1, 1, 8))  # some channel means below zero
    return model, "1"


@pytest.mark.parametrize("head", ["flatten_linear", "softmax_after", "relu_between"])
def test_other_heads_take_the_autograd_path(head: str, monkeypatch: pytest.MonkeyPatch) -> None:
    layer = None
    if head == "flatten_linear":
        model: nn.Module = conv_blocks()
    elif head == "softmax_after":
        model = nn.Sequential(gap_cnn(), nn.Softmax(1)).eval()
    else:
        model, layer = gap_relu_linear()
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    calls = count_backward_passes(monkeypatch)
    maps = grad_cam(model, x, torch.tensor([[0, 1]] * 5), layer=layer)
    assert len(calls) == 2
    if head == "relu_between":  # the shortcut's maps would be wrong here
        shortcut = cam(
            nn.Sequential(*model[:4], model[5]).eval(), x, torch.tensor([[0, 1]] * 5), layer="1"
        )
        assert (maps - shortcut).abs().max() > 0.05


def test_cam_rejects_heads_that_are_not_gap_linear() -> None:
    with pytest.raises(ValueError, match="Grad-CAM"):  # Flatten + Linear over an 4x4 map
        cam(conv_blocks(), torch.randn(2, 3, 32, 32), 0)
    extra = nn.Sequential(gap_cnn(), nn.Softmax(1)).eval()  # Linear output is not the output
    with pytest.raises(ValueError, match="not the model output"):
        cam(extra, torch.randn(2, 3, 32, 32), 0)


def test_saliency_of_linear_model_is_its_weight() -> None:
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5)).eval()
    x = torch.randn(2, 3, 8, 8)
    maps = saliency(model, x, torch.tensor([[1, 4], [2, 2]]))
    assert maps.shape == (2, 2, 8, 8)
    for n, classes in enumerate([[1, 4], [2, 2]]):
        for k, c in enumerate(classes):
            grad = model[1].weight[c].detach().view(3, 8, 8).abs().amax(0)
            expected = (grad - grad.min()) / (1e-7 + grad.max() - grad.min())
            torch.testing.assert_close(maps[n, k], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("src", "dst"), [((7, 7), (224, 224)), ((2, 3), (64, 96)), ((5, 4), (13, 9)), ((6, 6), (4, 5))]
)
def test_normalisation_equals_resize_then_minmax(
    src: tuple[int, int], dst: tuple[int, int]
) -> None:
    gen = torch.Generator().manual_seed(6)
    raw = torch.randn(40, *src, generator=gen) * torch.logspace(-6, 2, 40)[:, None, None]
    raw[0] = -1.0  # all negative: stays all zero

    def minmax(m: torch.Tensor) -> torch.Tensor:  # pytorch-grad-cam's scale_cam_image
        m = m - m.amin((1, 2), keepdim=True)
        return m / (1e-7 + m.amax((1, 2), keepdim=True))

    small = minmax(raw.clamp_min(0))
    up = torch.nn.functional.interpolate(small[:, None], size=dst, mode="bilinear")[:, 0]
    expected = minmax(up)
    out = torch.empty(40, *dst)
    _Resizer.build(src, dst, out.device)(raw, out)
    assert (out - expected).abs().max() <= 1e-6
    assert out.min() >= 0 and out.max() <= 1 and torch.equal(out[0], torch.zeros(dst))


# ------------------------------------------------------------------ API contract


@pytest.mark.parametrize("name", list(METHODS))
def test_methods_shapes_and_range(name: str) -> None:
    model = gap_cnn()
    x = torch.randn(3, 3, 32, 32)
    one = METHODS[name](model, x, torch.tensor([0, 5, 2]), layer=None, batch_size=2)
    many = METHODS[name](model, x, torch.tensor([[0, 1], [5, 4], [2, 2]]), batch_size=2)
    same = METHODS[name](model, x, 3)
    assert one.shape == (3, 32, 32) and many.shape == (3, 2, 32, 32) and same.shape == (3, 32, 32)
    for maps in (one, many, same):
        assert maps.dtype == torch.float32
        assert maps.min() >= 0 and maps.max() <= 1
    assert same.amax((1, 2)).min() > 0.5
    torch.testing.assert_close(many[:, 0], one, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", [grad_cam, grad_cam_pp, saliency])
def test_nk_classes_use_one_forward_and_equal_separate_calls(method) -> None:
    model = gap_cnn()
    x = torch.randn(5, 3, 32, 32)
    classes = torch.tensor([[0, 3, 5], [1, 1, 2], [4, 0, 0], [5, 2, 1], [3, 3, 3]])
    sizes, handle = count_forwards(model)
    try:
        together = method(model, x, classes, layer="8")
    finally:
        handle.remove()
    assert sizes == [5]  # exactly one forward pass for all three class columns
    for k in range(3):
        separate = method(model, x, classes[:, k], layer="8")
        torch.testing.assert_close(together[:, k], separate, atol=1e-6, rtol=0)


def test_large_requests_are_chunked() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 8, stride=8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    images = torch.randn(1, 3, 224, 224).expand(1024, -1, -1, -1)  # no extra input memory
    sizes, handle = count_forwards(model)
    try:
        maps = grad_cam(model, images, 1, layer="1", batch_size=64)
    finally:
        handle.remove()
    assert sizes == [64] * 16
    assert maps.shape == (1024, 224, 224)
    torch.testing.assert_close(maps[-1], maps[0])


def test_bad_arguments_raise() -> None:
    model = gap_cnn()
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="classes"):
        grad_cam(model, x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="classes"):
        grad_cam(model, x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        grad_cam(model, x, 6)
    with pytest.raises(ValueError, match="images"):
        grad_cam(model, x[0], 0)
    shared = nn.ReLU()
    twice = nn.Sequential(nn.Conv2d(3, 4, 3), shared, nn.Conv2d(4, 4, 3), shared)
    model = nn.Sequential(twice, nn.Flatten(), nn.Linear(4 * 28 * 28, 2)).eval()
    with pytest.raises(ValueError, match="ran 2 times"):  # a shared module
        grad_cam(model, x, 0, layer="0.1")


def test_works_under_no_grad_and_inference_mode() -> None:
    model = gap_cnn()
    x = torch.randn(2, 3, 32, 32)
    expected = {name: fn(model, x, torch.tensor([[1, 2], [3, 4]])) for name, fn in METHODS.items()}
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            for name, fn in METHODS.items():
                assert torch.equal(fn(model, x, torch.tensor([[1, 2], [3, 4]])), expected[name])
            assert not torch.is_grad_enabled()


# ------------------------------------------------------------------ target layer


def test_layer_detection_on_sequential_models() -> None:
    assert find_target_layer(conv_blocks(), (3, 32, 32)) == "2"  # the last block
    flat = conv_blocks(nested=False)  # the last 4-D module: the last block's Dropout
    assert find_target_layer(flat, (3, 32, 32)) == "14"
    assert isinstance(flat[14], nn.Dropout)
    assert find_target_layer(build_digits(num_classes=10).eval(), (1, 32, 32)) == "14"
    assert find_target_layer(gap_cnn(), (1, 3, 32, 32)) == "8"  # (N, C, H, W) also accepted


def test_layer_override_and_unknown_layer() -> None:
    model = gap_cnn()
    x = torch.randn(2, 3, 32, 32)
    auto = grad_cam(model, x, 1)
    shallow = grad_cam(model, x, 1, layer="5")
    assert shallow.shape == auto.shape and (shallow - auto).abs().max() > 0.05
    nested = conv_blocks()
    dotted = grad_cam(nested, x, 2, layer="1.2")  # a module inside a block
    assert dotted.shape == (2, 32, 32) and dotted.amax((1, 2)).min() > 0.5
    with pytest.raises(ValueError, match=r"unknown layer 'blocks\.9'.*valid names include"):
        grad_cam(nested, x, 0, layer="blocks.9")


def test_candidate_layers_lists_4d_outputs_in_forward_order() -> None:
    infos = candidate_layers(conv_blocks(), (3, 32, 32))
    names = [i.name for i in infos]
    assert names == [
        f"{b}.{m}" if m >= 0 else str(b) for b in range(3) for m in (0, 1, 2, 3, 4, -1)
    ]
    assert infos[0].type_name == "Conv2d" and infos[0].shape == (8, 32, 32)
    assert infos[-1].type_name == "Sequential" and infos[-1].shape == (16, 4, 4)


def test_one_by_one_map_warns() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2),
        nn.ReLU(),
        nn.Conv2d(4, 4, 15),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4, 2),
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    assert find_target_layer(model, (3, 32, 32)) == "1"  # the 1x1 maps are skipped
    with pytest.warns(UserWarning, match="1x1"):
        maps = grad_cam(model, x, 0, layer="3")
    assert maps.shape == (2, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        grad_cam(model, x, 0)


# ------------------------------------------------------------------ safety


class Exploding(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


@pytest.mark.parametrize("name", list(METHODS))
def test_no_side_effects_on_model(name: str) -> None:
    model = gap_cnn()
    model[0].weight.requires_grad_(False)  # a partly frozen model
    flags = [p.requires_grad for p in model.parameters()]
    before = hook_state(model)
    stats = model[4].running_mean.clone()
    x = torch.randn(3, 3, 32, 32)
    METHODS[name](model, x, torch.tensor([[0, 1], [2, 3], [4, 5]]))
    assert hook_state(model) == before
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not any(m.training for m in model.modules())
    assert torch.equal(model[4].running_mean, stats)
    assert torch.is_grad_enabled()


@pytest.mark.parametrize("name", list(METHODS))
def test_hooks_removed_and_grad_mode_restored_when_the_model_fails(name: str) -> None:
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 6)]
    model = nn.Sequential(gap_cnn()[:9], Exploding(), *head).eval()
    before = hook_state(model)
    for grad_mode in (True, False):
        with torch.set_grad_enabled(grad_mode):
            with pytest.raises(RuntimeError, match="boom"):
                METHODS[name](model, torch.randn(2, 3, 32, 32), 0, layer="0.8")
            assert torch.is_grad_enabled() == grad_mode
        assert hook_state(model) == before
    with pytest.raises(RuntimeError, match="boom"):
        find_target_layer(model, (3, 32, 32))
    assert hook_state(model) == before


def test_train_mode_is_refused_without_touching_the_model() -> None:
    model = gap_cnn().train()
    stats = model[4].running_mean.clone()
    for fn in [*METHODS.values()]:
        with pytest.raises(ValueError, match=r"model\.eval\(\)"):
            fn(model, torch.randn(2, 3, 32, 32), 0)
    with pytest.raises(ValueError, match=r"model\.eval\(\)"):
        find_target_layer(model, (3, 32, 32))
    assert model.training and torch.equal(model[4].running_mean, stats)


def test_concurrent_calls_on_a_shared_model_match_sequential_results() -> None:
    model = gap_cnn()
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    jobs = [
        (grad_cam, torch.tensor([0, 1, 2, 3, 4, 5])),
        (grad_cam, torch.tensor([[5, 4], [3, 2], [1, 0], [0, 0], [2, 2], [1, 5]])),
        (grad_cam_pp, torch.tensor([3, 3, 3, 1, 1, 1])),
        (cam, torch.tensor([2, 0, 1, 5, 4, 3])),
        (saliency, torch.tensor([1, 2, 3, 4, 5, 0])),
    ]
    expected = [fn(model, x, c, layer="8", batch_size=4) for fn, c in jobs]
    with torch.no_grad():
        logits = model(x)
    rounds, errors = 5, []
    barrier = threading.Barrier(len(jobs) + 1)
    results: dict[tuple[int, int], torch.Tensor] = {}

    def worker(idx: int) -> None:
        fn, classes = jobs[idx]
        for rnd in range(rounds):
            barrier.wait()
            results[idx, rnd] = fn(model, x, classes, layer="8", batch_size=4)

    def plain_forward() -> None:  # another thread's ordinary forward must not be hooked
        for _ in range(rounds):
            barrier.wait()
            out = model(x)
            if not out.requires_grad or not torch.allclose(out, logits, atol=1e-6):
                errors.append("plain forward changed")

    def guarded(target) -> None:
        try:
            target()
        except Exception as err:
            errors.append(repr(err))
            barrier.abort()

    threads = [threading.Thread(target=guarded, args=(lambda i=i: worker(i),)) for i in range(5)]
    threads.append(threading.Thread(target=guarded, args=(plain_forward,)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (idx, _), maps in results.items():
        torch.testing.assert_close(maps, expected[idx], atol=1e-6, rtol=0)
    assert len(results) == len(jobs) * rounds
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


# ------------------------------------------------------------------ layer activations


def test_layer_activations_top_channels_by_mean() -> None:
    model = nn.Sequential(nn.Identity(), nn.Conv2d(4, 4, 1), nn.Flatten(), nn.Linear(144, 2))
    model.eval()
    torch.manual_seed(5)
    image = torch.randn(4, 6, 6) + torch.tensor([0.1, 0.5, -0.2, 0.3])[:, None, None]
    acts = layer_activations(model, image, "0", top_n=3)
    means = image.mean((1, 2))
    assert acts.layer == "0"
    assert acts.channels.tolist() == torch.argsort(means, descending=True)[:3].tolist()
    torch.testing.assert_close(acts.means, means[acts.channels])
    assert acts.maps.shape == (3, 6, 6) and acts.maps.dtype == torch.float32
    for k, c in enumerate(acts.channels.tolist()):
        ch = image[c]
        torch.testing.assert_close(acts.maps[k], (ch - ch.min()) / (ch.max() - ch.min()))
    assert layer_activations(model, image[None], "0", top_n=10).channels.numel() == 4


def test_layer_activations_default_layer() -> None:
    model = gap_cnn()
    acts = layer_activations(model, torch.randn(3, 32, 32))
    assert acts.layer == "8" and acts.maps.shape == (8, 8, 8)
    assert acts.means.tolist() == sorted(acts.means.tolist(), reverse=True)


# ------------------------------------------------------------------ overlay


def test_overlay_size_mode_and_alpha() -> None:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    cam_map = torch.rand(7, 7, generator=torch.Generator().manual_seed(0))
    for image in (rgb, rgb.convert("L"), rgb.convert("RGBA")):
        out = overlay(image, cam_map, alpha=0.6, colormap="Viridis")
        assert out.size == image.size and out.mode == "RGB"
        same = overlay(image, cam_map.numpy(), alpha=0.0)
        assert np.array_equal(np.asarray(same), np.asarray(image.convert("RGB")))
    full = np.asarray(overlay(rgb, np.zeros((7, 7)), alpha=1.0))
    assert (full == colormap_lut("Inferno")[0]).all()
    blended = np.asarray(overlay(rgb, np.ones((7, 7)), alpha=0.5)).astype(int)
    expected = (np.asarray(rgb).astype(int) + colormap_lut("Inferno")[255].astype(int)) / 2
    assert np.abs(blended - expected).max() <= 1


def test_overlay_resizes_the_map_bilinearly() -> None:
    image = Image.new("RGB", (40, 20))
    ramp = np.linspace(0, 1, 4, dtype=np.float32)[None].repeat(2, 0)  # left dark, right bright
    out = np.asarray(overlay(image, ramp, alpha=1.0, colormap="gray")).astype(int)
    row = out[10].sum(1)  # plotly's "gray" runs from black to (nearly) white
    assert row[0] == 0 and row[-1] >= 3 * 250
    assert (np.diff(row) >= 0).all() and len(np.unique(row)) > 20  # smooth, not 4 blocks


def test_colormap_lut_and_errors() -> None:
    lut = colormap_lut("Inferno")
    assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert lut[0].tolist() == [0, 0, 4] and lut[-1].tolist() == [252, 255, 164]  # plotly's ends
    with pytest.raises(ValueError, match="colour scale"):
        colormap_lut("NoSuchScale")
    with pytest.raises(ValueError, match="alpha"):
        overlay(Image.new("RGB", (4, 4)), np.zeros((2, 2)), alpha=1.5)
